"""The REST API (quart-trio): ``/v2/jobs``, ``/v2/runs`` and ``/healthz``."""
