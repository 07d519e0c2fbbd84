"""JSON shapes of jobs, runs and events, with the reference system's omission rules.

Fields documented as "omitted when empty" are left out (not ``null``) when their value
is empty, zero, false or absent. Timestamps are RFC 3339 UTC (``format_ts``).
"""

from __future__ import annotations

import json
from typing import Any

from termjobs.model import Job, JSONValue, Run, RunEvent, format_ts


def dumps(value: JSONValue) -> str:
    """Compact JSON (key order kept, non-ASCII kept) plus the trailing newline."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n"


def job_json(job: Job, *, last_run: Run | None = None) -> dict[str, Any]:
    """The job object of the API."""
    out: dict[str, Any] = {
        "id": job.id,
        "name": job.name,
        "enabled": job.enabled,
        "runner_type": job.runner_type.value,
        "runner_config": job.runner_config,
        "trigger_type": job.trigger_type.value,
        "trigger_config": job.trigger_config,
    }
    if job.schedule_timezone:
        out["schedule_timezone"] = job.schedule_timezone
    out["concurrency_policy"] = job.concurrency_policy.value
    out["max_concurrent_runs"] = job.max_concurrent_runs
    if job.retry_policy is not None:
        out["retry_policy"] = job.retry_policy
    out["timeout_seconds"] = job.timeout_seconds
    out["misfire_policy"] = job.misfire_policy.value
    out["misfire_grace_seconds"] = job.misfire_grace_seconds
    if job.labels is not None:
        out["labels"] = job.labels
    if job.next_run_at is not None:
        out["next_run_at"] = format_ts(job.next_run_at)
    if last_run is not None:
        out["last_run"] = run_json(last_run, full=False)
    out["created_at"] = format_ts(job.created_at)
    out["updated_at"] = format_ts(job.updated_at)
    return out


def run_json(run: Run, *, full: bool = True) -> dict[str, Any]:
    """The run object of the API; a *summary* (``full=False``) has no output payloads."""
    out: dict[str, Any] = {
        "id": run.id,
        "job_id": run.job_id,
        "attempt": run.attempt,
        "trigger": run.trigger.value,
        "scheduled_for": format_ts(run.scheduled_for),
        "status": run.status.value,
    }
    optional: list[tuple[str, Any]] = [
        ("worker_id", run.worker_id),
        ("session_id", run.session_id),
        ("started_at", run.started_at and format_ts(run.started_at)),
        ("finished_at", run.finished_at and format_ts(run.finished_at)),
    ]
    for key, value in optional:
        if value:
            out[key] = value
    if run.exit_code is not None:
        out["exit_code"] = run.exit_code
    if run.error:
        out["error"] = run.error
    if full:
        for key in ("stdout", "stderr", "thinking", "response"):
            value = getattr(run, key)
            if value:
                out[key] = value
    if run.exit_reason:
        out["exit_reason"] = run.exit_reason.value
    if run.truncated:
        out["truncated"] = True
    for key in ("turn_count", "input_tokens", "output_tokens"):
        if getattr(run, key):
            out[key] = getattr(run, key)
    if run.retry_of:
        out["retry_of"] = run.retry_of
    out["created_at"] = format_ts(run.created_at)
    out["updated_at"] = format_ts(run.updated_at)
    return out


def event_json(event: RunEvent, *, with_job: bool = False) -> dict[str, Any]:
    """The run event object of the API (``with_job`` adds ``job_id``, for streams)."""
    out: dict[str, Any] = {"id": event.id, "run_id": event.run_id}
    if with_job:
        out["job_id"] = event.job_id
    out["event_type"] = event.event_type.value
    if event.message:
        out["message"] = event.message
    if event.data is not None:
        out["data"] = event.data
    out["created_at"] = format_ts(event.created_at)
    return out


def list_envelope(
    items: list[dict[str, Any]], *, total: int, offset: int, limit: int, **extra: Any
) -> dict[str, Any]:
    """``{"object":"list","data":[...],"total":N,"offset":O,"limit":L}`` (+ extras)."""
    return {"object": "list", "data": items, "total": total, "offset": offset, "limit": limit, **extra}


def error_json(message: str, error_type: str) -> dict[str, Any]:
    """``{"error":{"message":...,"type":...}}``."""
    return {"error": {"message": message, "type": error_type}}
