"""Following live events over the server's websocket streams.

``follow_run`` prints a run's timeline and then its events as they happen, until the
run ends. ``watch`` prints every event (or one job's) until interrupted. Both resume
with ``since_id`` after a dropped connection, a lagged close (4408) or a server
restart, so nothing is missed and nothing is shown twice. A watch opened "from now"
learns where now is from the handshake (``Termjobs-Since-Id``) and resumes from there
even when the connection drops before its first event.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode, urlsplit

import trio

from termjobs.cli.client import TOKEN_HINT, ApiError, ClientSettings, RunEvent
from termjobs.cli.render import FINISHED_STATUSES

if TYPE_CHECKING:  # imported where used: `term-llm jobs` starts faster without it
    import trio_websocket

TERMINAL: Final = frozenset(FINISHED_STATUSES)
#: Close codes after which reconnecting (with since_id) is the right move.
RESUMABLE: Final = frozenset({1001, 1006, 1011, 1012, 4408})
_BACKOFF_MIN_S = 0.2
_BACKOFF_MAX_S = 5.0
_CLOSE_WAIT_S = 2.0
SINCE_ID_HEADER: Final = b"termjobs-since-id"

OnEvent = Callable[[RunEvent], Awaitable[None]]


@dataclass
class Cursor:
    """Where a follower is: the last event id it printed, and what it saw last."""

    since_id: int = 0
    last_type: str | None = None


def stream_url(settings: ClientSettings, path: str, query: dict[str, Any]) -> str:
    """``http(s)://host[/base]`` + ``path`` as a ``ws(s)://`` URL with ``query``."""
    parts = urlsplit(settings.server)
    scheme = "wss" if parts.scheme == "https" else "ws"
    args = urlencode({k: v for k, v in query.items() if v is not None})
    return f"{scheme}://{parts.netloc}{parts.path}{path}" + (f"?{args}" if args else "")


@asynccontextmanager
async def open_stream(
    settings: ClientSettings, url: str
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """A websocket to ``url`` with the bearer token; its TCP stream is closed on exit
    even when the server ended the connection (trio-websocket leaves it open then)."""
    import trio_websocket

    headers = [(b"Authorization", f"Bearer {settings.token}".encode())] if settings.token else None
    context = ssl.create_default_context() if url.startswith("wss://") else None
    # One failure (connection refused, timeout...) comes out of the nursery wrapped.
    with unwrapped(Exception):
        async with trio.open_nursery() as nursery:  # hosts the connection's reader task
            with trio.fail_after(settings.timeout):
                connection = await trio_websocket.connect_websocket_url(
                    nursery, url, ssl_context=context, extra_headers=headers
                )
            try:
                yield connection
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(_CLOSE_WAIT_S):
                        await connection.aclose()  # the close handshake; the server may be gone
                    stream: trio.abc.AsyncResource = connection._stream  # no public accessor
                    await stream.aclose()


@contextmanager
def unwrapped(kind: type[Exception]) -> Iterator[None]:
    """Let a lone ``kind`` failure out of a nursery's exception group as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and isinstance(group.exceptions[0], kind):
            raise group.exceptions[0] from None
        raise


async def follow(
    settings: ClientSettings,
    path: str,
    query: dict[str, Any],
    cursor: Cursor,
    on_event: OnEvent,
    *,
    until_terminal: bool,
) -> None:
    """Print events from the stream at ``path`` until it ends normally (a run's stream
    closes after its terminal event) or, with ``until_terminal`` false, forever."""
    import trio_websocket

    delay, connected_once = _BACKOFF_MIN_S, False
    while True:
        since = cursor.since_id if connected_once else query.get("since_id")
        url = stream_url(settings, path, {**query, "since_id": since})
        try:
            code, reason, delivered = await _pump(settings, url, cursor, on_event)
        except (OSError, trio_websocket.HandshakeError, trio.TooSlowError) as exc:
            if not connected_once:
                raise ApiError(f"cannot open the event stream at {url}: {_describe(exc)}") from None
            code, reason, delivered = 1006, str(exc), False
        connected_once = True
        if code == 1000 and (until_terminal or cursor.last_type in TERMINAL):
            return
        if code == 4401:
            raise ApiError(f"the event stream refused the credentials: {TOKEN_HINT}")
        if code == 4404:
            raise ApiError(reason or "not found")
        if code not in RESUMABLE and code != 1000:
            raise ApiError(f"the event stream closed ({code}): {reason}")
        # Dropped, lagged or server restarting: resume where we were. A connection that
        # delivered events was healthy, so the next wait starts short again.
        delay = _BACKOFF_MIN_S if delivered else delay
        await trio.sleep(delay)
        delay = min(delay * 2, _BACKOFF_MAX_S)


async def _pump(
    settings: ClientSettings, url: str, cursor: Cursor, on_event: OnEvent
) -> tuple[int, str, bool]:
    """Deliver events until the server closes: its close code and reason, and whether
    any event came through."""
    import trio_websocket

    delivered = False
    async with open_stream(settings, url) as ws:
        start = dict(ws.handshake_headers).get(SINCE_ID_HEADER)
        if start is not None and start.isdigit():
            cursor.since_id = max(cursor.since_id, int(start))  # where "now" was
        while True:
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as closed:
                reason = closed.reason
                code, text = (reason.code, reason.reason or "") if reason else (1006, "")
                return code, text, delivered
            delivered = True
            event: RunEvent = json.loads(message)
            if event["id"] <= cursor.since_id:
                continue
            cursor.since_id, cursor.last_type = event["id"], event["event_type"]
            await on_event(event)


def _describe(exc: BaseException) -> str:
    import trio_websocket

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is `term-llm serve jobs` running? --server or TERM_LLM_JOBS_SERVER)"
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return f"the server answered HTTP {exc.status_code}"
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    return str(exc) or type(exc).__name__
