"""Peer, same run: APScheduler 4 (async, SQLAlchemy store on SQLite) on the scheduling
precision, scale-at-rest and run-throughput workloads, with the same counts as termjobs.

Precision: --small schedules due at one minute and --large at the next; the lag is a
job's ``created_at`` minus its ``scheduled_fire_time`` (the moment APScheduler decided
to run it: the counterpart of termjobs' ``queued`` event). Scale at rest: --jobs
schedules mostly far in the future; start-up time and resident memory. Run
throughput: --runs jobs added through its API by one client without waiting for them
(as wrk triggers termjobs' runs over HTTP; several clients adding at once made its
SQLite store fail with "database is locked"); each job runs ``true`` as a subprocess
(``anyio.run_process``), at most --workers at once, and is kept with its result in the
store; completed jobs per second from the first
add to the last result, with bare ``anyio.run_process(["true"])`` spawns at the same
concurrency, measured in the same process, as its limit.

Each workload runs APScheduler in a child process on asyncio (its default). The
schedules are created by adding one per distinct trigger through APScheduler's API and
copying its row in SQL (adding 100,000 through the API takes minutes).
Needs ``pip install -e '.[bench]'`` (apscheduler 4, aiosqlite).
Usage: python benchmarks/peer_apscheduler.py [--small 1000] [--large 10000] [--jobs 100000]
       [--runs 2000] [--workers 16] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._server import percentile, progress, report

LAGS: list[float] = []


async def tick() -> None:
    """The scheduled task: records how late APScheduler created its job."""
    from apscheduler import current_job

    job = current_job.get()
    if job.scheduled_fire_time is not None:
        LAGS.append((job.created_at - job.scheduled_fire_time).total_seconds())


async def spawn_true() -> None:
    """The no-op program of the run-throughput workload, as termjobs runs it."""
    import anyio

    await anyio.run_process(["true"])


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def clone_schedules(db: str, template: str, prefix: str, count: int) -> None:
    """Copy schedule ``template`` into ``count`` schedules named ``prefix-N``."""
    conn = sqlite3.connect(db)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(schedules)")]
    rest = ", ".join(c for c in columns if c != "id")
    conn.execute(
        f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
        f"INSERT INTO schedules (id, {rest}) SELECT ? || '-' || i, {rest} FROM n, schedules WHERE id = ?",
        (count, prefix, template),
    )
    conn.execute("DELETE FROM schedules WHERE id = ?", (template,))
    conn.commit()
    conn.close()


async def add_templates(db: str, triggers: dict[str, dict[str, Any]]) -> None:
    from apscheduler import AsyncScheduler
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
    from apscheduler.triggers.cron import CronTrigger
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    async with AsyncScheduler(SQLAlchemyDataStore(engine)) as scheduler:
        for name, fields in triggers.items():
            await scheduler.add_schedule(tick, CronTrigger(timezone="UTC", **fields), id=name)
    await engine.dispose()


async def child_precision(db: str, small: int, large: int, lead: float, settle: float) -> dict[str, Any]:
    import anyio
    from apscheduler import AsyncScheduler
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
    from sqlalchemy.ext.asyncio import create_async_engine

    now = dt.datetime.now(dt.UTC)
    first = (now + dt.timedelta(seconds=lead)).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    second = first + dt.timedelta(minutes=1)
    await add_templates(
        db,
        {
            "small": {"hour": first.hour, "minute": first.minute},
            "large": {"hour": second.hour, "minute": second.minute},
        },
    )
    clone_schedules(db, "small", "small", small)
    clone_schedules(db, "large", "large", large)
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    async with AsyncScheduler(SQLAlchemyDataStore(engine), max_concurrent_jobs=1000) as scheduler:
        await scheduler.start_in_background()
        await anyio.sleep((first - dt.datetime.now(dt.UTC)).total_seconds() + 30)
        small_lags = list(LAGS)
        LAGS.clear()
        await anyio.sleep((second - dt.datetime.now(dt.UTC)).total_seconds() + settle)
        large_lags = list(LAGS)
        await scheduler.stop()
    await engine.dispose()
    return {"small": small_lags, "large": large_lags}


async def child_rest(db: str, jobs: int, mode: str) -> dict[str, Any]:
    from apscheduler import AsyncScheduler
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
    from sqlalchemy.ext.asyncio import create_async_engine

    if mode == "build":
        await add_templates(db, {"yearly": {"month": 1, "day": 1, "hour": 0, "minute": 0}})
        clone_schedules(db, "yearly", "yearly", jobs)
        return {}
    started = time.perf_counter()
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    async with AsyncScheduler(SQLAlchemyDataStore(engine)) as scheduler:
        await scheduler.start_in_background()
        ready = time.perf_counter() - started
        schedules = len(await scheduler.get_schedules())
        result = {"start_s": ready, "rss_mb": rss_mb(), "schedules": schedules}
        await scheduler.stop()
    await engine.dispose()
    return result


async def child_throughput(db: str, runs: int, workers: int) -> dict[str, Any]:
    import anyio
    from apscheduler import AsyncScheduler
    from apscheduler.datastores.sqlalchemy import SQLAlchemyDataStore
    from sqlalchemy.ext.asyncio import create_async_engine

    limit = anyio.CapacityLimiter(workers)

    async def bare() -> None:
        async with limit:
            await anyio.run_process(["true"])

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(runs):
            group.start_soon(bare)
    bare_rate = runs / (time.perf_counter() - started)

    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    async with AsyncScheduler(SQLAlchemyDataStore(engine), max_concurrent_jobs=workers) as scheduler:
        await scheduler.start_in_background()
        # One client adds every job without waiting for it (as wrk triggers termjobs'
        # runs), then reads the results; several adding at once made its SQLite store
        # fail with "database is locked".
        started = time.perf_counter()
        ids = [await scheduler.add_job(spawn_true, result_expiration_time=3600) for _ in range(runs)]
        outcomes = [await scheduler.get_job_result(job_id) for job_id in ids]
        elapsed = time.perf_counter() - started
        await scheduler.stop()
    await engine.dispose()
    failed = sum(1 for result in outcomes if result is None or result.outcome.name != "success")
    return {"rate": runs / elapsed, "limit": bare_rate, "failed": failed}


def run_child(*args: str) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.peer_apscheduler", "--child", *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def main(args: argparse.Namespace) -> None:
    try:
        import apscheduler  # noqa: F401
    except ImportError:
        print("peer benchmark skipped: APScheduler 4 is not installed (pip install -e '.[bench]')")
        return
    with tempfile.TemporaryDirectory() as tmp:
        progress(f"APScheduler precision: {args.small} schedules due in one minute, {args.large} in the next")
        precision = run_child("precision", str(Path(tmp) / "precision.db"), str(args.small), str(args.large))
        progress(f"APScheduler at rest: {args.jobs} schedules")
        rest_db = str(Path(tmp) / "rest.db")
        run_child("rest-build", rest_db, str(args.jobs))
        rest = run_child("rest", rest_db, str(args.jobs))
        progress(f"APScheduler run throughput: {args.runs} jobs running true, {args.workers} at once")
        throughput = run_child("throughput", str(Path(tmp) / "runs.db"), str(args.runs), str(args.workers))
    figures: dict[str, object] = {}
    for key, count in (("small", args.small), ("large", args.large)):
        lags = precision[key]
        figures[f"{count} jobs: fired"] = len(lags)
        figures[f"{count} jobs: lag p50 ms"] = percentile(lags, 50) * 1000
        figures[f"{count} jobs: lag p99 ms"] = percentile(lags, 99) * 1000
        figures[f"{count} jobs: lag max ms"] = max(lags, default=float("nan")) * 1000
    figures[f"{args.jobs} schedules: start-up s"] = rest["start_s"]
    figures[f"{args.jobs} schedules: RSS MB"] = rest["rss_mb"]
    figures["run throughput: completed jobs/s"] = throughput["rate"]
    figures["run throughput: limit: bare spawns/s"] = throughput["limit"]
    figures["run throughput: ratio"] = f"{throughput['rate'] / throughput['limit']:.0%}"
    figures["run throughput: failed jobs"] = throughput["failed"]
    report("peer: APScheduler 4 (SQLAlchemy store, SQLite)", figures, as_json=args.json)


def child(argv: list[str]) -> None:
    import anyio

    kind, db, *counts = argv
    if kind == "precision":
        result = anyio.run(child_precision, db, int(counts[0]), int(counts[1]), 30.0, 20.0)
    elif kind == "throughput":
        result = anyio.run(child_throughput, db, int(counts[0]), int(counts[1]))
    elif kind == "rest-build":
        result = anyio.run(child_rest, db, int(counts[0]), "build")
    else:
        result = anyio.run(child_rest, db, int(counts[0]), "measure")
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=10000)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--json", action="store_true")
    main(parser.parse_args())
