"""Bearer-token authentication of ``/v2`` requests."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable
from typing import Final

from werkzeug.datastructures import Headers

from termjobs.config import Settings

#: The websocket subprotocol of the event streams; a browser offers it beside the
#: token's, and the server selects it (a browser drops a handshake that selects none).
STREAM_PROTOCOL: Final = "termjobs"
#: A websocket subprotocol ``termjobs.bearer.<token, base64url without padding>``
#: carries the token: browsers cannot set an ``Authorization`` header on a websocket,
#: and a token in the URL would end up in logs and history.
BEARER_PROTOCOL_PREFIX: Final = "termjobs.bearer."


def is_authorised(settings: Settings, headers: Headers, query_token: str = "") -> bool:
    """Whether a request may use the API: authentication is off, or it presents the
    server's token (``query_token``: from a websocket's bearer subprotocol or ``token``
    parameter, websockets only)."""
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


def subprotocol_token(offered: Iterable[str]) -> str:
    """The token carried by a ``termjobs.bearer.*`` subprotocol among ``offered``, or
    ``""`` when there is none or it does not decode (which then fails as a wrong token)."""
    for protocol in offered:
        if protocol.startswith(BEARER_PROTOCOL_PREFIX):
            encoded = protocol.removeprefix(BEARER_PROTOCOL_PREFIX)
            try:
                return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode("utf-8")
            except (binascii.Error, ValueError):
                return ""
    return ""
