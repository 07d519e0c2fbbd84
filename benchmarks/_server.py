"""Shared helpers for the benchmark scripts: run a real server process, report figures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: trio.Process
    url: str
    port: int

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=60)


@asynccontextmanager
async def running_server(*extra: str, db: str | None = None) -> AsyncIterator[Server]:
    """``term-llm serve jobs --no-auth`` on a free loopback port, stopped afterwards."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        database = db or str(Path(tmp) / "bench.db")
        argv = [
            sys.executable,
            "-m",
            "termjobs",
            "serve",
            "jobs",
            "--no-auth",
            "--port",
            str(port),
            "--db",
            database,
            "--log-level",
            "warning",
            *extra,
        ]
        process = await trio.lowlevel.open_process(
            argv,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert process.stderr is not None
            seen = b""
            with trio.fail_after(60):
                while b"listening on" not in seen:
                    chunk = await process.stderr.receive_some(4096)
                    if not chunk:
                        raise RuntimeError(f"server exited: {seen.decode(errors='replace')}")
                    seen += chunk
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, process.stderr)
                yield Server(process=process, url=f"http://127.0.0.1:{port}", port=port)
                nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(30):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(65536):
        pass


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def report(title: str, figures: dict[str, Any], *, as_json: bool) -> None:
    """Print figures as an aligned block (or one JSON object with ``--json``)."""
    if as_json:
        print(json.dumps({"benchmark": title, **figures}))
        return
    print(f"\n{title}")
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        text = (
            f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else value
        )
        print(f"  {key:<{width}}  {text}")


def program_job(name: str, command: str, *args: str, concurrent: int) -> dict[str, Any]:
    """A manual ``program`` job that may have ``concurrent`` runs at once."""
    config: dict[str, Any] = {"command": command, **({"args": list(args)} if args else {})}
    return {
        "name": name,
        "runner_type": "program",
        "runner_config": config,
        "trigger_type": "manual",
        "concurrency_policy": "allow",
        "max_concurrent_runs": concurrent,
    }


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh PostgreSQL schema for one benchmark run (dropped afterwards)."""
    import secrets

    import sqlalchemy as sa

    from termjobs.storage.engine import resolve_url

    base = resolve_url(base_url)
    schema = f"bench_{secrets.token_hex(4)}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
