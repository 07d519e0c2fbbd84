"""Run the real ``term-llm serve jobs`` process on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

TOKEN = "e2e-token"
READY_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running server process and what it printed on stderr."""

    process: trio.Process
    url: str
    stderr: bytearray = field(default_factory=bytearray)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)

    @property
    def log(self) -> str:
        return self.stderr.decode(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM, *, within: float = 30) -> int:
        """Send ``sig`` and wait for the exit status."""
        self.process.send_signal(sig)
        with trio.fail_after(within):
            return await self.process.wait()


@asynccontextmanager
async def serve(db: Path, *extra: str, port: int | None = None) -> AsyncIterator[Server]:
    """Start the server, wait for its banner, and make sure it is gone afterwards."""
    port = port or free_port()
    argv = [
        sys.executable,
        "-m",
        "termjobs",
        "serve",
        "jobs",
        "--port",
        str(port),
        "--db",
        str(db),
        "--token",
        TOKEN,
        *extra,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await trio.lowlevel.open_process(
        argv, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env
    )
    server = Server(process=process, url=f"http://127.0.0.1:{port}")
    ready = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, server, ready)
            with trio.fail_after(READY_TIMEOUT_S):
                await ready.wait()
            yield server
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(10):
                await process.wait()
        if process.stderr is not None:
            await process.stderr.aclose()


async def _drain(server: Server, ready: trio.Event) -> None:
    assert server.process.stderr is not None
    while chunk := await server.process.stderr.receive_some(65536):
        server.stderr += chunk
        if b"term-llm serve listening on" in server.stderr:
            ready.set()
    ready.set()  # exited early: let the caller see why
