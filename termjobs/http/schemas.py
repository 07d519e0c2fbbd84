"""JSON Schemas of the API's responses, derived from the value dataclasses.

The wire shapes (``termjobs.wire``) are the value types' fields in their order, with
omission rules; the schemas here are read off the same dataclasses and the same
"always present" sets, so a field added to ``RunOutput`` or ``JobDefinition`` appears
in the OpenAPI document by itself.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Final

from termjobs import wire
from termjobs.fields import enum_type, is_timestamp
from termjobs.jobdef import Job, JobDefinition
from termjobs.jobspec import MAX_PREVIEW_COUNT
from termjobs.model import PAYLOAD_FIELDS, Run, RunEvent, RunOutput, Session

Schema = dict[str, Any]

_SCALARS: Final = {"str": "string", "int": "integer", "bool": "boolean", "float": "number"}
_JSON_VALUE: Final[Schema] = {"description": "any JSON value"}


def field_schema(owner: type, annotation: object) -> Schema:
    """The JSON Schema of one field, from its annotation (``"ExitReason | None"``...)."""
    kind = enum_type(owner, annotation)
    if kind is not None:
        return {"type": "string", "enum": [member.value for member in kind]}
    if is_timestamp(annotation):
        return {"type": "string", "format": "date-time"}
    parts = [part.strip() for part in str(annotation).split("|") if part.strip() != "None"]
    if len(parts) == 1 and parts[0] in _SCALARS:
        return {"type": _SCALARS[parts[0]]}
    if parts == ["JSONObject"]:
        return {"type": "object"}
    return dict(_JSON_VALUE)


def _object(properties: dict[str, Schema], required: list[str]) -> Schema:
    return {"type": "object", "properties": properties, "required": required}


def _enum_of(kind: type[enum.Enum]) -> Schema:
    return {"type": "string", "enum": [member.value for member in kind]}


def run_schema(*, full: bool) -> Schema:
    """A run (``full``) or a run summary (no captured payloads)."""
    properties: dict[str, Schema] = {}
    for item in dataclasses.fields(Run):
        if item.name != "output":
            properties[item.name] = field_schema(Run, item.type)
    for item in dataclasses.fields(RunOutput):
        if full or item.name not in PAYLOAD_FIELDS:
            properties[item.name] = field_schema(RunOutput, item.type)
    required = [
        name for name in properties if name in wire.RUN_REQUIRED or name in ("created_at", "updated_at")
    ]
    return _object(properties, required)


def job_schema() -> Schema:
    """A job with its newest run (a summary) and schedule state."""
    properties: dict[str, Schema] = {"id": {"type": "string"}}
    required = ["id"]
    for item in dataclasses.fields(JobDefinition):
        properties[item.name] = field_schema(JobDefinition, item.type)
        if item.name not in wire.SPEC_OPTIONAL:
            required.append(item.name)
    for item in dataclasses.fields(Job):
        if item.name not in ("id", "spec", "last_fire_at"):
            properties[item.name] = field_schema(Job, item.type)
    properties["last_run"] = {"$ref": "#/components/schemas/RunSummary"}
    required += ["created_at", "updated_at"]
    return _object(properties, required)


def event_schema() -> Schema:
    """A run event (streams add ``job_id``)."""
    properties = {item.name: field_schema(RunEvent, item.type) for item in dataclasses.fields(RunEvent)}
    properties["data"] = dict(_JSON_VALUE)
    required = ["id", "run_id", "event_type", "created_at"]
    return _object(properties, required)


def list_schema(item: str, **extra: Schema) -> Schema:
    """The list envelope of ``item`` (a component name)."""
    properties: dict[str, Schema] = {
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
        "total": {"type": "integer", "minimum": 0},
        "offset": {"type": "integer", "minimum": 0},
        "limit": {"type": "integer", "minimum": 0},
        **extra,
    }
    return _object(properties, list(properties))


ERROR: Final[Schema] = _object(
    {
        "error": _object(
            {"message": {"type": "string"}, "type": {"type": "string"}, "code": {"type": "string"}},
            ["message", "type"],
        )
    },
    ["error"],
)


def components() -> dict[str, Schema]:
    """Every response schema, by component name."""
    return {
        "Job": job_schema(),
        "Run": run_schema(full=True),
        "RunSummary": run_schema(full=False),
        "RunEvent": event_schema(),
        "JobList": list_schema("Job"),
        "RunList": list_schema("Run"),  # a summary is a run without its optional payloads
        "RunEventList": list_schema("RunEvent", since_id={"type": "integer", "minimum": 0}),
        "Deleted": _object(
            {"id": {"type": "string"}, "deleted": {"type": "boolean", "enum": [True]}}, ["id", "deleted"]
        ),
        "SchedulePreview": _object(
            {
                "timezone": {"type": "string", "description": "the zone the schedule is evaluated in"},
                "fire_times": {
                    "type": "array",
                    "items": {"type": "string", "format": "date-time"},
                    "maxItems": MAX_PREVIEW_COUNT,
                },
            },
            ["timezone", "fire_times"],
        ),
        "Health": _object(
            {
                "status": {"type": "string"},
                "version": {"type": "string"},
                "capabilities": {"type": "array", "items": {"type": "string"}},
            },
            ["status"],
        ),
        "Readiness": _object(
            {"status": {"type": "string", "enum": ["ready", "not_ready"]}, "failing": {"type": "array"}},
            ["status"],
        ),
        "Agent": _object(
            {
                "name": {"type": "string"},
                "description": {"type": "string"},
                "tools": {"type": "array", "items": {"type": "string"}},
                "provider": {"type": ["string", "null"]},
                "model": {"type": ["string", "null"]},
                "source": {"type": "string", "description": "builtin, or the file the agent came from"},
            },
            ["name", "description", "tools", "provider", "model", "source"],
        ),
        "AgentList": list_schema("Agent"),
        "Session": session_schema(),
        "Cluster": _object(
            {
                "mode": {"type": "string", "enum": ["cluster", "single"]},
                "this_server": {"type": "string"},
                "lease_seconds": {"type": ["number", "null"]},
                "servers": {"type": "array", "items": {"$ref": "#/components/schemas/Server"}},
            },
            ["mode", "this_server", "lease_seconds", "servers"],
        ),
        "Server": _object(
            {
                "id": {"type": "string"},
                "host": {"type": "string"},
                "pid": {"type": "integer"},
                "url": {"type": "string"},
                "version": {"type": "string"},
                "started_at": {"type": "string", "format": "date-time"},
                "heartbeat_age_seconds": {"type": "number", "minimum": 0},
                "alive": {"type": "boolean"},
                "leader": {"type": "boolean"},
                "jobs_owned": {"type": "integer", "minimum": 0},
                "runs_active": {"type": "integer", "minimum": 0},
            },
            [
                "id",
                "host",
                "pid",
                "url",
                "version",
                "started_at",
                "heartbeat_age_seconds",
                "alive",
                "leader",
                "jobs_owned",
                "runs_active",
            ],
        ),
        "Error": ERROR,
    }


def session_schema() -> Schema:
    """An LLM session with its transcript (each message as the runner keeps it)."""
    properties = {
        item.name: field_schema(Session, item.type)
        for item in dataclasses.fields(Session)
        if item.name not in ("job_id", "name")
    }
    required = list(properties)
    properties |= {"job_id": {"type": "string"}, "name": {"type": "string"}}
    message = _object(
        {
            "id": {"type": "integer"},
            "run_id": {"type": "string"},
            "role": {"type": "string"},
            "created_at": {"type": "string", "format": "date-time"},
        },
        ["id", "created_at"],
    )
    properties["messages"] = {"type": "array", "items": message}
    return _object(properties, [*required, "messages"])
