"""Run throughput: complete N runs of a no-op program (`true`) end to end.

Two ways, on a server with --jobs-workers 16, each measured as completed runs per
second until the last run is recorded as finished (every run and its events persisted):

* triggered: --runs manual runs triggered over HTTP (--clients concurrent connections),
  from the first trigger on; each run costs an HTTP request too;
* fired: --runs jobs due once at the same moment, from that moment on: the scheduler
  and the run path alone, no request per run.

The limit is bare `trio.run_process(["true"])` at the same concurrency, measured in
the same run.
Usage: python benchmarks/run_throughput.py [--runs 5000] [--db sqlite|postgresql://...] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import trio

from benchmarks._build import once_jobs, write_jobs
from benchmarks._server import Server, postgres_schema, program_job, progress, report, running_server

JOBS = 10  # spread over several jobs: one job admits at most 1000 active runs
#: jobs fired together are due this long after they are built (time to write them and to
#: start the server), plus FIRE_LEAD_PER_JOB_S for each
FIRE_LEAD_S = 20.0
FIRE_LEAD_PER_JOB_S = 0.0002


async def process_limit(runs: int, concurrency: int) -> tuple[float, float]:
    """Spawns of `true` per second with bare trio at this concurrency, and the CPU
    milliseconds each cost this process."""

    async def one() -> None:
        await trio.run_process(["true"])

    return await concurrent_rate(runs, concurrency, one)


async def concurrent_rate(
    runs: int, concurrency: int, one: Callable[[], Awaitable[None]]
) -> tuple[float, float]:
    """Calls of ``one`` per second, ``runs`` of them at ``concurrency`` at a time, and
    the CPU milliseconds each cost this process."""
    limiter = trio.CapacityLimiter(concurrency)

    async def limited() -> None:
        async with limiter:
            await one()

    start, cpu = time.perf_counter(), time.process_time()
    async with trio.open_nursery() as nursery:
        for _ in range(runs):
            nursery.start_soon(limited)
    return runs / (time.perf_counter() - start), 1000 * (time.process_time() - cpu) / runs


async def trigger_with_wrk(client: httpx.AsyncClient, ids: list[str], runs: int, connections: int) -> None:
    """wrk sends the triggers (a C client leaves the cores to the server); it is
    stopped once the server has created ``runs`` runs."""
    env = {**os.environ, "JOB_IDS": ",".join(ids)}
    script = str(Path(__file__).parent / "trigger.lua")
    argv = ["wrk", "-t1", f"-c{connections}", "-d300s", "-s", script, str(client.base_url)]
    process = await trio.lowlevel.open_process(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while (await client.get("/v2/runs?summary=1&limit=1")).json()["total"] < runs:
            await trio.sleep(0.1)
    finally:
        process.kill()
        await process.wait()


async def trigger_with_httpx(client: httpx.AsyncClient, ids: list[str], runs: int, clients: int) -> None:
    async def trigger(n: int) -> None:
        for k in range(runs // clients):
            (await client.post(f"/v2/jobs/{ids[(n + k) % JOBS]}/trigger")).raise_for_status()

    async with trio.open_nursery() as nursery:
        for n in range(clients):
            nursery.start_soon(trigger, n)


async def termjobs_rate(runs: int, workers: int, clients: int, db: str | None) -> dict[str, float]:
    extra = ("--jobs-workers", str(workers))
    async with running_server(*extra, db=db) as server, server.client(timeout=60) as client:
        ids = []
        for i in range(JOBS):
            body = program_job(f"noop-{i}", "true", concurrent=1000)
            ids.append((await client.post("/v2/jobs", json=body)).json()["id"])
        start, cpu = time.perf_counter(), server_cpu(server)
        if shutil.which("wrk"):
            await trigger_with_wrk(client, ids, runs, clients)
        else:
            progress("  (wrk not found: triggering from Python, which costs a core; apt-get install wrk)")
            await trigger_with_httpx(client, ids, runs, clients)
        total = (await client.get("/v2/runs?summary=1&limit=1")).json()["total"]
        progress(
            f"  {total} runs triggered in {time.perf_counter() - start:.1f}s; waiting for them to finish"
        )
        return await _completed(server, client, total, start, cpu)


async def fired_rate(runs: int, workers: int, db: str) -> dict[str, float]:
    """``runs`` jobs due once at the same moment, each running ``true``."""
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=FIRE_LEAD_S + runs * FIRE_LEAD_PER_JOB_S)
    await write_jobs(db, [once_jobs("noop", runs, due, dt.datetime.now(dt.UTC))])
    async with (
        running_server("--jobs-workers", str(workers), db=db) as server,
        server.client(timeout=60) as client,
    ):
        wait = (due - dt.datetime.now(dt.UTC)).total_seconds()
        if wait < 0:
            raise SystemExit(f"the server started {-wait:.1f}s after the jobs were due: raise FIRE_LEAD_S")
        await trio.sleep(wait)
        return await _completed(server, client, runs, time.perf_counter(), server_cpu(server))


def server_cpu(server: Server) -> float:
    """CPU seconds the server process has used (every thread; its children excluded)."""
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


async def _completed(
    server: Server, client: httpx.AsyncClient, total: int, start: float, cpu: float
) -> dict[str, float]:
    """Wait until ``total`` runs have finished; their rate since ``start``, and the
    server's CPU milliseconds per run since it had used ``cpu`` seconds.

    Watched on ``/metrics`` (``termjobs_runs_finished_total``, counted once a final
    state is committed), which costs the server next to nothing; a filtered runs
    listing polled ten times a second counts every match, and took about 8% of the
    server's event loop. The listing then counts the failed runs once."""
    while await _finished(client) < total:
        await trio.sleep(0.1)
    elapsed = time.perf_counter() - start
    cpu_ms = 1000 * (server_cpu(server) - cpu) / total
    failed = (await client.get("/v2/runs?summary=1&status=failed&limit=1")).json()["total"]
    return {"runs": total, "seconds": elapsed, "rate": total / elapsed, "failed": failed, "cpu_ms": cpu_ms}


