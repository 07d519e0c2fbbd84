"""JSON shapes of jobs, runs and events, with the reference system's omission rules.

Keys are the value types' field names, in their order (``termjobs.jobdef``,
``termjobs.model``). Fields documented as "omitted when empty" are left out (not
``null``) when their value is empty, zero, false or absent. Timestamps are RFC 3339 UTC
(``format_ts``); enums are their values.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Sequence
from typing import Any, Final

from termjobs.fields import enum_type, fields_of, is_timestamp
from termjobs.jobdef import Job, JobDefinition
from termjobs.model import (
    PAYLOAD_FIELDS,
    JSONObject,
    JSONValue,
    Run,
    RunEvent,
    RunOutput,
    Session,
    SessionMessage,
    format_ts,
    parse_ts,
)
from termjobs.notify import masked

#: Job fields left out when they are absent (every other one is always present).
SPEC_OPTIONAL: Final = frozenset({"schedule_timezone", "retry_policy", "labels", "notify"})
#: Run fields always present; the others are omitted when empty.
RUN_REQUIRED: Final = frozenset({"id", "job_id", "attempt", "trigger", "scheduled_for", "status"})
#: Omitted only when absent (a zero exit code is shown).
_KEEP_ZERO: Final = frozenset({"exit_code"})

Convert = Callable[[Any], Any] | None


def _converter(owner: type, annotation: object, name: str = "") -> Convert:
    if name == "notify":
        return masked  # webhook secrets are write-only
    if enum_type(owner, annotation) is not None:
        return _enum_value
    return format_ts if is_timestamp(annotation) else None


def _enum_value(value: enum.Enum) -> Any:
    return value.value


# Rendering plans, computed once: (field, always shown, conversion). Lists render
# thousands of these per second, so the per-field work is kept to a lookup.
_SPEC_PLAN: Final = [
    (f.name, f.name not in SPEC_OPTIONAL, _converter(JobDefinition, f.type, f.name))
    for f in fields_of(JobDefinition)
]
_RUN_PLAN: Final = [
    (f.name, f.name in RUN_REQUIRED, _converter(Run, f.type))
    for f in fields_of(Run)
    if f.name not in ("output", "created_at", "updated_at")
]
_OUTPUT_PLAN: Final = [(f.name, f.name in _KEEP_ZERO) for f in fields_of(RunOutput)]
_SUMMARY_OUTPUT_PLAN: Final = [(name, keep) for name, keep in _OUTPUT_PLAN if name not in PAYLOAD_FIELDS]


def dumps(value: JSONValue) -> str:
    """Compact JSON (key order kept, non-ASCII kept) plus the trailing newline."""
    return compact(value) + "\n"


def compact(value: JSONValue) -> str:
    """Compact JSON (key order kept, non-ASCII kept)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def job_json(job: Job, last_run: Run | None = None) -> JSONObject:
    """The job object of the API."""
    out: JSONObject = {"id": job.id}
    spec = job.spec
    for name, always, convert in _SPEC_PLAN:
        value = getattr(spec, name)
        if always or (value is not None and value != ""):
            out[name] = value if convert is None else convert(value)
    if job.next_run_at is not None:
        out["next_run_at"] = format_ts(job.next_run_at)
    if last_run is not None:
        out["last_run"] = run_json(last_run, full=False)
    out["created_at"] = format_ts(job.created_at)
    out["updated_at"] = format_ts(job.updated_at)
    return out


def run_json(run: Run, *, full: bool = True) -> JSONObject:
    """The run object of the API; a *summary* (``full=False``) has no output payloads."""
    out: JSONObject = {}
    for name, always, convert in _RUN_PLAN:
        value = getattr(run, name)
        if always or value:
            out[name] = value if convert is None else convert(value)
    output = run.output
    for name, keep_zero in _OUTPUT_PLAN if full else _SUMMARY_OUTPUT_PLAN:
        value = getattr(output, name)
        if value or (keep_zero and value is not None):
            out[name] = value
    out["created_at"] = format_ts(run.created_at)
    out["updated_at"] = format_ts(run.updated_at)
    return out


def run_from_json(obj: JSONObject) -> Run:
    """The run :func:`run_json` rendered (a full one): how a cluster's server passes
    on the run another server answered with."""
    own = {name: _loaded(Run, f.type, obj[name]) for f in fields_of(Run) if (name := f.name) in obj}
    output = {
        name: _loaded(RunOutput, f.type, obj[name]) for f in fields_of(RunOutput) if (name := f.name) in obj
    }
    return Run(**own, output=RunOutput(**output))


def _loaded(owner: type, annotation: object, value: Any) -> Any:
    kind = enum_type(owner, annotation)
    if kind is not None:
        return kind(value)
    if is_timestamp(annotation) and isinstance(value, str):
        return parse_ts(value)
    return value


def event_json(event: RunEvent, *, with_job: bool = False) -> JSONObject:
    """The run event object of the API (``with_job`` adds ``job_id``, for streams)."""
    out: JSONObject = {"id": event.id, "run_id": event.run_id}
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
    items: Sequence[JSONObject], *, total: int, offset: int, limit: int, **extra: JSONValue
) -> JSONObject:
    """``{"object":"list","data":[...],"total":N,"offset":O,"limit":L}`` (+ extras)."""
    data: list[JSONValue] = [*items]
    return {"object": "list", "data": data, "total": total, "offset": offset, "limit": limit, **extra}


def list_text(items: Sequence[str], *, total: int, offset: int, limit: int) -> str:
    """:func:`dumps` of :func:`list_envelope`, its items already :func:`compact` JSON."""
    tail = dumps({"total": total, "offset": offset, "limit": limit})
    return '{"object":"list","data":[' + ",".join(items) + "]," + tail[1:]


def error_json(message: str, error_type: str) -> JSONObject:
    """``{"error":{"message":...,"type":...}}``."""
    return {"error": {"message": message, "type": error_type}}


def session_json(session: Session, messages: Sequence[SessionMessage]) -> JSONObject:
    """An LLM session with its transcript: each message is the stored message
    (``role``, ``text``, tool calls, usage...) with its ``id``, ``run_id`` and time."""
    out: JSONObject = {"id": session.id}
    for key in ("job_id", "name"):
        value = getattr(session, key)
        if value:
            out[key] = value
    out.update(
        agent=session.agent,
        provider=session.provider,
        model=session.model,
        turn_count=session.turn_count,
        input_tokens=session.input_tokens,
        output_tokens=session.output_tokens,
        created_at=format_ts(session.created_at),
        updated_at=format_ts(session.updated_at),
    )
    items: list[JSONValue] = []
    for message in messages:
        item: JSONObject = {"id": message.id}
        if message.run_id:
            item["run_id"] = message.run_id
        if isinstance(message.content, dict):
            item.update(message.content)
        item["created_at"] = format_ts(message.created_at)
        items.append(item)
    out["messages"] = items
    return out
