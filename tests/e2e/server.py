"""Run the real ``term-llm serve jobs`` process on a free loopback port."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from termjobs.testing import ServerProcess, free_port, serve_process

TOKEN = "e2e-token"
Server = ServerProcess

__all__ = ["TOKEN", "Server", "free_port", "serve", "wait_for_metric"]


@asynccontextmanager
async def serve(
    db: Path | str,
    *extra: str,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> AsyncIterator[Server]:
    """Start the server on ``db`` (a SQLite file or a database URL) with the test
    token (``env`` added to its environment); killed at the end if still up. Its
    configuration home is ``home`` (default: beside the SQLite file)."""
    # Hermetic: the server reads no LLM configuration of whoever runs the tests.
    if home is None:
        assert isinstance(db, Path), "a database URL needs a home"
        home = db.parent
    env = {"XDG_CONFIG_HOME": str(home / "xdg-config"), **(env or {})}
    async with serve_process(
        "--db", str(db), *extra, token=TOKEN, port=port, env=env, teardown=signal.SIGKILL
    ) as server:
        yield server


async def wait_for_metric(server: Server, sample: str) -> None:
    """Until ``/metrics`` shows the line ``sample`` (such as ``termjobs_stream_subscribers
    1.0``): what a test waits for instead of a fixed time that a busy machine outlasts."""
    async with server.client() as client:
        while True:
            if sample in (await client.get("/metrics")).text.splitlines():
                return
            await trio.sleep(0.05)
