"""Jobs for the browser tests, created through the API."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from tests.browser.server import Dashboard


def create_job(dashboard: Dashboard, name: str, script: str, **fields: Any) -> dict[str, Any]:
    """A manual program job running ``script`` with /bin/sh."""
    body: dict[str, Any] = {
        "name": name,
        "runner_type": "program",
        "runner_config": {"command": script, "shell": True},
        "trigger_type": "manual",
        **fields,
    }
    with dashboard.api() as api:
        reply = api.post("/v2/jobs", json=body)
    assert reply.status_code == 201, reply.text
    job: dict[str, Any] = reply.json()
    return job


def trigger(dashboard: Dashboard, job: dict[str, Any]) -> dict[str, Any]:
    with dashboard.api() as api:
        reply = api.post(f"/v2/jobs/{job['id']}/trigger")
    assert reply.status_code == 202, reply.text
    run: dict[str, Any] = reply.json()
    return run


def wait_for(path: Path) -> str:
    """Shell: block until ``path`` exists (the test creates it when it is ready)."""
    return f"while [ ! -e {shlex.quote(str(path))} ]; do sleep 0.05; done"
