"""The OpenAPI 3.1 document of the REST API, generated from the operations.

Every route registered through :class:`~termjobs.http.api.Api` appears with its path
and query parameters (from its query model), its request body (from the same pydantic
model that validates it), its success response (derived from the value dataclasses,
``termjobs.http.schemas``), its error responses (the error envelope) and examples.
"""

from __future__ import annotations

import re
from typing import Any, Final

from pydantic import BaseModel

from termjobs.http.api import Operation
from termjobs.http.schemas import Schema, components

_REASONS: Final = {
    400: "The request is malformed or breaks a rule; the message names the field and the fix.",
    401: "Missing or wrong credentials.",
    404: "No such job, run or endpoint.",
    408: "The request body stopped arriving.",
    409: "The request clashes with the current state.",
    413: "The request body is too large.",
    415: "The body is not declared as JSON.",
    422: "The Idempotency-Key was used with another request.",
    500: "A bug; the message carries a reference that is in the server log.",
    503: "Shutting down, overloaded, or the database is unavailable; retry after Retry-After.",
}
_AUTH_ERRORS: Final = (401, 500, 503)
_RULE_PARAM = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def document(operations: list[Operation], *, version: str) -> Schema:
    """The OpenAPI 3.1 document for ``operations``."""
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        path = _RULE_PARAM.sub(r"{\1}", op.path)
        paths.setdefault(path, {})[op.method.lower()] = _operation(op, path)
    schemas = components()
    for op in operations:
        for model in (op.body,):
            if model is not None:
                schemas[model.__name__] = _model_schema(model, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "termjobs",
            "version": version,
            "description": "A self-hosted job runner: jobs (manual, once, cron), their runs and timelines.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}],
    }


def _operation(op: Operation, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "parameters": _path_params(op, path) + _query_params(op) + _headers(op),
        "responses": _responses(op),
    }
    if op.description:
        out["description"] = op.description
    if not op.auth:
        out["security"] = []
    if op.body is not None:
        content: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}}
        if op.request_example is not None:
            content["example"] = op.request_example
        out["requestBody"] = {"required": op.body_required, "content": {"application/json": content}}
    return out


def _path_params(op: Operation, path: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": op.params.get(name, ""),
            "schema": {"type": "string", "minLength": 1},
        }
        for name in re.findall(r"{([a-z_]+)}", path)
    ]


def _query_params(op: Operation) -> list[dict[str, Any]]:
    if op.query is None:
        return []
    schema = op.query.model_json_schema()
    defs = schema.get("$defs", {})
    params = []
    for name, prop in schema.get("properties", {}).items():
        prop = _inline(_without_null(prop), defs)
        prop.pop("title", None)
        prop.pop("default", None)
        description = prop.pop("description", "")
        param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": prop}
        if description:
            param["description"] = description
        if prop.get("type") == "array":
            param["style"], param["explode"] = "form", True
        params.append(param)
    return params


def _headers(op: Operation) -> list[dict[str, Any]]:
    if not op.idempotent:
        return []
    return [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "A retried request with the same key returns the first answer (kept 24 h).",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }
    ]


def _responses(op: Operation) -> dict[str, Any]:
    success: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{op.response}"}}
    if op.response_example is not None:
        success["example"] = op.response_example
    responses: dict[str, Any] = {
        str(op.status): {"description": "Success.", "content": {"application/json": success}}
    }
    if op.links:
        responses[str(op.status)]["links"] = {
            target: {"operationId": target, "parameters": {param: "$response.body#/id"}}
            for target, param in op.links.items()
        }
    errors = set(op.errors) | (set(_AUTH_ERRORS) if op.auth else {500, 503})
    for status in sorted(errors):
        responses[str(status)] = {
            "description": _REASONS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return responses


def _without_null(prop: dict[str, Any]) -> dict[str, Any]:
    options = prop.get("anyOf")
    if options is None:
        return dict(prop)
    rest = [option for option in options if option.get("type") != "null"]
    merged = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
    return {**merged, **rest[0]} if len(rest) == 1 else {**merged, "anyOf": rest}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``#/$defs/...`` reference replaced by its definition."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = {k: v for k, v in defs[ref.rsplit("/", 1)[1]].items() if k != "title"}
        rest = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**target, **rest}, defs)
    return {key: _inline(value, defs) for key, value in node.items()}


def _model_schema(model: type[BaseModel], schemas: dict[str, Schema]) -> Schema:
    """A request model's schema, its nested definitions moved to the components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, nested in schema.pop("$defs", {}).items():
        schemas.setdefault(name, nested)
    return schema
