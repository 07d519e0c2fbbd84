"""Runners execute one run: ``program`` (an OS process) and ``llm`` (an agent)."""
