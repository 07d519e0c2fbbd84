"""``Idempotency-Key``: a retried create or trigger returns the first answer.

The answer (status and body) is stored with the job or run it created, in the same
transaction, so a request either created something and has a receipt, or did neither.
A retry with the same key and the same request replays the receipt (for 24 hours, even
after the run has finished); the same key with another request is a 422; a request
racing the first one with its key gets the first one's answer (or a 409 while the
first is still in flight), never a second job or run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

from quart import Response, request

from termjobs.actors.protocol import Idempotency
from termjobs.errors import AlreadyAnswered, Conflict, InvalidRequest, KeyReused
from termjobs.model import JSONValue
from termjobs.services import Services
from termjobs.storage import Receipt
from termjobs.storage.base import RECEIPT_LIFETIME

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
REPLAYED_HEADER = "Idempotent-Replayed"


async def answer_once(
    services: Services, body: JSONValue, act: Callable[[Idempotency | None], Awaitable[Response]]
) -> Response:
    """Run ``act`` unless this request's key was answered before (see the module)."""
    raw_key = request.headers.get(HEADER)
    if raw_key is None:
        return await act(None)
    key = raw_key.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise InvalidRequest(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    fingerprint = hashlib.sha256(f"{request.method} {request.path}\n{canonical}".encode()).hexdigest()
    since = services.clock.now() - RECEIPT_LIFETIME
    found = await services.storage.receipt(key, since=since)
    if found is not None:
        return _replay(found, fingerprint)
    try:
        return await act(Idempotency(key, fingerprint))
    except AlreadyAnswered:
        found = await services.storage.receipt(key, since=since)
        if found is None:
            raise Conflict(f"a request with this {HEADER} is still being answered; retry shortly") from None
        return _replay(found, fingerprint)


def _replay(found: Receipt, fingerprint: str) -> Response:
    if found.fingerprint != fingerprint:
        raise KeyReused(f"this {HEADER} was used with a different request; use a new key for a new request")
    return Response(
        found.body, status=found.status, content_type="application/json", headers={REPLAYED_HEADER: "true"}
    )
