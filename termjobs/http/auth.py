"""Bearer-token authentication of ``/v2`` requests."""

from __future__ import annotations

import hmac


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
