"""Build benchmark databases directly (fast): many jobs without going through the API."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from termjobs.jobdef import Job
from termjobs.jobspec import definition_for_create
from termjobs.model import JSONObject, JSONValue, new_job_id
from termjobs.schedule import initial_next_run
from termjobs.storage.database import open_storage
from termjobs.storage.engine import resolve_url


def cron_jobs(prefix: str, count: int, expression: str, now: dt.datetime, **fields: JSONValue) -> list[Job]:
    """``count`` cron jobs running ``true`` on ``expression`` (UTC)."""
    trigger: JSONObject = {"expression": expression, "timezone": "UTC"}
    return _jobs(prefix, count, "cron", trigger, now, fields)


def once_jobs(
    prefix: str, count: int, run_at: dt.datetime, now: dt.datetime, **fields: JSONValue
) -> list[Job]:
    """``count`` jobs running ``true`` once, at ``run_at``."""
    trigger: JSONObject = {"run_at": run_at.isoformat().replace("+00:00", "Z")}
    return _jobs(prefix, count, "once", trigger, now, fields)


def _jobs(
    prefix: str, count: int, trigger_type: str, trigger: JSONObject, now: dt.datetime, fields: JSONObject
) -> list[Job]:
    body: JSONObject = {
        "name": "x",
        "runner_type": "program",
        "runner_config": {"command": "true"},
        "trigger_type": trigger_type,
        "trigger_config": trigger,
        **fields,
    }
    spec = definition_for_create(body)
    next_run = initial_next_run(spec.parsed.trigger, enabled=True, now=now, last_fire_at=None)
    return [
        Job(
            id=new_job_id(),
            spec=dataclasses.replace(spec, name=f"{prefix}-{i}"),
            next_run_at=next_run,
            last_fire_at=None,
            created_at=now,
            updated_at=now,
        )
        for i in range(count)
    ]


async def write_jobs(db: str, batches: Sequence[list[Job]]) -> None:
    """Create the schema in ``db`` and insert the jobs, 5,000 per transaction."""
    async with open_storage(resolve_url(db)) as storage:
        for batch in batches:
            for start in range(0, len(batch), 5000):
                await storage.import_jobs(batch[start : start + 5000])
