"""Slow and hostile clients: nobody can hold the server back for everyone else.

1. **Subscribers that never read**: 50 websockets on the firehose whose owners never
   read, while chatty jobs print thousands of lines (``--stream-buffer 1024``). A normal
   subscriber measures delivery latency (its ``queued`` events of a job triggered every
   0.2 s), REST clients measure latency, first idle, then under the same chatty load
   without and with the slow subscribers. Invariants: REST and delivery medians with
   the slow subscribers within 2x of the same load without them (5 ms floor for timer
   noise: the jobs' own load is not the slow subscribers' doing);
   the normal subscriber gets every event; every slow one is closed (lagged); server
   RSS bounded (+300 MiB).
2. **Idle and half-open connections**: 200 connections that send nothing, half a request
   head, or half-close; REST latency stays within 2x idle and the server closes them all
   after ``--keep-alive-timeout``.
3. **Request flood**: 32 clients as fast as they can; no 5xx, and the server answers as
   fast as before once it ends.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_websocket

from drills._common import TOKEN, Report, client, database, drill_marker, main, program_job, server
from termjobs.testing import ServerProcess

SLOW_SUBSCRIBERS = 50
IDLE_CONNECTIONS = 200
KEEP_ALIVE_S = 5
WRITE_TIMEOUT_S = 5
FLOOR_MS = 5.0
#: A chatty program: lines printed one at a time (so most become events of their own).
CHATTY_LINES = 1500
CHATTY = (
    f'{sys.executable} -c "import time\nfor i in range({CHATTY_LINES}): '
    "print('line', i, 'x' * 60, flush=True); time.sleep(0.006)\""
)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def rest_latency(api: httpx.AsyncClient, path: str, count: int) -> float:
    """Median latency of ``count`` sequential GETs, in ms."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = await api.get(path)
        answer.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


class Subscriber:
    """A normal firehose subscriber: reads everything, notes each event's delivery delay."""

    def __init__(self, url: str, timed_job: str) -> None:
        self.url = url.replace("http://", "ws://") + f"/v2/events/stream?token={TOKEN}&since_id=0"
        self.timed_job = timed_job
        self.delays: list[float] = []
        self.received = 0
        self.run_ids: dict[str, int] = {}
        self.lagged = 0

    async def run(self) -> None:
        last = 0
        while True:
            url = self.url.replace("since_id=0", f"since_id={last}")
            async with trio_websocket.open_websocket_url(url, max_message_size=2**24) as ws:
                try:
                    while True:
                        event = json.loads(await ws.get_message())
                        self.received += 1
                        self.run_ids[event["run_id"]] = self.run_ids.get(event["run_id"], 0) + 1
                        last = max(last, event["id"])
                        if event["job_id"] == self.timed_job and event["event_type"] == "queued":
                            created = dt.datetime.fromisoformat(event["created_at"].replace("Z", "+00:00"))
                            self.delays.append((time.time() - created.timestamp()) * 1000)
                except trio_websocket.ConnectionClosed as closed:
                    if closed.reason and closed.reason.code == 4408:
                        self.lagged += 1
                        continue
                    raise

    def median_delay(self, since: int = 0) -> float:
        return statistics.median(self.delays[since:]) if len(self.delays) > since else 0.0


