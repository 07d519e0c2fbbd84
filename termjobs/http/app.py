"""The quart-trio application factory: routes, authentication and error mapping."""

from __future__ import annotations

import logging

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

from termjobs.errors import TermjobsError, Unauthorized
from termjobs.http import jobs, runs, stream
from termjobs.http.auth import is_authorised
from termjobs.http.responses import error_response, json_response
from termjobs.service import Services

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 10 * 1024 * 1024


def create_app(services: Services) -> QuartTrio:
    """A quart-trio app serving the REST API of ``services``."""
    app = QuartTrio("termjobs")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    _register_auth(app, services)
    _register_errors(app)

    @app.route("/healthz", methods=["GET"])
    async def healthz() -> Response:
        body: dict[str, object] = {"status": "ok"}
        if is_authorised(services.settings, request.headers):
            body.update(version=services.version, capabilities=["jobs"])
        return json_response(body)

    jobs.register(app, services)
    runs.register(app, services)
    stream.register(app, services)
    return app


def _register_auth(app: QuartTrio, services: Services) -> None:
    @app.before_request
    async def require_token() -> None:
        if request.path.startswith("/v2") and not is_authorised(services.settings, request.headers):
            raise Unauthorized()


def _register_errors(app: QuartTrio) -> None:
    @app.errorhandler(TermjobsError)
    async def domain_error(exc: TermjobsError) -> Response:
        if exc.status >= 500:
            logger.error("request %s %s failed: %s", request.method, request.path, exc.message)
        return error_response(exc.message, exc.status, exc.error_type)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if isinstance(exc, MethodNotAllowed):
            allowed = ", ".join(sorted(m for m in exc.valid_methods or [] if m not in ("HEAD", "OPTIONS")))
            return error_response("method not allowed", 405, "invalid_request_error", {"Allow": allowed})
        if isinstance(exc, RequestEntityTooLarge):
            return error_response(
                f"request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB",
                413,
                "invalid_request_error",
            )
        if status == 404:
            return error_response(
                f"no such endpoint: {request.method} {request.path} (see the REST reference in the README)",
                404,
                "invalid_request_error",
            )
        return error_response(exc.description or exc.name, status, "invalid_request_error")

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return error_response("internal server error; see the server log", 500, "internal_error")


__all__ = ["create_app", "json_response"]
