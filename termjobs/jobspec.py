"""Job definitions as clients send them: parsing, defaults, merging and validation.

pydantic checks the shape (types, unknown fields); the rules of each field are checked
on the complete, merged definition so create and PATCH share one code path. Every
failure is an :class:`~termjobs.errors.InvalidRequest` whose message names the field
and says what to fix. The same models back ``term-llm jobs validate``.

A PATCH body becomes a :class:`JobPatch` (shape, types and choices checked) where the
request arrives; the job's actor merges it into the current definition and checks the
rules on the result.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Annotated, Any, Final, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr
from pydantic.config import JsonDict

from termjobs.errors import InvalidRequest
from termjobs.jobdef import JobDefinition
from termjobs.jsontypes import (
    JSONLimitError,
    bounded_int,
    find_nul,
    finite_float,
    json_type_name,
    reject_constant,
)
from termjobs.model import ConcurrencyPolicy, JSONObject, MisfirePolicy, RunnerType, TriggerType
from termjobs.notify import keep_secrets
from termjobs.runners.config import PROTECTED_ENV
from termjobs.schedule import Trigger, TriggerError, parse_trigger

MAX_NAME_LENGTH: Final = 200
MAX_RUNS_LIMIT: Final = 1000
MAX_TIMEOUT_SECONDS: Final = 30 * 24 * 3600
MAX_MISFIRE_GRACE: Final = 7 * 24 * 3600
MAX_PREVIEW_COUNT: Final = 50

# Read-only fields a client may send back after a GET (edit-and-PATCH workflow);
# accepted and ignored.
READ_ONLY_FIELDS: Final = frozenset({"id", "created_at", "updated_at", "next_run_at", "last_run"})

_Json = Annotated[Any, Field(default=None)]
_Object = Annotated[Any, Field(default=None, json_schema_extra={"type": "object"})]


def _enum(kind: type[enum.Enum]) -> JsonDict:
    return {"enum": [member.value for member in kind]}


def _range(low: int, high: int) -> JsonDict:
    return {"minimum": low, "maximum": high}


# What the rules below (``validate``) accept, stated for the OpenAPI document; the
# rules themselves are checked on the merged definition, with their own messages.
_NAME_DOC: Final[JsonDict] = {
    "minLength": 1,
    "maxLength": MAX_NAME_LENGTH,
    "pattern": r"^[^/\x00-\x1f\x7f]*\S[^/\x00-\x1f\x7f]*$",
}
_RUNNER_DOC: Final = _enum(RunnerType)
_TRIGGER_DOC: Final = _enum(TriggerType)


class JobInput(BaseModel):
    """The fields of a job body, shapes only (the rules come after the merge)."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = Field(default=None, json_schema_extra=_NAME_DOC)
    enabled: StrictBool | None = None
    runner_type: StrictStr | None = Field(default=None, json_schema_extra=_RUNNER_DOC)
    runner_config: _Object
    trigger_type: StrictStr | None = Field(default=None, json_schema_extra=_TRIGGER_DOC)
    trigger_config: _Object
    schedule_timezone: StrictStr | None = Field(default=None, description="IANA zone, e.g. Europe/Berlin")
    concurrency_policy: StrictStr | None = Field(default=None, json_schema_extra=_enum(ConcurrencyPolicy))
    max_concurrent_runs: StrictInt | None = Field(default=None, json_schema_extra=_range(1, MAX_RUNS_LIMIT))
    retry_policy: _Object
    timeout_seconds: StrictInt | None = Field(default=None, json_schema_extra=_range(1, MAX_TIMEOUT_SECONDS))
    misfire_policy: StrictStr | None = Field(default=None, json_schema_extra=_enum(MisfirePolicy))
    misfire_grace_seconds: StrictInt | None = Field(
        default=None, json_schema_extra=_range(0, MAX_MISFIRE_GRACE)
    )
    labels: _Json
    notify: Annotated[
        Any,
        Field(
            default=None,
            description="completion webhooks: [{url, on: [statuses], secret: whsec_...}]",
            json_schema_extra={"type": "array", "items": {"type": "object", "required": ["url"]}},
        ),
    ]
    id: _Json
    created_at: _Json
    updated_at: _Json
    next_run_at: _Json
    last_run: _Json


class JobCreate(JobInput):
    """The body of ``POST /v2/jobs``."""

    name: StrictStr = Field(json_schema_extra=_NAME_DOC)
    runner_type: StrictStr = Field(json_schema_extra=_RUNNER_DOC)
    trigger_type: StrictStr = Field(json_schema_extra=_TRIGGER_DOC)


_NOT_NULLABLE: Final = ("name", "enabled", "runner_type", "trigger_type")


def _not_nullable(schema: JsonDict) -> None:
    """In the PATCH body's schema, these fields may be absent but never null."""
    properties = schema.get("properties")
    assert isinstance(properties, dict)
    for name in _NOT_NULLABLE:
        prop = properties[name]
        assert isinstance(prop, dict) and isinstance(prop.get("anyOf"), list)
        options = [option for option in prop.pop("anyOf") if option != {"type": "null"}]  # type: ignore[union-attr]
        prop.pop("default", None)
        prop.update(options[0])  # type: ignore[arg-type]


