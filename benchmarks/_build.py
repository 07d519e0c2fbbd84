"""Build benchmark databases directly (fast): many jobs without going through the API."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from termjobs.jobspec import build_job, definition_for_create
from termjobs.model import Job, new_job_id
from termjobs.schedule import initial_next_run
from termjobs.storage import store
from termjobs.storage.engine import resolve_url
from termjobs.storage.gateway import open_gateway


def cron_jobs(prefix: str, count: int, expression: str, now: dt.datetime, **fields: object) -> list[Job]:
    """``count`` cron jobs running ``true`` on ``expression`` (UTC)."""
    body = {
        "name": "x",
        "runner_type": "program",
        "runner_config": {"command": "true"},
        "trigger_type": "cron",
        "trigger_config": {"expression": expression, "timezone": "UTC"},
        **fields,
    }
    valid = definition_for_create(body)
    next_run = initial_next_run(valid.trigger, enabled=True, now=now, last_fire_at=None)
    return [
        build_job(
            dataclasses.replace(valid.definition, name=f"{prefix}-{i}"),
            job_id=new_job_id(),
            created_at=now,
            updated_at=now,
            next_run_at=next_run,
            last_fire_at=None,
        )
        for i in range(count)
    ]


async def write_jobs(db: str, batches: Sequence[list[Job]]) -> None:
    """Create the schema in ``db`` and insert the jobs, 5,000 per transaction."""
    async with open_gateway(resolve_url(db)) as gateway:
        for batch in batches:
            for start in range(0, len(batch), 5000):
                chunk = batch[start : start + 5000]
                await gateway.write(lambda tx, chunk=chunk: store.insert_jobs(tx, chunk))
