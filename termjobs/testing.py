"""Support for tests and benchmarks: a real server process and a scratch PostgreSQL schema.

Both the end-to-end tests and the benchmark scripts drive the real ``term-llm serve
jobs`` process on a free loopback port; both need a fresh, disposable PostgreSQL
schema. This module is the one implementation of each.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import httpx
import trio
from sqlalchemy.engine import URL

#: What the server prints on stderr once it is serving.
READY_MARKER = b"term-llm serve listening on"
READY_TIMEOUT_S = 60.0


def free_port() -> int:
    """A TCP port that is free on the loopback interface now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerProcess:
    """A running ``term-llm serve jobs`` process and what it printed on stderr."""

    process: trio.Process
    port: int
    token: str | None = None
    stderr: bytearray = field(default_factory=bytearray)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, *, timeout: float = 10) -> httpx.AsyncClient:
        """An API client for this server (sending its token, if it has one)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    @property
    def log(self) -> str:
        return self.stderr.decode(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM, *, within: float = 30) -> int:
        """Send ``sig`` and wait for the exit status."""
        self.process.send_signal(sig)
        with trio.fail_after(within):
            return await self.process.wait()


def server_argv(*args: str, port: int, token: str | None = None) -> list[str]:
    """The command line of ``term-llm serve jobs`` on ``port`` (this interpreter)."""
    argv = [sys.executable, "-m", "termjobs", "serve", "jobs", "--port", str(port)]
    argv += ["--token", token] if token else []
    return argv + list(args)


@asynccontextmanager
async def serve_process(
    *args: str,
    token: str | None = None,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    teardown: signal.Signals = signal.SIGTERM,
) -> AsyncIterator[ServerProcess]:
    """Start ``term-llm serve jobs --port PORT [--token TOKEN] ARGS...``, wait until it
    serves, and make sure it is gone afterwards (``teardown``, then SIGKILL). Its stderr
    is collected."""
    port = port or free_port()
    argv = server_argv(*args, port=port, token=token)
    process = await trio.lowlevel.open_process(
        argv,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    server = ServerProcess(process=process, port=port, token=token)
    ready = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect, server, ready)
            with trio.fail_after(READY_TIMEOUT_S):
                await ready.wait()
            if READY_MARKER not in server.stderr:
                raise RuntimeError(f"the server exited before serving:\n{server.log}")
            yield server
            nursery.cancel_scope.cancel()
    finally:
        await _ensure_stopped(process, teardown)


async def _collect(server: ServerProcess, ready: trio.Event) -> None:
    assert server.process.stderr is not None
    while chunk := await server.process.stderr.receive_some(65536):
        server.stderr += chunk
        if READY_MARKER in server.stderr:
            ready.set()
    ready.set()  # exited early: let the caller see why


async def _ensure_stopped(process: trio.Process, sig: signal.Signals) -> None:
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(sig)
            with trio.move_on_after(30):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stderr is not None:
            await process.stderr.aclose()


@contextmanager
def postgres_schema(base_url: str, *, prefix: str = "tj") -> Iterator[URL]:
    """A fresh, empty schema in the PostgreSQL database at ``base_url`` (dropped
    afterwards); the URL selects it for every connection."""
    import sqlalchemy as sa

    from termjobs.storage.engine import resolve_url

    base = resolve_url(base_url)
    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield base.update_query_dict({"options": f"-csearch_path={schema}"})
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
