"""Websocket event streams against a real hypercorn server (trio-websocket clients)."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.lowlevel
import trio_websocket
from sqlalchemy.engine import URL
from trio_websocket import ConnectionClosed, WebSocketConnection

from termjobs.config import Settings
from termjobs.jobdef import Job
from termjobs.jobspec import definition_for_create
from termjobs.model import EventType, ExitReason, Run, RunStatus
from termjobs.rundomain import Ending, Outcome
from termjobs.service import open_services, serve_http
from termjobs.services import Services
from tests.helpers import EPOCH, job_body, make_job, make_run

TOKEN = "stream-token"
LIMIT_S = 30


@dataclass
class Live:
    services: Services
    host: str
    port: int
    stop: trio.Event

    def resource(self, path: str, **query: object) -> str:
        query.setdefault("token", TOKEN)
        args = "&".join(f"{k}={v}" for k, v in query.items() if v is not None)
        return f"{path}?{args}" if args else path

    async def connect(self, nursery: trio.Nursery, path: str, **query: object) -> WebSocketConnection:
        return await trio_websocket.connect_websocket(
            nursery, self.host, self.port, self.resource(path, **query), use_ssl=False
        )


async def _serve(settings: Settings, stop: trio.Event, *, task_status: trio.TaskStatus[Live]) -> None:
    async with open_services(settings, base_env={}) as services, trio.open_nursery() as nursery:
        urls = await nursery.start(
            lambda task_status: serve_http(services, shutdown_trigger=stop.wait, task_status=task_status)
        )
        host, port = urls[0].removeprefix("http://").rsplit(":", 1)
        task_status.started(Live(services, host, int(port), stop))


@pytest.fixture
async def live(sqlite_url: URL, nursery: trio.Nursery) -> AsyncIterator[Live]:
    settings = Settings(
        db_url=sqlite_url,
        port=0,
        auth="bearer",
        token=TOKEN,
        token_source="flag",
        shutdown_grace=1,
        stream_buffer=64,
    )
    stop = trio.Event()
    server: Live = await nursery.start(_serve, settings, stop)
    yield server
    stop.set()


async def seed(live: Live, name: str = "seed") -> tuple[Job, Run]:
    job = make_job(name)
    await live.services.storage.create_job(job)
    return job, await live.services.storage.create_run(make_run(job))


async def add_events(live: Live, run: Run, count: int, *, per_write: int = 10) -> list[int]:
    ids: list[int] = []

    async def add(i: int) -> None:
        event = await live.services.storage.add_event(run, EventType.OUTPUT, None, {"n": i}, now=EPOCH)
        ids.append(event.id)

    for start in range(0, count, per_write):
        async with trio.open_nursery() as nursery:  # committed together (group commit)
            for i in range(start, min(count, start + per_write)):
                nursery.start_soon(add, i)
        await trio.lowlevel.checkpoint()
    return sorted(ids)


@dataclass(frozen=True)
class Closed:
    code: int
    reason: str | None


async def receive_until_closed(ws: WebSocketConnection) -> tuple[list[dict[str, Any]], Closed]:
    messages: list[dict[str, Any]] = []
    while True:
        try:
            messages.append(json.loads(await ws.get_message()))
        except ConnectionClosed as exc:
            await close_transport(ws)
            assert exc.reason is not None
            return messages, Closed(exc.reason.code, exc.reason.reason)


async def close_transport(ws: WebSocketConnection) -> None:
    """Close the TCP stream too: trio-websocket 0.12 leaves a client's socket open when
    the *server* ends the connection (its reader stops on EOF without closing it)."""
    await ws.aclose()
    stream: trio.abc.AsyncResource = ws._stream  # no public accessor
    await stream.aclose()


async def stored_ids(live: Live) -> list[int]:
    return [e.id for e in await live.services.storage.events_after(0, limit=100_000)]


async def test_replay_then_live_has_no_gap_and_no_duplicate_under_concurrent_writes(live: Live) -> None:
    _, run = await seed(live)
    await add_events(live, run, 300)
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(add_events, live, run, 300)  # written while the client replays
            ws = await live.connect(nursery, "/v2/events/stream", since_id=0)
            received: list[dict[str, Any]] = []
            while len(received) < 601:
                received.append(json.loads(await ws.get_message()))
            await ws.aclose()
    assert [m["id"] for m in received] == await stored_ids(live)
    assert received[1] == {**received[1], "run_id": run.id, "job_id": run.job_id, "event_type": "output"}


async def test_a_run_stream_replays_then_streams_then_closes_after_the_terminal_event(live: Live) -> None:
    job = await live.services.supervisor.create_job(
        definition_for_create(job_body("echo", runner_config={"command": "echo", "args": ["hi"]}))
    )
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            run = await live.services.supervisor.trigger(job.id)
            ws = await live.connect(nursery, f"/v2/runs/{run.id}/events/stream")
            messages, closed = await receive_until_closed(ws)
    assert [m["event_type"] for m in messages] == ["queued", "claimed", "running", "output", "succeeded"]
    assert messages[3]["data"] == {"stream": "stdout", "text": "hi\n"}
    assert all(m["job_id"] == job.id for m in messages)
    assert closed.code == 1000


async def test_a_finished_run_stream_replays_and_closes_and_since_id_skips(live: Live) -> None:
    _, run = await seed(live)
    ids = await add_events(live, run, 5)
    running = await live.services.storage.start_run(run, worker_id="w", now=EPOCH)
    assert running is not None
    outcome = Outcome(RunStatus.SUCCEEDED, ExitReason.NATURAL_COMPLETION)
    await live.services.storage.finish_runs([Ending(running, outcome)], now=EPOCH)
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            ws = await live.connect(nursery, f"/v2/runs/{run.id}/events/stream", since_id=ids[2])
            messages, closed = await receive_until_closed(ws)
            ws = await live.connect(nursery, f"/v2/runs/{run.id}/events/stream", since_id=10**6)
            nothing, closed_again = await receive_until_closed(ws)
    assert [m["id"] for m in messages][:2] == ids[3:]
    assert [m["event_type"] for m in messages][2:] == ["claimed", "running", "succeeded"]
    assert closed.code == 1000 and nothing == [] and closed_again.code == 1000


async def test_resume_with_since_id_after_a_disconnect_loses_nothing(live: Live) -> None:
    _, run = await seed(live)
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            ws = await live.connect(nursery, "/v2/events/stream", since_id=0)
            await add_events(live, run, 50)
            first = [json.loads(await ws.get_message()) for _ in range(20)]
            await ws.aclose()  # dropped mid-stream
            await add_events(live, run, 50)  # written while disconnected
            ws = await live.connect(nursery, "/v2/events/stream", since_id=first[-1]["id"])
            rest = [json.loads(await ws.get_message()) for _ in range(101 - 20)]
            await ws.aclose()
    assert [m["id"] for m in first + rest] == await stored_ids(live)


async def test_a_slow_subscriber_is_closed_as_lagged_while_a_fast_one_gets_everything(live: Live) -> None:
    _, run = await seed(live)
    base = max(await stored_ids(live))
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            fast = await live.connect(nursery, "/v2/events/stream", since_id=base)
            slow = await _slow_client(live, nursery, since_id=base)
            fast_ids: list[int] = []
            for _ in range(150):  # write a little at a time, letting the fast reader keep up
                written = await add_events(live, run, 8, per_write=8)
                while not fast_ids or fast_ids[-1] < written[-1]:
                    fast_ids.append(json.loads(await fast.get_message())["id"])
            slow_messages, closed = await receive_until_closed(slow)
            await fast.aclose()
    everything = [i for i in await stored_ids(live) if i > base]
    assert fast_ids == everything
    assert closed.code == 4408 and closed.reason == "lagged; reconnect with since_id"
    got = [m["id"] for m in slow_messages]
    assert got == everything[: len(got)] and len(got) < len(everything)  # a gap-free prefix


async def _slow_client(live: Live, nursery: trio.Nursery, *, since_id: int) -> WebSocketConnection:
    """A client that does not read, with a tiny receive window so the server feels it."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    await sock.connect((live.host, live.port))
    stream = trio.SocketStream(sock)
    return await trio_websocket.wrap_client_stream(
        nursery,
        stream,
        live.host,
        live.resource("/v2/events/stream", since_id=since_id),
        message_queue_size=1,
    )


