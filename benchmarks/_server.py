"""Shared helpers for the benchmark scripts: run a real server process, report figures."""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from termjobs.testing import ServerProcess, serve_process
from termjobs.testing import postgres_schema as scratch_schema

Server = ServerProcess


@asynccontextmanager
async def running_server(*extra: str, db: str | None = None) -> AsyncIterator[ServerProcess]:
    """``term-llm serve jobs --no-auth`` on a free loopback port, stopped afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        database = db or str(Path(tmp) / "bench.db")
        args = ("--no-auth", "--db", database, "--log-level", "warning", *extra)
        async with serve_process(*args) as server:
            yield server


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
    """A fresh PostgreSQL schema for one benchmark run (dropped afterwards), as a URL."""
    with scratch_schema(base_url, prefix="bench") as url:
        yield url.render_as_string(hide_password=False)
