"""Malformed input never gets a 5xx: the reproductions of the reliability issue and
their families, sent to the real server on SQLite and on PostgreSQL (which refuses NUL
characters that SQLite would store)."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from sqlalchemy.engine import URL

from termjobs.testing import serve_process
from tests.e2e.server import TOKEN, Server

LIMIT_S = 60
JOB = '{"name":"ok","runner_type":"program","runner_config":{"command":"true"},"trigger_type":"manual"%s}'


@asynccontextmanager
async def server_on(db_url: URL) -> AsyncIterator[Server]:
    db = db_url.render_as_string(hide_password=False)
    async with serve_process("--db", db, token=TOKEN, teardown=signal.SIGKILL) as server:
        yield server


async def exchange(server: Server, request: bytes) -> tuple[int, bytes]:
    """Send one raw request (``Connection: close``); its status and body."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    received = b""
    with trio.fail_after(10):
        await stream.send_all(request)
        while chunk := await stream.receive_some(65536):
            received += chunk
            if b"101 Switching" in received and b"\r\n\r\n" in received:
                break
    await stream.aclose()
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def raw(method: str, target: str, *, host: str = "127.0.0.1", auth: bool = True, body: str = "") -> bytes:
    lines = f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    lines += f"Authorization: Bearer {TOKEN}\r\n" if auth else ""
    if body:
        lines += f"Content-Type: application/json\r\nContent-Length: {len(body.encode())}\r\n"
    return (lines + "\r\n" + body).encode()


WEBSOCKET = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


@pytest.mark.parametrize("auth", [True, False])
async def test_a_host_header_with_an_empty_label_is_a_400(db_url: URL, auth: bool) -> None:
    with trio.fail_after(LIMIT_S):
        async with server_on(db_url) as server:
            for host in ("a..b", ".", ".example.com", "..:8080", "a" * 64 + ".com"):
                for target in ("/healthz", "/v2/jobs", "/no/such/route"):
                    status, body = await exchange(server, raw("GET", target, host=host, auth=auth))
                    assert status == 400, (host, target, body)
                    assert b"the Host header is not a valid host name" in body
            handshake = raw("GET", "/v2/events/stream", host="a..b", auth=auth)
            handshake = handshake.replace(b"Connection: close\r\n", WEBSOCKET.encode())
            assert (await exchange(server, handshake))[0] == 400
            assert "Traceback" not in server.log


async def test_nul_anywhere_in_the_url_or_body_is_a_400(db_url: URL) -> None:
    with trio.fail_after(LIMIT_S):
        async with server_on(db_url) as server:
            for method, target in [
                ("GET", "/v2/jobs/a%00b"),
                ("POST", "/v2/jobs/a%00/trigger"),
                ("DELETE", "/v2/jobs/%00"),
                ("GET", "/v2/jobs?name=%00"),
                ("GET", "/v2/jobs?id_prefix=x%00"),
                ("GET", "/v2/runs?job_id=%00"),
                ("GET", "/v2/runs/run_%00/events"),
            ]:
                status, body = await exchange(server, raw(method, target))
                assert status == 400 and b"NUL character" in body, (target, body)
            status, body = await exchange(server, raw("PATCH", "/v2/jobs/a%00", body=JOB % ""))
            assert status == 400 and b"NUL character" in body  # its body read and dropped
            for extra in (
                ',"labels":{"k":"v\\u0000"}',
                ',"labels":{"\\u0000":1}',
                ',"schedule_timezone":"UTC\\u0000"',
            ):
                status, body = await exchange(server, raw("POST", "/v2/jobs", body=JOB % extra))
                assert status == 400 and b"NUL character" in body, (extra, body)
            stream = raw("GET", "/v2/events/stream?job_id=%00").replace(
                b"Connection: close\r\n", WEBSOCKET.encode()
            )
            assert (await exchange(server, stream))[0] == 400
            assert "Traceback" not in server.log


async def test_numbers_out_of_range_are_a_400(db_url: URL) -> None:
    with trio.fail_after(LIMIT_S):
        async with server_on(db_url) as server:
            for extra, message in (
                (',"timeout_seconds":' + "9" * 5000, b"a number has 5000 digits"),
                (',"labels":{"n":' + "1" * 4400 + "}", b"a number has 4400 digits"),
                (',"labels":[1e400]', b"out of range"),
                (',"max_concurrent_runs":' + "9" * 30, b"max_concurrent_runs"),
            ):
                status, body = await exchange(server, raw("POST", "/v2/jobs", body=JOB % extra))
                assert status == 400 and message in body, (extra[:40], body)
            for query in ("limit=" + "9" * 5000, "offset=-1", "limit=1e3"):
                status, _ = await exchange(server, raw("GET", f"/v2/jobs?{query}"))
                assert status == 400, query
            assert "Traceback" not in server.log


async def test_an_unsupported_transfer_coding_is_a_400_not_a_501(sqlite_url: URL) -> None:
    with trio.fail_after(LIMIT_S):
        async with server_on(sqlite_url) as server:
            request = raw("POST", "/v2/jobs").replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: gzip\r\n\r\n")
            assert (await exchange(server, request))[0] == 400
            async with server.client() as client:
                assert (await client.get("/healthz")).status_code == 200
