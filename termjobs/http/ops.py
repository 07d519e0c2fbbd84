"""Operational routes and hooks: ``/metrics``, request counting, CORS."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Response, request
from quart_trio import QuartTrio

from termjobs.errors import Unauthorized
from termjobs.http.auth import is_authorised
from termjobs.services import Services

#: Request headers a browser may send across origins (``*`` never covers authorization).
CORS_HEADERS = "authorization, content-type, idempotency-key, x-api-key"
CORS_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"


def register(app: QuartTrio, services: Services) -> None:
    """Add ``/metrics``, the request counter and (when configured) CORS."""
    metrics, settings = services.metrics, services.settings

    @app.route("/metrics", methods=["GET"])
    async def scrape() -> Response:
        if not settings.metrics_public and not is_authorised(settings, request.headers):
            raise Unauthorized()
        return Response(metrics.render(), content_type=CONTENT_TYPE_LATEST)

    @app.after_request
    async def count(response: Response) -> Response:
        # The rule, never the raw path: ids would make one series per job or run.
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.request_answered(rule, request.method, response.status_code)
        return response

    if settings.cors_origins:
        _register_cors(app, settings.cors_origins)


def _register_cors(app: QuartTrio, origins: tuple[str, ...]) -> None:
    allowed = frozenset(origins)

    def origin_allowed() -> str | None:
        origin = request.headers.get("Origin")
        if origin is None:
            return None
        if "*" in allowed:
            return "*"
        return origin if origin in allowed else None

    @app.before_request
    async def preflight() -> Response | None:
        # Answered before authentication: a browser sends no credentials here.
        if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
            return None
        response = Response("", status=204)
        origin = origin_allowed()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
            response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
            response.headers["Vary"] = "Origin"
        return response

    @app.after_request
    async def headers(response: Response) -> Response:
        origin = origin_allowed()
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After, Termjobs-Since-Id"
            response.headers["Vary"] = "Origin"
        return response
