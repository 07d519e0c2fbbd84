"""Examples for the OpenAPI document, rendered from real values by the wire functions
(so an example can never drift from what the API sends)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Final

from termjobs import wire
from termjobs.jobdef import Job
from termjobs.jobspec import definition_for_create
from termjobs.model import (
    EventType,
    ExitReason,
    JSONObject,
    Run,
    RunEvent,
    RunOutput,
    RunStatus,
    RunTrigger,
)

_AT: Final = dt.datetime(2026, 3, 1, 1, 30, tzinfo=dt.UTC)
_LATER: Final = _AT + dt.timedelta(seconds=2, microseconds=412_000)

JOB_BODY: Final[JSONObject] = {
    "name": "nightly-report",
    "runner_type": "program",
    "runner_config": {"command": "sh", "args": ["-c", "echo report for $(date -u +%F)"]},
    "trigger_type": "cron",
    "trigger_config": {"expression": "30 2 * * *", "timezone": "Europe/Berlin"},
    "timeout_seconds": 600,
    "retry_policy": {"max_attempts": 3, "backoff": "exponential", "initial_delay": "30s"},
}


def run_value(*, finished: bool = False) -> Run:
    """A manual run of the example job, queued or finished."""
    run = Run(
        id="run_Qk3v-9ZbX_1a",
        job_id="job_7rTq0LmZ2bXc",
        attempt=1,
        trigger=RunTrigger.MANUAL,
        scheduled_for=_AT,
        status=RunStatus.QUEUED,
        created_at=_AT,
        updated_at=_AT,
    )
    if not finished:
        return run
    return dataclasses.replace(
        run,
        status=RunStatus.SUCCEEDED,
        worker_id="worker_Xb2kq9LmT0aZ",
        started_at=_AT,
        finished_at=_LATER,
        exit_reason=ExitReason.NATURAL_COMPLETION,
        output=RunOutput(exit_code=0, stdout="report for 2026-03-01\n"),
        updated_at=_LATER,
    )


def job_example() -> JSONObject:
    """The example job as the API shows it."""
    spec = definition_for_create(JOB_BODY)
    job = Job(
        id="job_7rTq0LmZ2bXc",
        spec=spec,
        next_run_at=dt.datetime(2026, 3, 2, 1, 30, tzinfo=dt.UTC),
        last_fire_at=None,
        created_at=_AT,
        updated_at=_AT,
    )
    return wire.job_json(job, run_value(finished=True))


def run_example(*, finished: bool = False) -> JSONObject:
    return wire.run_json(run_value(finished=finished))


def event_example() -> JSONObject:
    event = RunEvent(
        id=42,
        run_id="run_Qk3v-9ZbX_1a",
        job_id="job_7rTq0LmZ2bXc",
        event_type=EventType.OUTPUT,
        message=None,
        data={"stream": "stdout", "text": "report for 2026-03-01\n"},
        created_at=_LATER,
    )
    return wire.event_json(event)
