"""Live event streams over websockets.

* ``/v2/runs/{id}/events/stream?since_id=N`` replays the run's stored events with
  ``id > N``, then streams new ones as they are committed, and closes normally (1000)
  after the run's terminal event.
* ``/v2/events/stream?job_id=&since_id=N`` does the same for every run (or one job's,
  by id or name) until the client leaves; without ``since_id`` it starts from now, and
  the handshake response says where "now" is (``Termjobs-Since-Id``), so a client that
  loses the connection before its first event can resume from there without a gap.

Credentials are the REST API's headers or, for browsers (which cannot set headers on a
websocket), the subprotocol ``termjobs.bearer.<token, base64url>`` offered beside
``termjobs`` (which the handshake then selects), or a ``token`` query parameter.

Each message is one run-event object plus ``job_id``. The subscription is opened
*before* the replay and live events already replayed are skipped by id, so there is no
gap and no duplicate between replay and live. Close codes: 4401 bad credentials, 4404
unknown run or job, 4408 the client fell behind (reconnect with ``since_id``), 1001
server shutting down, 1000 run finished.

At most ``--max-subscribers`` streams are open at once; the handshake of one more is
answered ``503`` with ``Retry-After`` (an HTTP answer, not a websocket close).
"""

from __future__ import annotations

import json
from collections import OrderedDict

import trio
from quart import Quart, Response, websocket

from termjobs import wire
from termjobs.actors.hub import CloseReason, Subscription
from termjobs.errors import InvalidRequest
from termjobs.http.auth import STREAM_PROTOCOL, is_authorised, subprotocol_token
from termjobs.http.params import non_negative_int
from termjobs.http.responses import error_response
from termjobs.model import TERMINAL_EVENTS, RunEvent
from termjobs.services import Services

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_NOT_FOUND = 4404
CLOSE_LAGGED = 4408

REPLAY_PAGE = 1000
#: Handshake response header of a firehose opened without since_id: the id it starts after.
SINCE_ID_HEADER = "Termjobs-Since-Id"