@pytest.mark.parametrize(
    ("query", "headers", "code"),
    [
        ({"token": None}, [], 4401),
        ({"token": "wrong"}, [], 4401),
        ({"token": None}, [("Authorization", f"Bearer {TOKEN}")], None),
        ({"token": None}, [("x-api-key", TOKEN)], None),
        ({}, [], None),
    ],
)
async def test_stream_auth(
    live: Live, query: dict[str, object], headers: list[tuple[str, str]], code: int | None
) -> None:
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.connect_websocket(
                nursery,
                live.host,
                live.port,
                live.resource("/v2/events/stream", **query),
                use_ssl=False,
                extra_headers=[(k.encode(), v.encode()) for k, v in headers],
            )
            if code is None:
                _, run = await seed(live)
                await add_events(live, run, 1)
                assert json.loads(await ws.get_message())["run_id"] == run.id
                await ws.aclose()
            else:
                _, closed = await receive_until_closed(ws)
                assert closed.code == code and closed.reason == "invalid authentication credentials"


def bearer_protocol(token: str) -> str:
    return "termjobs.bearer." + base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("protocols", "code"),
    [
        (["termjobs", bearer_protocol(TOKEN)], None),
        (["termjobs", bearer_protocol("wrong")], 4401),
        (["termjobs", "termjobs.bearer.%%%"], 4401),
        (["termjobs"], 4401),
    ],
)
async def test_a_browser_passes_the_token_in_a_subprotocol(
    live: Live, protocols: list[str], code: int | None
) -> None:
    # Browsers cannot set headers on a websocket; the token must not be in the URL.
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.connect_websocket(
                nursery,
                live.host,
                live.port,
                live.resource("/v2/events/stream", token=None),
                use_ssl=False,
                subprotocols=protocols,
            )
            assert ws.subprotocol == "termjobs"  # selected, or a browser drops the connection
            if code is None:
                _, run = await seed(live)
                await add_events(live, run, 1)
                assert json.loads(await ws.get_message())["run_id"] == run.id
                await ws.aclose()
            else:
                _, closed = await receive_until_closed(ws)
                assert closed.code == code and closed.reason == "invalid authentication credentials"