class JobUpdate(JobInput):
    """The body of ``PATCH /v2/jobs/{ref}``: absent fields keep their value, ``null``
    resets one to its default, except for ``name``, ``enabled``, ``runner_type`` and
    ``trigger_type``, which cannot be null."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_not_nullable)


@dataclass(frozen=True, slots=True)
class JobPatch:
    """A checked PATCH body: the definition fields it sets, with typed values (``None``
    resets a field to its default). Build one with :func:`parse_patch`."""

    changes: Mapping[str, Any]
    #: the body it was parsed from (what a cluster sends to the job's owner)
    source: JSONObject = field(default_factory=dict)

    @classmethod
    def enabled(cls, value: bool) -> JobPatch:
        """Pause (``False``) or resume (``True``)."""
        return cls(MappingProxyType({"enabled": value}), {"enabled": value})


# ------------------------------------------------------------------------ parsing


def decode_body(raw: bytes) -> JSONObject:
    """Decode a request body that must hold exactly one JSON object.

    Every malformed body is an :class:`InvalidRequest` (400) naming the problem: bad
    UTF-8 or JSON, nesting too deep, numbers too long or out of range, NUL characters.
    """
    if not raw.strip():
        raise InvalidRequest("request body is empty: send a JSON object describing the job")
    try:
        value = json.loads(
            raw.decode("utf-8"),
            parse_constant=reject_constant,
            parse_int=bounded_int,
            parse_float=finite_float,
        )
        # Strings must survive storage: a lone surrogate (e.g. "\\ud800") cannot.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise InvalidRequest("request body must be valid UTF-8 JSON (no lone surrogate escapes)") from None
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except JSONLimitError as exc:
        raise InvalidRequest(f"request body: {exc}") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {json_type_name(value)}")
    nul = find_nul(value)
    if nul is not None:
        raise InvalidRequest(f"{nul} contains a NUL character (\\u0000), which cannot be stored")
    return value


_TYPE_HINTS: Final = {
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
}
_REQUIRED: Final = {
    "name": "name is required",
    "runner_type": "runner_type is required (one of: llm, program)",
    "trigger_type": "trigger_type is required (one of: manual, once, cron)",
}
M = TypeVar("M", bound=BaseModel)


def parse_input(body: JSONObject, model: type[M]) -> M:
    """Check the shape of a job body (or of a part of one, such as a schedule preview);
    the first problem becomes the error message."""
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_context=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            raise InvalidRequest(f"unknown field {field!r}; see the job fields in the README") from None
        if first["type"] == "missing":
            raise InvalidRequest(_REQUIRED.get(field, f"{field} is required")) from None
        if body.get(field, "") is None and field in _REQUIRED:
            raise InvalidRequest(_REQUIRED[field]) from None
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


def definition_for_create(body: JSONObject) -> JobDefinition:
    """Validate a create request body and apply defaults."""
    data = parse_input(body, JobCreate)
    for key in ("name", "runner_type", "trigger_type"):
        if not getattr(data, key).strip():
            raise InvalidRequest(_REQUIRED[key])
    base = JobDefinition(
        name=data.name,
        runner_type=_choice(RunnerType, "runner_type", data.runner_type),
        runner_config={},
        trigger_type=_choice(TriggerType, "trigger_type", data.trigger_type),
        trigger_config={},
    )
    return validate(replace(base, **_changes(data)))


def parse_patch(body: JSONObject) -> JobPatch:
    """Check a PATCH body's shape. Absent fields keep their value; ``null`` resets a
    field to its default, which for ``schedule_timezone``, ``retry_policy`` and
    ``labels`` means removing it. ``name``, ``runner_type``, ``trigger_type`` and
    ``enabled`` cannot be null."""
    data = parse_input(body, JobUpdate)
    for key in _NOT_NULLABLE:
        if key in data.model_fields_set and getattr(data, key) is None:
            raise InvalidRequest(f"{key} cannot be null")
    if data.name is not None and not data.name.strip():
        raise InvalidRequest("name cannot be blank")
    changes = _changes(data)
    if data.runner_type is not None:
        changes["runner_type"] = _choice(RunnerType, "runner_type", data.runner_type)
    if data.trigger_type is not None:
        changes["trigger_type"] = _choice(TriggerType, "trigger_type", data.trigger_type)
    return JobPatch(MappingProxyType(changes), body)


def apply_patch(current: JobDefinition, patch: JobPatch) -> JobDefinition:
    """``current`` with ``patch`` applied, validated as a whole. A webhook secret sent
    back masked (as a GET showed it) keeps its stored value."""
    changes = dict(patch.changes)
    if "notify" in changes:
        changes["notify"] = keep_secrets(changes["notify"], current.notify)
    return validate(replace(current, **changes))


_DEFAULTS: Final = JobDefinition(
    name="",
    runner_type=RunnerType.PROGRAM,
    runner_config={},
    trigger_type=TriggerType.MANUAL,
    trigger_config={},
)


def _changes(data: JobInput) -> dict[str, Any]:
    """The definition fields a body sets, typed (enums parsed, blank zone = none)."""
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
    return changes


# --------------------------------------------------------------------- validation


def validate(defn: JobDefinition) -> JobDefinition:
    """Check every rule on a complete definition; the definition, if it passes."""
    _check_name(defn.name)
    _check_range("max_concurrent_runs", defn.max_concurrent_runs, 1, MAX_RUNS_LIMIT)
    _check_range("timeout_seconds", defn.timeout_seconds, 1, MAX_TIMEOUT_SECONDS)
    _check_range("misfire_grace_seconds", defn.misfire_grace_seconds, 0, MAX_MISFIRE_GRACE)
    if defn.parsed.problem is not None:
        raise InvalidRequest(defn.parsed.problem)
    return defn


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


# ------------------------------------------------------------------ schedule preview


class SchedulePreviewInput(BaseModel):
    """The body of ``POST /v2/schedule/preview``: a job's trigger fields, and how many
    fire times to compute."""

    model_config = ConfigDict(extra="forbid")

    trigger_type: StrictStr = Field(json_schema_extra=_TRIGGER_DOC)
    trigger_config: _Object
    schedule_timezone: StrictStr | None = Field(default=None, description="IANA zone, e.g. Europe/Berlin")
    count: StrictInt = Field(
        default=5, json_schema_extra=_range(1, MAX_PREVIEW_COUNT), description="how many fire times"
    )


@dataclass(frozen=True, slots=True)
class SchedulePreview:
    """A checked preview request: the trigger exactly as a job with these fields would
    have it, and how many fire times are wanted."""

    trigger: Trigger
    schedule_timezone: str | None
    count: int


def parse_schedule_preview(body: JSONObject) -> SchedulePreview:
    """Check a preview body with the rules of job creation: a trigger a job could not
    have is the same 400, with the same message (``trigger_config.expression: ...``)."""
    data = parse_input(body, SchedulePreviewInput)
    if not data.trigger_type.strip():
        raise InvalidRequest(_REQUIRED["trigger_type"])
    trigger_type = _choice(TriggerType, "trigger_type", data.trigger_type)
    _check_range("count", data.count, 1, MAX_PREVIEW_COUNT)
    zone = (data.schedule_timezone or "").strip() or None
    try:
        trigger = parse_trigger(trigger_type, data.trigger_config, zone)
    except TriggerError as exc:
        raise InvalidRequest(str(exc)) from None
    return SchedulePreview(trigger=trigger, schedule_timezone=zone, count=data.count)


# ---------------------------------------------------------------------- overrides


class RunOverrides(BaseModel):
    """The optional body of ``POST /v2/jobs/{ref}/trigger``: changes for that run only."""

    model_config = ConfigDict(extra="forbid")

    args: list[StrictStr] | None = Field(default=None, description="replace the program's args")
    env: dict[str, StrictStr] | None = Field(default=None, description="added to the program's environment")
    timeout_seconds: StrictInt | None = Field(
        default=None, json_schema_extra=_range(1, MAX_TIMEOUT_SECONDS), description="this run's timeout"
    )
    instructions: StrictStr | None = Field(default=None, description="llm jobs: this run's instructions")


def parse_overrides(body: JSONObject) -> JSONObject | None:
    """Check a trigger body's shape; the overrides it sets (``None`` when none)."""
    try:
        data = RunOverrides.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_context=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            raise InvalidRequest(
                f"unknown override {field!r} (args, env, timeout_seconds, instructions)"
            ) from None
        hint = _TYPE_HINTS.get(first["type"], first["msg"])
        raise InvalidRequest(f"overrides: {field} {hint}") from None
    overrides: JSONObject = {}
    for key in data.model_fields_set:
        value = getattr(data, key)
        if value is not None:
            overrides[key] = value
    return overrides or None


def check_overrides(spec: JobDefinition, overrides: JSONObject) -> None:
    """Whether ``overrides`` fit the job they are for (its runner type, the rules of
    the fields they replace)."""
    program_only, llm_only = {"args", "env"} & set(overrides), {"instructions"} & set(overrides)
    if spec.runner_type is RunnerType.LLM and program_only:
        raise InvalidRequest(f"{sorted(program_only)[0]} can only be overridden for program jobs")
    if spec.runner_type is RunnerType.PROGRAM and llm_only:
        raise InvalidRequest("instructions can only be overridden for llm jobs")
    timeout = overrides.get("timeout_seconds")
    if isinstance(timeout, int):
        _check_range("timeout_seconds", timeout, 1, MAX_TIMEOUT_SECONDS)
    env = overrides.get("env")
    for key in env if isinstance(env, dict) else ():
        if not key or "=" in key or "\0" in key:
            raise InvalidRequest(f"env has an invalid variable name {key!r}")
        if key in PROTECTED_ENV:
            raise InvalidRequest(f"env may not set {key} (the server's own variable)")