class _Closed(Exception):
    """Internal: end the stream with this close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


class Streams:
    """What the open streams share: a count against ``--max-subscribers``, and each
    event's frame, serialised once for every subscriber (a bounded cache: with many
    subscribers, serialising each event once per subscriber cost more than sending)."""

    def __init__(self, limit: int, *, cached_frames: int = 4096) -> None:
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._frames: OrderedDict[int, str] = OrderedDict()
        self._cached = cached_frames

    def frame(self, event: RunEvent) -> str:
        """The websocket message of ``event``."""
        text = self._frames.get(event.id)
        if text is None:
            text = json.dumps(wire.event_json(event, with_job=True), separators=(",", ":"))
            self._frames[event.id] = text
            if len(self._frames) > self._cached:
                self._frames.popitem(last=False)
        return text

    def take(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open -= 1


def register(app: Quart, services: Services) -> Streams:
    """Add the websocket routes to ``app``; what their streams share."""
    slots = Streams(services.settings.limits.max_subscribers)

    async def serve(run_id: str | None) -> Response | None:
        if not slots.take():
            return error_response(
                f"too many live streams are open ({slots.limit}, --max-subscribers); retry shortly",
                503,
                "unavailable_error",
                {"Retry-After": "5"},
            )
        try:
            await _serve(services, slots, run_id=run_id)
        finally:
            slots.give_back()
        return None

    @app.websocket("/v2/runs/<run_id>/events/stream")
    async def run_stream(run_id: str) -> Response | None:
        return await serve(run_id)

    @app.websocket("/v2/events/stream")
    async def all_stream() -> Response | None:
        return await serve(None)

    return slots


async def _serve(services: Services, streams: Streams, *, run_id: str | None) -> None:
    now: int | None = None
    if run_id is None and "since_id" not in websocket.args and _is_authorised(services):
        # No since_id on the firehose means "from now on": replaying the whole history
        # by default could mean millions of events. "Now" is told to the client.
        now = await services.storage.max_event_id()
    protocol = STREAM_PROTOCOL if STREAM_PROTOCOL in websocket.requested_subprotocols else None
    await websocket.accept(
        headers={SINCE_ID_HEADER: str(now)} if now is not None else None, subprotocol=protocol
    )
    try:
        _authorise(services)
        since_id = _since_id() if now is None else now
        if run_id is not None:
            await _stream_run(services, streams, run_id, since_id)
        else:
            job_id = await _job_filter(services)
            await _stream_all(services, streams, job_id, since_id)
    except _Closed as closed:
        await websocket.close(closed.code, closed.reason)


def _is_authorised(services: Services) -> bool:
    token = subprotocol_token(websocket.requested_subprotocols) or websocket.args.get("token", "")
    return is_authorised(services.settings, websocket.headers, token)


def _authorise(services: Services) -> None:
    if not _is_authorised(services):
        raise _Closed(CLOSE_UNAUTHORIZED, "invalid authentication credentials")


def _since_id() -> int:
    try:
        return non_negative_int(websocket.args, "since_id", 0)
    except InvalidRequest as exc:
        raise _Closed(CLOSE_BAD_REQUEST, exc.message) from None


async def _job_filter(services: Services) -> str | None:
    ref = websocket.args.get("job_id", "").strip()
    if not ref:
        return None
    job = await services.storage.resolve_job(ref)
    if job is None:
        raise _Closed(CLOSE_NOT_FOUND, "job not found")
    return job.id


async def _stream_run(services: Services, streams: Streams, run_id: str, since_id: int) -> None:
    last = since_id
    while True:
        with services.hub.subscribe(run_id=run_id, buffer=services.settings.stream_buffer) as sub:
            run = await services.storage.get_run(run_id, full=False)
            if run is None:
                raise _Closed(CLOSE_NOT_FOUND, "run not found")
            last, finished = await _replay(services, streams, last, run_id=run_id)
            # A run that was already terminal when we subscribed has all its events stored.
            if finished or run.status.terminal:
                raise _Closed(CLOSE_NORMAL, "run finished")
            if sub.closed is CloseReason.LAGGED:
                continue  # more arrived during the replay than we buffer: read on from storage
            await _live(streams, sub, last, stop_at_terminal=True)


async def _stream_all(services: Services, streams: Streams, job_id: str | None, since_id: int) -> None:
    last = since_id
    while True:
        with services.hub.subscribe(job_id=job_id, buffer=services.settings.stream_buffer) as sub:
            last, _ = await _replay(services, streams, last, job_id=job_id)
            if sub.closed is CloseReason.LAGGED:
                continue  # more arrived during the replay than we buffer: read on from storage
            await _live(streams, sub, last, stop_at_terminal=False)


async def _replay(
    services: Services,
    streams: Streams,
    since_id: int,
    *,
    run_id: str | None = None,
    job_id: str | None = None,
) -> tuple[int, bool]:
    """Send stored events after ``since_id``; the last id sent and whether a terminal
    event was among them."""
    last, finished = since_id, False
    while events := await services.storage.events_after(
        last, run_id=run_id, job_id=job_id, limit=REPLAY_PAGE
    ):
        for event in events:
            await websocket.send(streams.frame(event))
            finished = finished or event.event_type in TERMINAL_EVENTS
        last = events[-1].id
        if len(events) < REPLAY_PAGE:
            break
    return last, finished


async def _live(streams: Streams, sub: Subscription, last: int, *, stop_at_terminal: bool) -> None:
    async for event in sub.receive:
        if event.id <= last:
            continue  # already sent by the replay
        await websocket.send(streams.frame(event))
        last = event.id
        if stop_at_terminal and event.event_type in TERMINAL_EVENTS:
            await _send_queued(streams, sub, last)
            raise _Closed(CLOSE_NORMAL, "run finished")
    if sub.closed is CloseReason.LAGGED:
        raise _Closed(CLOSE_LAGGED, "lagged; reconnect with since_id")
    raise _Closed(CLOSE_GOING_AWAY, "server shutting down")


async def _send_queued(streams: Streams, sub: Subscription, last: int) -> None:
    """Events committed together with the terminal one (``retry_scheduled``) are
    delivered too; they are already in the channel, so this never waits for more."""
    while True:
        try:
            event = sub.receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        if event.id > last:
            await websocket.send(streams.frame(event))
            last = event.id
