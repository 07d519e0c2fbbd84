"""No client, however malformed or rude, stops the server or stalls other connections.

Each test drives the real server process with raw sockets (real time, bounded), then
checks that it still answers. The reproductions are those of the reliability issue:
a body shorter than its Content-Length followed by a half-close (which used to end
the whole process), a body that arrives after the response (which used to stall the
keep-alive connection), and connections that were never closed.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.e2e.server import TOKEN, Server, serve, wait_for_metric

LIMIT_S = 60
AUTH = f"Authorization: Bearer {TOKEN}\r\n"
JOB = b'{"name":"victim","runner_type":"program","runner_config":{"command":"true"},"trigger_type":"manual"}'


def routes(job: str, run: str) -> list[tuple[str, str]]:
    """Every route of the API (method, path), websockets as their GET upgrade."""
    return [
        ("POST", "/v2/jobs"),
        ("GET", "/v2/jobs"),
        ("GET", f"/v2/jobs/{job}"),
        ("PATCH", f"/v2/jobs/{job}"),
        ("DELETE", "/v2/jobs/no-such-job"),
        ("POST", f"/v2/jobs/{job}/trigger"),
        ("POST", f"/v2/jobs/{job}/pause"),
        ("POST", f"/v2/jobs/{job}/resume"),
        ("GET", "/v2/runs"),
        ("GET", f"/v2/runs/{run}"),
        ("GET", f"/v2/runs/{run}/events"),
        ("POST", f"/v2/runs/{run}/cancel"),
        ("GET", f"/v2/runs/{run}/events/stream"),
        ("GET", "/v2/events/stream"),
        ("GET", "/healthz"),
        ("GET", "/no/such/route"),
    ]


async def connect(server: Server) -> trio.SocketStream:
    port = int(server.url.rsplit(":", 1)[1])
    return await trio.open_tcp_stream("127.0.0.1", port)


def reset(stream: trio.SocketStream) -> None:
    """Close with RST instead of FIN (SO_LINGER 0)."""
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


async def read_until_closed(stream: trio.SocketStream, within: float) -> tuple[bytes, bool]:
    """What the server sent, and whether it closed the connection within ``within``."""
    received = b""
    with trio.move_on_after(within):
        try:
            while chunk := await stream.receive_some(65536):
                received += chunk
        except trio.BrokenResourceError:
            pass
        return received, True
    return received, False


async def read_response(stream: trio.SocketStream, within: float = 10) -> bytes:
    """One whole response with a Content-Length body."""
    data = b""
    with trio.fail_after(within):
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += await stream.receive_some(65536)
    return head


async def still_serving(server: Server) -> None:
    assert server.process.returncode is None, server.log
    async with server.client() as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/v2/jobs")).status_code == 200


@asynccontextmanager
async def victim(tmp_path: Path, *extra: str) -> AsyncIterator[tuple[Server, str, str]]:
    """A server with one job and one finished run."""
    async with serve(tmp_path / "jobs.db", *extra) as server, server.client() as client:
        headers = {"Content-Type": "application/json"}
        job = (await client.post("/v2/jobs", content=JOB, headers=headers)).json()
        run = (await client.post(f"/v2/jobs/{job['id']}/trigger")).json()
        yield server, job["id"], run["id"]


def request_head(method: str, path: str, *, auth: bool, length: int | None = None) -> bytes:
    lines = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (AUTH if auth else "")
    if path.endswith("stream"):
        lines += "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        lines += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    if length is not None:
        lines += f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    return (lines + "\r\n").encode()


async def short_body_then_half_close(server: Server, method: str, path: str, auth: bool) -> None:
    stream = await connect(server)
    await stream.send_all(request_head(method, path, auth=auth, length=100) + b"{}")
    await stream.send_eof()
    await read_until_closed(stream, within=10)
    await stream.aclose()


async def short_body_then_reset(server: Server, method: str, path: str, auth: bool) -> None:
    stream = await connect(server)
    await stream.send_all(request_head(method, path, auth=auth, length=100) + b"{}")
    await trio.sleep(0.01)
    reset(stream)


async def truncated_head_then_half_close(server: Server, method: str, path: str, auth: bool) -> None:
    stream = await connect(server)
    head = request_head(method, path, auth=auth)
    await stream.send_all(head[: len(head) // 2])
    await stream.send_eof()
    await read_until_closed(stream, within=10)
    await stream.aclose()


async def truncated_head_then_reset(server: Server, method: str, path: str, auth: bool) -> None:
    stream = await connect(server)
    head = request_head(method, path, auth=auth)
    await stream.send_all(head[: len(head) // 2])
    reset(stream)


async def garbage(server: Server, method: str, path: str, auth: bool) -> None:
    stream = await connect(server)
    await stream.send_all(request_head(method, path, auth=auth)[:20] + bytes(range(256)) + b"\r\n\r\n")
    await read_until_closed(stream, within=10)
    await stream.aclose()


async def test_malformed_requests_on_every_route_never_stop_the_server(tmp_path: Path) -> None:
    abuses = [
        short_body_then_half_close,
        short_body_then_reset,
        truncated_head_then_half_close,
        truncated_head_then_reset,
        garbage,
    ]
    with trio.fail_after(LIMIT_S):
        async with victim(tmp_path) as (server, job, run):
            for abuse in abuses:
                async with trio.open_nursery() as nursery:
                    for method, path in routes(job, run):
                        for auth in (True, False):
                            for _ in range(3):
                                nursery.start_soon(abuse, server, method, path, auth)
                await still_serving(server)
            assert "Traceback" not in server.log, server.log


async def test_a_body_sent_after_the_response_does_not_stall_the_connection(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with victim(tmp_path) as (server, job, run):
            for path in (f"/v2/jobs/{job}/pause", f"/v2/jobs/{job}/resume", f"/v2/runs/{run}/cancel"):
                stream = await connect(server)
                await stream.send_all(request_head("POST", path, auth=True, length=2))
                await trio.sleep(0.3)  # the body comes in a second write, a moment later
                await stream.send_all(b"{}")
                assert b" 200" in (await read_response(stream)).split(b"\r\n")[0]
                await stream.send_all(request_head("GET", "/healthz", auth=False))
                assert b" 200" in (await read_response(stream, within=5)).split(b"\r\n")[0]
                await stream.aclose()


async def test_connections_are_closed_when_they_should_be(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with victim(tmp_path, "--keep-alive-timeout", "1") as (server, _, _):
            for request in (
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                b"GET /healthz HTTP/1.0\r\n\r\n",
            ):
                stream = await connect(server)
                await stream.send_all(request)
                received, closed = await read_until_closed(stream, within=3)
                assert received.startswith(b"HTTP/1.1 200") and closed
                await stream.aclose()
            # An idle keep-alive connection, and one that never finishes its request head.
            idle, slow = await connect(server), await connect(server)
            await idle.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            await slow.send_all(b"GET /healthz HTTP/1.1\r\nHo")
            start = trio.current_time()
            for stream in (idle, slow):
                _, closed = await read_until_closed(stream, within=5)
                assert closed
                await stream.aclose()
            assert trio.current_time() - start < 4


async def test_a_stop_closes_idle_keep_alive_connections_at_once(tmp_path: Path) -> None:
    # Keep-alive 60 s: an idle connection is closed when the server stops.
    with trio.fail_after(LIMIT_S):
        async with victim(tmp_path, "--keep-alive-timeout", "60") as (server, _, _):
            idle = await connect(server)
            await idle.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 200" in (await read_response(idle)).split(b"\r\n")[0]
            closed_after: list[float] = []

            async def time_the_close(start: float) -> None:
                _, closed = await read_until_closed(idle, within=20)
                if closed:
                    closed_after.append(trio.current_time() - start)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(time_the_close, trio.current_time())
                # timed apart from the stop: the exit after it may be slow on a busy machine
                assert await server.stop(within=20) == 0
            await idle.aclose()
    # closed as the stop began, not after the grace that ends what is left (2 s)
    assert closed_after and closed_after[0] < 1.5, closed_after


async def test_clients_that_leave_mid_request_give_their_connection_back(tmp_path: Path) -> None:
    # --max-connections 4, keep-alive 60 s: twelve clients that send a request and go
    # (closed or reset) before the answer; each one's place is free again at once.
    with trio.fail_after(LIMIT_S):
        async with victim(tmp_path, "--max-connections", "4", "--keep-alive-timeout", "60") as (server, _, _):
            for round_ in range(3):
                for _ in range(4):
                    stream = await connect(server)
                    await stream.send_all(request_head("GET", "/v2/runs?summary=1", auth=True) + b"\r\n")
                    if round_ % 2:
                        reset(stream)
                    else:
                        await stream.aclose()
                with trio.move_on_after(0.5):
                    await trio.sleep_forever()  # real time: let the server see them go
            check = await connect(server)
            await check.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b" 200" in (await read_response(check)).split(b"\r\n")[0]
            await check.aclose()


async def test_slowloris_and_held_connections_do_not_lock_others_out(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with victim(tmp_path, "--max-connections", "20", "--keep-alive-timeout", "2") as (server, _, _):
            held = [await connect(server) for _ in range(20)]
            try:
                # Over the cap: a clear 503, not a hang or a refused connection.
                extra = await connect(server)
                await extra.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                received, closed = await read_until_closed(extra, within=5)
                assert received.startswith(b"HTTP/1.1 503") and b"too many open connections" in received
                assert closed
                await extra.aclose()

                async def drip(stream: trio.SocketStream) -> None:
                    # One byte of request head every 0.3 s: the keep-alive timeout ends it.
                    with trio.move_on_after(10):
                        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n":
                            try:
                                await stream.send_all(bytes([byte]))
                            except trio.BrokenResourceError:
                                return  # closed by the server, as it should be
                            await trio.sleep(0.3)
                    raise AssertionError("a slowloris connection was kept open for 10 s")

                async with trio.open_nursery() as nursery:
                    for stream in held:
                        nursery.start_soon(drip, stream)
                await still_serving(server)
            finally:
                for stream in held:
                    await stream.aclose()


async def test_streams_over_the_subscriber_cap_are_refused_with_503(tmp_path: Path) -> None:
    import trio_websocket

    with trio.fail_after(LIMIT_S):
        async with victim(tmp_path, "--max-subscribers", "3") as (server, _, _):
            url = server.url.replace("http://", "ws://") + f"/v2/events/stream?token={TOKEN}"
            async with trio.open_nursery() as nursery:
                held = [await trio_websocket.connect_websocket_url(nursery, url) for _ in range(3)]
                raw = await connect(server)
                await raw.send_all(request_head("GET", "/v2/events/stream", auth=True))
                received, _ = await read_until_closed(raw, within=5)
                await raw.aclose()
                assert received.startswith(b"HTTP/1.1 503"), received
                assert b"retry-after: 5" in received.lower() and b"--max-subscribers" in received
                await held[0].aclose()
                await wait_for_metric(server, "termjobs_stream_subscribers 2.0")  # it saw the close
                again = await trio_websocket.connect_websocket_url(nursery, url)
                for stream in (*held[1:], again):
                    await stream.aclose()
            await still_serving(server)
