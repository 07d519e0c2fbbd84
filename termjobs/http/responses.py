"""JSON responses in the wire format (compact, trailing newline)."""

from __future__ import annotations

from quart import Response

from termjobs import wire
from termjobs.model import JSONValue


def json_response(body: JSONValue, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A ``application/json`` response."""
    return Response(wire.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(
    message: str, status: int, error_type: str, headers: dict[str, str] | None = None
) -> Response:
    """The error envelope ``{"error":{"message":...,"type":...}}``."""
    return json_response(wire.error_json(message, error_type), status, headers)
