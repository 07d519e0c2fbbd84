"""Bearer-token authentication of ``/v2`` requests."""

from __future__ import annotations

import hmac

from werkzeug.datastructures import Headers

from termjobs.config import Settings


def is_authorised(settings: Settings, headers: Headers, query_token: str = "") -> bool:
    """Whether a request may use the API: authentication is off, or it presents the
    server's token (``query_token``: the ``token`` parameter, websockets only)."""
    if settings.auth == "none":
        return True
    presented = presented_token(headers.get("Authorization", ""), headers.get("x-api-key", ""), query_token)
    return settings.token is not None and token_matches(settings.token, presented)


def presented_token(authorization: str, api_key: str, query_token: str = "") -> str | None:
    """The credential a request carries: ``Authorization: Bearer``, else ``x-api-key``,
    else (websockets only: browsers cannot set headers) a ``token`` query parameter."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return api_key.strip() or query_token.strip() or None


def token_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison."""
    if presented is None:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
