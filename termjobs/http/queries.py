"""Query parameters: pydantic models that both validate requests and describe them.

Each list or action route declares one model; :func:`parse_query` validates the
request's query string with it, and the OpenAPI document (``termjobs.http.openapi``)
is generated from the same model. Values are parsed by the validators below, which
raise :class:`~termjobs.errors.InvalidRequest` with a message that names the parameter
and says what to fix (pydantic passes such errors through unchanged).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from werkzeug.datastructures import MultiDict

from termjobs.errors import InvalidRequest
from termjobs.model import RunnerType, RunStatus, RunTrigger, TriggerType, parse_ts

MAX_QUERY_INT = 10**15 - 1
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})
E = TypeVar("E", RunnerType, RunStatus, RunTrigger, TriggerType)


def _text(value: object) -> str:
    return value if isinstance(value, str) else str(value)


def _required_text(name: str, value: object, what: str) -> str:
    """The parameter's text; an empty value is an error (say what was expected)."""
    text = _text(value).strip()
    if not text:
        raise InvalidRequest(f"{name} must be {what} (got an empty value)")
    return text


def _non_negative(name: str) -> Callable[[object], int]:
    def parse(value: object) -> int:
        text = _required_text(name, value, "a non-negative integer")
        if not (text.isascii() and text.isdigit()):
            raise InvalidRequest(f"{name} must be a non-negative integer (got {_text(value)!r})")
        if len(text) > 15:
            raise InvalidRequest(f"{name} is too large (at most {MAX_QUERY_INT})")
        return int(text)

    return parse


def _flag(name: str) -> Callable[[object], bool]:
    def parse(value: object) -> bool:
        text = _required_text(name, value, "true or false").lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise InvalidRequest(f"{name} must be true or false (got {_text(value)!r})")

    return parse


def _choice(name: str, kind: type[E]) -> Callable[[object], E]:
    def parse(value: object) -> E:
        allowed = ", ".join(member.value for member in kind)
        text = _required_text(name, value, f"one of: {allowed}")
        try:
            return kind(text)
        except ValueError:
            raise InvalidRequest(f"{name} must be one of: {allowed} (got {text!r})") from None

    return parse


def _statuses(value: object) -> list[RunStatus]:
    """Repeatable and comma-separated: ``status=failed&status=timed_out,cancelled``."""
    items = value if isinstance(value, list) else [value]
    parse = _choice("status", RunStatus)
    return [parse(part) for item in items for part in _text(item).split(",")]


def _labels(value: object) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for item in value if isinstance(value, list) else [value]:
        key, sep, wanted = _text(item).partition("=")
        if not sep or not key:
            raise InvalidRequest(f"label must look like key=value (got {_text(item)!r})")
        pairs.append((key, wanted))
    return pairs


def _timestamp(name: str) -> Callable[[object], dt.datetime]:
    def parse(value: object) -> dt.datetime:
        what = "an RFC 3339 timestamp with an offset, e.g. 2026-03-01T00:00:00Z"
        parsed = parse_ts(_required_text(name, value, what))
        if parsed is None:
            raise InvalidRequest(f"{name} must be {what} (got {_text(value)!r})")
        return parsed

    return parse


def _text_param(name: str) -> Callable[[object], str | None]:
    def parse(value: object) -> str | None:
        return _text(value).strip() or None

    return parse


# ----------------------------------------------------------------------- models


class Query(BaseModel):
    """Base of the query models: unknown parameters are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Paging(Query):
    """``limit`` (0 or absent: the route's default; above its maximum: the maximum) and
    ``offset``."""

    # Field before the validator: pydantic then puts the bounds in the JSON schema.
    limit: Annotated[
        int,
        Field(ge=0, le=MAX_QUERY_INT, description="page size; 0 = the default, capped at the maximum"),
        BeforeValidator(_non_negative("limit")),
    ] = 0
    offset: Annotated[
        int,
        Field(ge=0, le=MAX_QUERY_INT, description="rows to skip"),
        BeforeValidator(_non_negative("offset")),
    ] = 0

    def effective_limit(self, *, default: int, maximum: int) -> int:
        return min(self.limit or default, maximum)


class JobListQuery(Paging):
    """Filters of ``GET /v2/jobs`` (all combine with AND)."""

    name: Annotated[
        str | None, BeforeValidator(_text_param("name")), Field(description="substring, any case")
    ] = None
    enabled: Annotated[bool | None, BeforeValidator(_flag("enabled"))] = None
    trigger_type: Annotated[TriggerType | None, BeforeValidator(_choice("trigger_type", TriggerType))] = None
    runner_type: Annotated[RunnerType | None, BeforeValidator(_choice("runner_type", RunnerType))] = None
    label: Annotated[
        list[tuple[str, str]],
        BeforeValidator(_labels),
        WithJsonSchema({"type": "array", "items": {"type": "string", "pattern": "^[^=]+="}}),
        Field(description="key=value, repeatable; a job matches when its labels hold every pair"),
    ] = []
    id_prefix: Annotated[
        str | None, BeforeValidator(_text_param("id_prefix")), Field(description="jobs whose id starts so")
    ] = None


class RunListQuery(Paging):
    """Filters of ``GET /v2/runs`` (all combine with AND)."""

    job_id: Annotated[
        str | None, BeforeValidator(_text_param("job_id")), Field(description="job id or name")
    ] = None
    status: Annotated[
        list[RunStatus], BeforeValidator(_statuses), Field(description="repeatable or comma-separated")
    ] = []
    trigger: Annotated[RunTrigger | None, BeforeValidator(_choice("trigger", RunTrigger))] = None
    created_after: Annotated[dt.datetime | None, BeforeValidator(_timestamp("created_after"))] = None
    created_before: Annotated[dt.datetime | None, BeforeValidator(_timestamp("created_before"))] = None
    summary: Annotated[
        bool | None,
        BeforeValidator(_flag("summary")),
        Field(description="leave out stdout, stderr, thinking, response"),
    ] = None


class EventListQuery(Paging):
    """``GET /v2/runs/{id}/events``."""

    since_id: Annotated[
        int,
        Field(ge=0, le=MAX_QUERY_INT, description="only events with a larger id"),
        BeforeValidator(_non_negative("since_id")),
    ] = 0


class DeleteJobQuery(Query):
    """``DELETE /v2/jobs/{ref}``."""

    cancel_active: Annotated[
        bool | None, BeforeValidator(_flag("cancel_active")), Field(description="cancel active runs first")
    ] = None


Q = TypeVar("Q", bound=Query)


def parse_query(model: type[Q], args: MultiDict[str, str]) -> Q:
    """Validate ``args`` with ``model``; list fields take every value of a repeated
    parameter."""
    values: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name not in args:
            continue
        values[name] = args.getlist(name) if _is_list(info.annotation) else args.get(name)
    return model.model_validate(values)


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list or any(get_origin(arg) is list for arg in get_args(annotation))
