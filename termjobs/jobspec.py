"""Job definitions as clients send them: parsing, defaults, merging and validation.

pydantic checks the shape (types, unknown fields); the rules of each field are checked
on the complete, merged definition so create and PATCH share one code path. Every
failure is an :class:`~termjobs.errors.InvalidRequest` whose message names the field
and says what to fix. The same models back ``term-llm jobs validate``.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from typing import Annotated, Any, Final, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from termjobs.errors import InvalidRequest
from termjobs.jsontypes import json_type_name, reject_constant
from termjobs.model import (
    ConcurrencyPolicy,
    Job,
    JSONValue,
    MisfirePolicy,
    RunnerType,
    TriggerType,
)
from termjobs.retry import parse_retry_policy
from termjobs.runners.config import validate_runner_config
from termjobs.schedule import Trigger, TriggerError, parse_trigger

DEFAULT_TIMEOUT_SECONDS: Final = 300
DEFAULT_MISFIRE_GRACE_SECONDS: Final = 60
MAX_NAME_LENGTH: Final = 200

# Read-only fields a client may send back after a GET (edit-and-PATCH workflow);
# accepted and ignored.
READ_ONLY_FIELDS: Final = frozenset({"id", "created_at", "updated_at", "next_run_at", "last_run"})

_Json = Annotated[Any, Field(default=None)]


class JobInput(BaseModel):
    """The JSON body of ``POST /v2/jobs`` and ``PATCH /v2/jobs/{ref}``: shapes only."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = None
    enabled: StrictBool | None = None
    runner_type: StrictStr | None = None
    runner_config: _Json
    trigger_type: StrictStr | None = None
    trigger_config: _Json
    schedule_timezone: StrictStr | None = None
    concurrency_policy: StrictStr | None = None
    max_concurrent_runs: StrictInt | None = None
    retry_policy: _Json
    timeout_seconds: StrictInt | None = None
    misfire_policy: StrictStr | None = None
    misfire_grace_seconds: StrictInt | None = None
    labels: _Json
    id: _Json
    created_at: _Json
    updated_at: _Json
    next_run_at: _Json
    last_run: _Json


@dataclass(frozen=True, slots=True, kw_only=True)
class JobDefinition:
    """Everything a user defines about a job, validated and with defaults applied."""

    name: str
    enabled: bool = True
    runner_type: RunnerType
    runner_config: JSONValue
    trigger_type: TriggerType
    trigger_config: JSONValue
    schedule_timezone: str | None = None
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    max_concurrent_runs: int = 1
    retry_policy: JSONValue | None = None
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    misfire_policy: MisfirePolicy = MisfirePolicy.SKIP
    misfire_grace_seconds: int = DEFAULT_MISFIRE_GRACE_SECONDS
    labels: JSONValue | None = None


@dataclass(frozen=True, slots=True)
class ValidJob:
    """A validated definition together with its parsed trigger."""

    definition: JobDefinition
    trigger: Trigger


# ------------------------------------------------------------------------ parsing


def decode_body(raw: bytes) -> dict[str, JSONValue]:
    """Decode a request body that must hold exactly one JSON object."""
    if not raw.strip():
        raise InvalidRequest("request body is empty: send a JSON object describing the job")
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=reject_constant)
        # Strings must survive storage: a lone surrogate (e.g. "\\ud800") cannot.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise InvalidRequest("request body must be valid UTF-8 JSON (no lone surrogate escapes)") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {json_type_name(value)}")
    return value


_TYPE_HINTS: Final = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
}


def parse_input(body: dict[str, JSONValue]) -> JobInput:
    """Check the shape of a job body; the first problem becomes the error message."""
    try:
        return JobInput.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_context=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            raise InvalidRequest(f"unknown field {field!r}; see the job fields in the README") from None
        hint = _TYPE_HINTS.get(first["type"], first["msg"])
        got = json_type_name(body.get(str(first["loc"][0])))
        raise InvalidRequest(f"{field} {hint} (got {got})") from None


_E = TypeVar("_E", RunnerType, TriggerType, ConcurrencyPolicy, MisfirePolicy)


def _choice(kind: type[_E], field: str, raw: str) -> _E:
    try:
        return kind(raw.strip())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidRequest(f"{field} must be one of: {allowed} (got {raw!r})") from None


# ------------------------------------------------------------------ create / patch


def definition_for_create(body: dict[str, JSONValue]) -> ValidJob:
    """Validate a create request body and apply defaults."""
    data = parse_input(body)
    if data.name is None or not data.name.strip():
        raise InvalidRequest("name is required")
    if data.runner_type is None or not data.runner_type.strip():
        raise InvalidRequest("runner_type is required (one of: llm, program)")
    if data.trigger_type is None or not data.trigger_type.strip():
        raise InvalidRequest("trigger_type is required (one of: manual, once, cron)")
    base = JobDefinition(
        name=data.name,
        runner_type=_choice(RunnerType, "runner_type", data.runner_type),
        runner_config={},
        trigger_type=_choice(TriggerType, "trigger_type", data.trigger_type),
        trigger_config={},
    )
    return validate(_merge(base, data))


