"""Requests refused before the framework sees them: a URL or Host header that no route
can be asked with.

Quart builds its routing adapter (which IDNA-encodes the ``Host`` header) before any
handler or error handler runs, so a ``Host`` with an empty label (``a..b``) used to end
in a bare 500. And a NUL character (``%00``) in a path or query reaches the database
as a lookup key, which PostgreSQL refuses. Both are client errors: this ASGI wrapper
answers them ``400`` with the usual JSON error body (an HTTP ``400`` to a websocket
handshake), for every route, with or without a token.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from werkzeug.sansio.utils import get_host

from termjobs import wire

ASGIApp = Any  # the ASGI callable: (scope, receive, send) -> None


def request_problem(scope: dict[str, Any]) -> str | None:
    """Why this request cannot be served (``None`` when it can)."""
    if "\x00" in scope.get("path", "") or b"\x00" in unquote_to_bytes(scope.get("query_string", b"")):
        return "the URL contains a NUL character (%00)"
    header = next((value for name, value in scope.get("headers", ()) if name.lower() == b"host"), None)
    if header is None:
        return None
    host = get_host(scope.get("scheme", "http"), header.decode("latin-1"), None)
    # As werkzeug's ``Map.bind`` does: the name before the first colon, IDNA-encoded.
    name = host.lower().partition(":")[0]
    try:
        name.encode("idna")
    except UnicodeError:
        return "the Host header is not a valid host name"
    return None


def guarded(app: ASGIApp, *, max_body_bytes: int) -> ASGIApp:
    """``app`` behind the checks of :func:`request_problem`."""

    async def guard(scope: dict[str, Any], receive: Any, send: Any) -> None:
        problem = request_problem(scope) if scope["type"] in ("http", "websocket") else None
        if problem is None:
            await app(scope, receive, send)
        elif scope["type"] == "http":
            await _refuse_http(problem, receive, send, max_body_bytes)
        else:
            await _refuse_websocket(scope, problem, receive, send)

    return guard


def _body(problem: str) -> bytes:
    return wire.dumps(wire.error_json(problem, "invalid_request_error")).encode()


async def _refuse_http(problem: str, receive: Any, send: Any, max_body_bytes: int) -> None:
    # Read (and drop) a body first, up to the body limit, so the client is not reset
    # before it reads the answer; then answer and close: the client is clearly confused.
    read = 0
    while read <= max_body_bytes:
        message = await receive()
        read += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body"):
            break
    body = _body(problem)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse_websocket(scope: dict[str, Any], problem: str, receive: Any, send: Any) -> None:
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        body = _body(problem)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "websocket.http.response.start", "status": 400, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})


__all__ = ["guarded", "request_problem"]
