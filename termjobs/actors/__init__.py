"""The actor runtime: a supervisor, one actor per job, run lifecycles and the event hub."""