async def slow_subscriber(port: int) -> trio.SocketStream:
    """A firehose websocket that will never be read from (tiny receive buffer)."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", port))
    stream = trio.SocketStream(sock)
    await stream.send_all(
        f"GET /v2/events/stream?token={TOKEN} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode()
    )
    return stream


async def closed_by_server(stream: trio.SocketStream, within: float) -> bool:
    """Read what is buffered; whether the server has closed the connection."""
    with trio.move_on_after(within):
        try:
            while await stream.receive_some(1 << 20):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        return True
    return False


async def pinger(api: httpx.AsyncClient, job_id: str) -> None:
    """Trigger the ping job every 0.2 s: its events measure delivery to the normal subscriber."""
    while True:
        await api.post(f"/v2/jobs/{job_id}/trigger")
        await trio.sleep(0.2)


async def rest_until_done(
    api: httpx.AsyncClient, ping: str, runs: list[str], rss: list[float], pid: int = 0
) -> float:
    """Measure REST latency (and RSS) until ``runs`` have ended; the median (ms)."""
    medians: list[float] = []
    while True:
        medians.append(await rest_latency(api, f"/v2/jobs/{ping}", 20))
        if pid:
            rss.append(rss_mib(pid))
        states = [(await api.get(f"/v2/runs/{run}")).json()["status"] for run in runs]
        if all(state in ("succeeded", "failed") for state in states):
            return statistics.median(medians)


async def subscribers_phase(proc: ServerProcess, report: Report, short: bool, marker: str) -> None:
    async with client(proc) as api:
        ping_job = program_job(
            "ping", "echo pong", marker, concurrency_policy="allow", max_concurrent_runs=10
        )
        ping = (await api.post("/v2/jobs", json=ping_job)).json()["id"]
        chatty_job = program_job("chatty", CHATTY, marker, concurrency_policy="allow", max_concurrent_runs=16)
        chatty = (await api.post("/v2/jobs", json=chatty_job)).json()["id"]
        normal = Subscriber(proc.url, ping)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(normal.run)
            nursery.start_soon(pinger, api, ping)
            await trio.sleep(4)  # idle delivery latency (ping events only)
            idle_rest = await rest_latency(api, f"/v2/jobs/{ping}", 200)
            idle_stream = normal.median_delay()
            idle_rss = rss_mib(proc.process.pid)
            count = 4 if short else 8
            # The same chatty load without slow subscribers: the control.
            mark = len(normal.delays)
            control = [(await api.post(f"/v2/jobs/{chatty}/trigger")).json()["id"] for _ in range(count)]
            control_rest = await rest_until_done(api, ping, control, [])
            control_stream = normal.median_delay(mark)
            slow = [await slow_subscriber(proc.port) for _ in range(SLOW_SUBSCRIBERS)]
            mark = len(normal.delays)
            runs = [(await api.post(f"/v2/jobs/{chatty}/trigger")).json()["id"] for _ in range(count)]
            rss = [idle_rss]
            rest_median = await rest_until_done(api, ping, runs, rss, pid=proc.process.pid)
            loaded_stream = normal.median_delay(mark)
            stored = 0
            for run in runs:
                stored += (await api.get(f"/v2/runs/{run}/events", params={"limit": 1})).json()["total"]
            # the normal subscriber's backlog drains (bounded: what it misses is reported)
            with trio.move_on_after(30):
                while sum(normal.run_ids.get(run, 0) for run in runs) < stored:
                    await trio.sleep(0.1)
            results: list[bool] = []
            async with trio.open_nursery() as checks:

                async def check(stream: trio.SocketStream) -> None:
                    results.append(await closed_by_server(stream, WRITE_TIMEOUT_S + 10))
                    await stream.aclose()

                for stream in slow:
                    checks.start_soon(check, stream)
            nursery.cancel_scope.cancel()
    closed = sum(results)
    received = sum(normal.run_ids.get(run, 0) for run in runs)
    report.figure("chatty runs / lines printed", f"{len(runs)} / {len(runs) * CHATTY_LINES:,}")
    report.figure("events of the chatty runs (stored)", stored)
    report.figure("events the normal subscriber received", received)
    report.figure("normal subscriber lagged (reconnected)", normal.lagged)
    report.figure(
        "REST median: idle / chatty / chatty + slow subscribers (ms)",
        f"{idle_rest:.1f} / {control_rest:.1f} / {rest_median:.1f}",
    )
    report.figure(
        "stream delivery median: idle / chatty / chatty + slow (ms)",
        f"{idle_stream:.1f} / {control_stream:.1f} / {loaded_stream:.1f}",
    )
    report.figure("server RSS idle / max (MiB)", f"{idle_rss:.0f} / {max(rss):.0f}")
    report.figure("slow subscribers closed (lagged)", f"{closed} of {SLOW_SUBSCRIBERS}")
    report.expect(
        closed == SLOW_SUBSCRIBERS, f"only {closed} of {SLOW_SUBSCRIBERS} slow subscribers were closed"
    )
    report.expect(received >= stored, f"the normal subscriber got {received} events of {stored}")
    # REST latency and delivery are compared with the same job load without the slow
    # subscribers: what is measured is whether they hold the others back. On two cores
    # the chatty jobs alone can double REST latency against idle; that load is not theirs.
    # The latency ratios are timing: the full drill enforces them; the short one (CI, on
    # a shared machine) prints them as figures, as the benchmarks do.
    timing = report.expect if not short else (lambda ok, violation: None)
    timing(
        rest_median <= 2 * max(control_rest, FLOOR_MS),
        f"REST median {rest_median:.1f} ms with slow subscribers ({control_rest:.1f} without)",
    )
    timing(
        loaded_stream <= 2 * max(control_stream, FLOOR_MS),
        f"stream delivery median {loaded_stream:.1f} ms with slow subscribers ({control_stream:.1f} without)",
    )
    report.expect(max(rss) < idle_rss + 300, f"RSS grew from {idle_rss:.0f} to {max(rss):.0f} MiB")


async def idle_connections_phase(proc: ServerProcess, report: Report) -> None:
    async with client(proc) as api:
        idle = await rest_latency(api, "/healthz", 100)
        held: list[trio.SocketStream] = []
        for i in range(IDLE_CONNECTIONS):
            stream = await trio.open_tcp_stream("127.0.0.1", proc.port)
            if i % 3 == 1:
                await stream.send_all(b"GET /v2/jobs HTTP/1.1\r\nHost: x\r\nAuthori")
            elif i % 3 == 2:
                await stream.send_all(b"POST /v2/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
                await stream.send_eof()
            held.append(stream)
        loaded = await rest_latency(api, "/healthz", 100)
        started = trio.current_time()
        results: list[bool] = []
        async with trio.open_nursery() as nursery:

            async def check(stream: trio.SocketStream) -> None:
                results.append(await closed_by_server(stream, KEEP_ALIVE_S + 10))
                await stream.aclose()

            for stream in held:
                nursery.start_soon(check, stream)
        took = trio.current_time() - started
    report.figure("idle connections held", IDLE_CONNECTIONS)
    report.figure("REST median idle / with them held (ms)", f"{idle:.1f} / {loaded:.1f}")
    report.figure("closed by the server (s)", f"{sum(results)} within {took:.1f}")
    report.expect(
        loaded <= 2 * max(idle, FLOOR_MS), f"REST median {loaded:.1f} ms with idle connections held"
    )
    report.expect(
        sum(results) == IDLE_CONNECTIONS, f"{IDLE_CONNECTIONS - sum(results)} idle connections stayed open"
    )


async def flood_phase(proc: ServerProcess, report: Report, short: bool, marker: str) -> None:
    statuses: dict[int, int] = {}
    async with client(proc) as api:
        job = program_job("flood", "true", marker, concurrency_policy="queue", max_concurrent_runs=4)
        job_id = (await api.post("/v2/jobs", json=job)).json()["id"]
        before = await rest_latency(api, "/v2/jobs?limit=5", 50)

        async def hammer(i: int) -> None:
            # Raw keep-alive connections: a Python HTTP client would be the bottleneck.
            path, method = ("/v2/jobs?limit=5", "GET") if i % 4 else (f"/v2/jobs/{job_id}/trigger", "POST")
            request = f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
            stream = await trio.open_tcp_stream("127.0.0.1", proc.port)
            buffer = b""
            try:
                while True:
                    await stream.send_all(request)
                    while b"\r\n\r\n" not in buffer:
                        buffer += await stream.receive_some(65536)
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                    while len(buffer) < length:
                        buffer += await stream.receive_some(65536)
                    buffer = buffer[length:]
                    code = int(head.split(b" ", 2)[1])
                    statuses[code] = statuses.get(code, 0) + 1
            finally:
                await stream.aclose()

        started = trio.current_time()
        with trio.move_on_after(3 if short else 15):
            async with trio.open_nursery() as nursery:
                for i in range(32):
                    nursery.start_soon(hammer, i)
        took = trio.current_time() - started
        after = await rest_latency(api, "/v2/jobs?limit=5", 50)
    total = sum(statuses.values())
    report.figure("flood requests (32 clients)", f"{total} in {took:.0f}s ({total / took:.0f}/s)")
    report.figure("flood answers", dict(sorted(statuses.items())))
    report.expect_zero("flood 5xx", sum(n for code, n in statuses.items() if code >= 500))
    report.figure("REST median before / after the flood (ms)", f"{before:.1f} / {after:.1f}")
    report.expect(after <= 2 * max(before, FLOOR_MS), f"REST median {after:.1f} ms after the flood")


async def run(args: Any) -> list[Report]:
    report = Report("slow and hostile clients (sqlite)")
    marker = drill_marker()
    with (
        tempfile.TemporaryDirectory(prefix="termjobs-drill-") as tmp,
        database("sqlite", Path(tmp), None) as db,
    ):
        async with server(
            db,
            "--jobs-workers",
            "8",
            "--keep-alive-timeout",
            str(KEEP_ALIVE_S),
            "--write-timeout",
            str(WRITE_TIMEOUT_S),
            "--read-timeout",
            str(KEEP_ALIVE_S),
            "--stream-buffer",
            "1024",
        ) as proc:
            await subscribers_phase(proc, report, args.short, marker)
            await idle_connections_phase(proc, report)
            await flood_phase(proc, report, args.short, marker)
            report.expect(proc.process.returncode is None, "the server died")
    return [report]


if __name__ == "__main__":
    main(run, __doc__.splitlines()[0])
