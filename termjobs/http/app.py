"""The quart-trio application factory: routes, authentication and error mapping."""

from __future__ import annotations

import logging
import secrets

import h11
from quart import Response, has_request_context, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from termjobs.errors import InternalError, TermjobsError, Unauthorized
from termjobs.http import cluster, health, jobs, llm, ops, runs, schedule, stream, ui
from termjobs.http.api import Api
from termjobs.http.auth import is_authorised
from termjobs.http.guard import guarded
from termjobs.http.responses import error_response, json_response
from termjobs.services import Services
from termjobs.storage import StorageUnavailable

logger = logging.getLogger(__name__)


def create_app(services: Services) -> QuartTrio:
    """A quart-trio app serving the REST API of ``services``."""
    app = QuartTrio("termjobs")
    limits = services.settings.limits
    app.config["MAX_CONTENT_LENGTH"] = limits.max_body_bytes
    app.config["BODY_TIMEOUT"] = limits.body_timeout
    app.json.sort_keys = False  # type: ignore[attr-defined]
    ops.register(app, services)  # first: CORS preflights are answered before authentication
    _register_auth(app, services)
    _register_body_drain(app)
    _register_errors(app, limits.max_body_bytes)

    api = Api(app)
    health.register(api, services)
    jobs.register(api, services)
    runs.register(api, services)
    schedule.register(api, services)
    llm.register(api, services)
    cluster.register(api, services)
    stream.register(app, services)
    ui.register(app)
    app.asgi_app = guarded(app.asgi_app, max_body_bytes=limits.max_body_bytes)  # type: ignore[method-assign]
    return app


def _register_auth(app: QuartTrio, services: Services) -> None:
    @app.before_request
    async def require_token() -> None:
        if request.path.startswith("/v2") and not is_authorised(services.settings, request.headers):
            raise Unauthorized()


def _register_body_drain(app: QuartTrio) -> None:
    @app.before_request
    async def read_whole_body() -> None:
        # Routes such as pause or trigger ignore a body. Were it left unread, a body
        # arriving after the response would leave the connection unusable; reading it
        # first keeps keep-alive clients working (and enforces the size limit).
        if request.content_length or "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            await request.get_data(cache=True)


def _register_errors(app: QuartTrio, max_body_bytes: int) -> None:
    @app.errorhandler(TermjobsError)
    async def domain_error(exc: TermjobsError) -> Response:
        if exc.status >= 500 and exc.status != 503:
            logger.error("request %s %s failed: %s", request.method, request.path, exc.message)
        return error_response(exc.message, exc.status, exc.error_type)

    @app.errorhandler(StorageUnavailable)
    async def storage_unavailable(exc: StorageUnavailable) -> Response:
        # The message names no host or port; the log has the driver's error.
        return error_response(str(exc), 503, "unavailable_error", {"Retry-After": "1"})

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if isinstance(exc, MethodNotAllowed):
            allowed = ", ".join(sorted(m for m in exc.valid_methods or [] if m not in ("HEAD", "OPTIONS")))
            return error_response("method not allowed", 405, "invalid_request_error", {"Allow": allowed})
        if isinstance(exc, RequestEntityTooLarge):
            return error_response(
                f"request body is larger than {_size(max_body_bytes)} (--max-body-bytes)",
                413,
                "invalid_request_error",
            )
        if status == 404:
            return error_response(
                f"no such endpoint: {request.method} {request.path} (see docs/rest.md)",
                404,
                "invalid_request_error",
            )
        return error_response(exc.description or exc.name, status, "invalid_request_error")

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        where = f"{request.method} {request.path}" if has_request_context() else f"websocket {websocket.path}"
        if isinstance(exc, h11.ProtocolError):
            # The client broke HTTP (the connection cannot carry an answer): not our fault.
            logger.info("%s: the client broke the HTTP protocol (%s)", where, exc)
            return error_response("malformed HTTP request", 400, "invalid_request_error")
        ref = secrets.token_hex(4)
        logger.error("unhandled error in %s (ref %s)", where, ref, exc_info=exc)
        return error_response(InternalError(ref).message, 500, "internal_error")


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n % (1024 * 1024) == 0 else f"{n} bytes"


__all__ = ["create_app", "json_response"]
