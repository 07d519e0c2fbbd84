"""``notify_origin`` is server-managed (SPEC 12.2): where a finished llm job reports.

A request body never sets it: any ``notify_origin`` in ``runner_config`` is removed.
When the job asks to be told (``notify_when_done: true``) and the request comes from
this machine (a loopback peer), the origin is taken from the queue-agent headers:

* ``X-Term-LLM-Queue-Agent-Origin: web`` with ``...-Session-ID: <id>`` gives
  ``{"origin": "web", "session_id": "<id>"}``;
* ``...-Origin: telegram`` with ``...-Telegram-Chat-ID: <non-zero int>`` gives
  ``{"origin": "telegram", "telegram_chat_id": N}``;
* anything else gives no origin (no notification).

A rewritten ``runner_config`` has its keys sorted, as upstream. This module only
decides what is stored; delivering the notification is the job of the completion
notifier, which reads ``notify_origin`` from the job's ``runner_config``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from termjobs.model import JSONObject, JSONValue

#: Header names, lower-cased (callers pass headers with lower-cased names).
ORIGIN_HEADER = "x-term-llm-queue-agent-origin"
SESSION_HEADER = "x-term-llm-queue-agent-session-id"
CHAT_HEADER = "x-term-llm-queue-agent-telegram-chat-id"
_INT64 = 2**63


def is_loopback(address: str | None) -> bool:
    """Whether a peer address is on this machine."""
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def origin_from_headers(headers: Mapping[str, str]) -> JSONObject | None:
    """The origin the queue-agent headers (names lower-cased) describe, if any."""
    kind = (headers.get(ORIGIN_HEADER) or "").strip().lower()
    if kind == "web":
        session = (headers.get(SESSION_HEADER) or "").strip()
        return {"origin": "web", "session_id": session} if session else None
    if kind == "telegram":
        try:
            chat = int((headers.get(CHAT_HEADER) or "").strip())
        except ValueError:
            return None
        return {"origin": "telegram", "telegram_chat_id": chat} if chat and -_INT64 <= chat < _INT64 else None
    return None


def sanitize_runner_config(config: JSONValue, headers: Mapping[str, str], *, loopback: bool) -> JSONValue:
    """``config`` without a client-supplied ``notify_origin``, with the one the
    headers give when allowed (see the module docstring). Returned unchanged (same
    key order) when there is nothing to remove or add."""
    if not isinstance(config, dict):
        return config
    cleaned = {key: value for key, value in config.items() if key != "notify_origin"}
    origin = None
    if loopback and cleaned.get("notify_when_done") is True:
        origin = origin_from_headers(headers)
    if origin is None and len(cleaned) == len(config):
        return config
    if origin is not None:
        cleaned["notify_origin"] = origin
    return dict(sorted(cleaned.items()))