async def _finished(client: httpx.AsyncClient) -> float:
    """Runs with a final status recorded, over every status."""
    text = (await client.get("/metrics")).text
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("termjobs_runs_finished_total{")
    )


async def main(args: argparse.Namespace) -> None:
    progress(f"limit: {args.runs} bare trio.run_process(['true']) at concurrency {args.workers}")
    limit, limit_cpu = await process_limit(args.runs, args.workers)
    kind = args.db.split(":")[0] if args.db else "sqlite"
    progress(f"termjobs: {args.runs} runs triggered over HTTP, --jobs-workers {args.workers}, db {kind}")
    with _database(args.db, "triggered") as db:
        triggered = await termjobs_rate(args.runs, args.workers, args.clients, db)
    figures: dict[str, object] = {
        "runs": triggered["runs"],
        "jobs workers": args.workers,
        "termjobs completed runs/s": triggered["rate"],
        "limit: bare spawns/s": limit,
        "ratio": f"{triggered['rate'] / limit:.0%}",
        "server CPU per run, ms": round(triggered["cpu_ms"], 2),
        "bare: CPU per spawn, ms": round(limit_cpu, 2),
    }
    failed = triggered["failed"]
    if not args.triggered_only:
        progress(f"termjobs: {args.runs} jobs due at once, --jobs-workers {args.workers}, db {kind}")
        with _database(args.db, "fired") as db:
            fired = await fired_rate(args.runs, args.workers, db)
        figures["fired by the scheduler: completed runs/s"] = fired["rate"]
        figures["fired: ratio"] = f"{fired['rate'] / limit:.0%}"
        figures["fired: server CPU per run, ms"] = round(fired["cpu_ms"], 2)
        failed += fired["failed"]
    report(f"run throughput ({kind})", {**figures, "failed runs": int(failed)}, as_json=args.json)


@contextlib.contextmanager
def _database(db: str | None, mode: str) -> Iterator[str]:
    """A fresh database for ``mode``: a schema of ``db`` (PostgreSQL), a new SQLite file
    named after ``db`` and ``mode``, or a temporary one."""
    if db and db.startswith("postgres"):
        with postgres_schema(db) as url:
            yield url
        return
    if db:
        path = Path(db).with_suffix(f".{mode}{Path(db).suffix}")
        if path.exists():
            raise SystemExit(f"{path} exists: the benchmark writes a fresh database (remove it first)")
        yield str(path)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield str(Path(tmp) / "bench.db")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients triggering runs")
    parser.add_argument(
        "--db", default=None, help="database URL, or a SQLite path (default: temporary SQLite files)"
    )
    parser.add_argument("--triggered-only", action="store_true", help="skip the runs fired by the scheduler")
    parser.add_argument("--json", action="store_true")
    trio.run(main, parser.parse_args())