async def test_unknown_run_or_job_closes_with_4404(live: Live) -> None:
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            for path, query, reason in (
                ("/v2/runs/run_nope/events/stream", {}, "run not found"),
                ("/v2/events/stream", {"job_id": "nope"}, "job not found"),
            ):
                ws = await live.connect(nursery, path, **query)
                _, closed = await receive_until_closed(ws)
                assert (closed.code, closed.reason) == (4404, reason)


async def test_a_job_filter_by_name_only_sends_that_jobs_events(live: Live) -> None:
    _, mine = await seed(live, "mine")
    _, other = await seed(live, "other")
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            ws = await live.connect(nursery, "/v2/events/stream", job_id="mine", since_id=0)
            await add_events(live, other, 5)
            await add_events(live, mine, 2)
            got = [json.loads(await ws.get_message()) for _ in range(3)]
            await ws.aclose()
    assert {m["run_id"] for m in got} == {mine.id}


async def test_shutdown_closes_streams_with_1001_promptly(live: Live) -> None:
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            ws = await live.connect(nursery, "/v2/events/stream")
            await trio.sleep(0.1)
            started = trio.current_time()
            live.stop.set()
            _, closed = await receive_until_closed(ws)
    assert closed.code == 1001 and closed.reason == "server shutting down"
    assert trio.current_time() - started < 1.5


async def test_a_firehose_without_since_id_starts_from_now_and_says_where_that_is(live: Live) -> None:
    _, run = await seed(live)
    before = await add_events(live, run, 3)
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            ws = await live.connect(nursery, "/v2/events/stream")
            headers = dict(ws.handshake_headers)
            after = await add_events(live, run, 2)
            got = [json.loads(await ws.get_message())["id"] for _ in range(2)]
            await ws.aclose()
            refused = await live.connect(nursery, "/v2/events/stream", token="wrong")
            refused_headers = dict(refused.handshake_headers)
            await receive_until_closed(refused)
    assert headers[b"termjobs-since-id"] == str(before[-1]).encode()  # resume point, no gap
    assert got == after
    assert b"termjobs-since-id" not in refused_headers  # nothing is told without credentials