def definition_for_patch(job: Job, body: dict[str, JSONValue]) -> ValidJob:
    """Merge a PATCH body into ``job``'s definition and validate the result.

    Absent fields keep their value; ``null`` resets a field to its default, which for
    ``schedule_timezone``, ``retry_policy`` and ``labels`` means removing it. ``name``,
    ``runner_type``, ``trigger_type`` and ``enabled`` cannot be null.
    """
    data = parse_input(body)
    for key in ("name", "runner_type", "trigger_type", "enabled"):
        if key in data.model_fields_set and getattr(data, key) is None:
            raise InvalidRequest(f"{key} cannot be null")
    current = definition_of(job)
    if data.runner_type is not None:
        current = replace(current, runner_type=_choice(RunnerType, "runner_type", data.runner_type))
    if data.trigger_type is not None:
        current = replace(current, trigger_type=_choice(TriggerType, "trigger_type", data.trigger_type))
    if data.name is not None and not data.name.strip():
        raise InvalidRequest("name cannot be blank")
    return validate(_merge(current, data))


def definition_of(job: Job) -> JobDefinition:
    """The user-defined part of a stored job."""
    return JobDefinition(
        name=job.name,
        enabled=job.enabled,
        runner_type=job.runner_type,
        runner_config=job.runner_config,
        trigger_type=job.trigger_type,
        trigger_config=job.trigger_config,
        schedule_timezone=job.schedule_timezone,
        concurrency_policy=job.concurrency_policy,
        max_concurrent_runs=job.max_concurrent_runs,
        retry_policy=job.retry_policy,
        timeout_seconds=job.timeout_seconds,
        misfire_policy=job.misfire_policy,
        misfire_grace_seconds=job.misfire_grace_seconds,
        labels=job.labels,
    )


_DEFAULTS: Final = JobDefinition(
    name="",
    runner_type=RunnerType.PROGRAM,
    runner_config={},
    trigger_type=TriggerType.MANUAL,
    trigger_config={},
)


def _merge(base: JobDefinition, data: JobInput) -> JobDefinition:
    changes: dict[str, Any] = {}
    for key in data.model_fields_set - READ_ONLY_FIELDS - {"runner_type", "trigger_type"}:
        value = getattr(data, key)
        if value is None:
            changes[key] = getattr(_DEFAULTS, key)
        elif key == "concurrency_policy":
            changes[key] = _choice(ConcurrencyPolicy, key, value)
        elif key == "misfire_policy":
            changes[key] = _choice(MisfirePolicy, key, value)
        elif key == "schedule_timezone":
            changes[key] = value.strip() or None
        else:
            changes[key] = value
    return replace(base, **changes)


# --------------------------------------------------------------------- validation


def validate(defn: JobDefinition) -> ValidJob:
    """Check every rule on a complete definition; return it with its parsed trigger."""
    _check_name(defn.name)
    _check_range("max_concurrent_runs", defn.max_concurrent_runs, 1, 1000)
    _check_range("timeout_seconds", defn.timeout_seconds, 1, 30 * 24 * 3600)
    _check_range("misfire_grace_seconds", defn.misfire_grace_seconds, 0, 7 * 24 * 3600)
    for check, value in (
        (lambda v: validate_runner_config(defn.runner_type, v), defn.runner_config),
        (parse_retry_policy, defn.retry_policy),
    ):
        try:
            check(value)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
    try:
        trigger = parse_trigger(defn.trigger_type, defn.trigger_config, defn.schedule_timezone)
    except TriggerError as exc:
        raise InvalidRequest(str(exc)) from None
    return ValidJob(definition=defn, trigger=trigger)


def _check_name(name: str) -> None:
    if not name.strip():
        raise InvalidRequest("name is required")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidRequest(f"name must be at most {MAX_NAME_LENGTH} characters")
    if "/" in name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidRequest("name must not contain '/' or control characters")


def _check_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidRequest(f"{field} must be a whole number from {low} to {high} (got {value})")


def build_job(
    defn: JobDefinition,
    *,
    job_id: str,
    created_at: dt.datetime,
    updated_at: dt.datetime,
    next_run_at: dt.datetime | None,
    last_fire_at: dt.datetime | None,
) -> Job:
    """A stored job value from a validated definition."""
    return Job(
        id=job_id,
        name=defn.name,
        enabled=defn.enabled,
        runner_type=defn.runner_type,
        runner_config=defn.runner_config,
        trigger_type=defn.trigger_type,
        trigger_config=defn.trigger_config,
        schedule_timezone=defn.schedule_timezone,
        concurrency_policy=defn.concurrency_policy,
        max_concurrent_runs=defn.max_concurrent_runs,
        retry_policy=defn.retry_policy,
        timeout_seconds=defn.timeout_seconds,
        misfire_policy=defn.misfire_policy,
        misfire_grace_seconds=defn.misfire_grace_seconds,
        labels=defn.labels,
        next_run_at=next_run_at,
        last_fire_at=last_fire_at,
        created_at=created_at,
        updated_at=updated_at,
    )


def schedule_changed(old: JobDefinition, new: JobDefinition) -> bool:
    """Whether an edit touches what decides ``next_run_at`` (DESIGN 4.7)."""
    fields = ("trigger_type", "trigger_config", "schedule_timezone", "enabled")
    return any(getattr(old, f) != getattr(new, f) for f in fields)
