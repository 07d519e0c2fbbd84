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

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Annotated, Any, Final, TypeVar

import pydantic
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

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


@dataclass(frozen=True, slots=True)
class JobPatch:
    """A checked PATCH body: the definition fields it sets, with typed values (``None``
    resets a field to its default). Build one with :func:`parse_patch`."""

    changes: Mapping[str, Any]

    @classmethod
    def enabled(cls, value: bool) -> JobPatch:
        """Pause (``False``) or resume (``True``)."""
        return cls(MappingProxyType({"enabled": value}))


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


def parse_input(body: JSONObject) -> JobInput:
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


def definition_for_create(body: JSONObject) -> JobDefinition:
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
    return validate(replace(base, **_changes(data)))


def parse_patch(body: JSONObject) -> JobPatch:
    """Check a PATCH body's shape. Absent fields keep their value; ``null`` resets a
    field to its default, which for ``schedule_timezone``, ``retry_policy`` and
    ``labels`` means removing it. ``name``, ``runner_type``, ``trigger_type`` and
    ``enabled`` cannot be null."""
    data = parse_input(body)
    for key in ("name", "runner_type", "trigger_type", "enabled"):
        if key in data.model_fields_set and getattr(data, key) is None:
            raise InvalidRequest(f"{key} cannot be null")
    if data.name is not None and not data.name.strip():
        raise InvalidRequest("name cannot be blank")
    changes = _changes(data)
    if data.runner_type is not None:
        changes["runner_type"] = _choice(RunnerType, "runner_type", data.runner_type)
    if data.trigger_type is not None:
        changes["trigger_type"] = _choice(TriggerType, "trigger_type", data.trigger_type)
    return JobPatch(MappingProxyType(changes))


def apply_patch(current: JobDefinition, patch: JobPatch) -> JobDefinition:
    """``current`` with ``patch`` applied, validated as a whole."""
    return validate(replace(current, **patch.changes))


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
    _check_range("max_concurrent_runs", defn.max_concurrent_runs, 1, 1000)
    _check_range("timeout_seconds", defn.timeout_seconds, 1, 30 * 24 * 3600)
    _check_range("misfire_grace_seconds", defn.misfire_grace_seconds, 0, 7 * 24 * 3600)
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
