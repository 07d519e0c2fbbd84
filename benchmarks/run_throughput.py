"""Run throughput: complete N manual runs of a no-op program (`true`) end to end.

Triggers --runs runs over HTTP (--clients concurrent connections) on a server with
--jobs-workers 16 and measures completed runs per second from the first trigger to the
last run recorded as finished (every run and its events persisted). The limit is bare
`trio.run_process(["true"])` at the same concurrency, measured in the same run.
Usage: python benchmarks/run_throughput.py [--runs 5000] [--db sqlite|postgresql://...] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import trio

from benchmarks._server import postgres_schema, program_job, progress, report, running_server

JOBS = 10  # spread over several jobs: one job admits at most 1000 active runs


async def process_limit(runs: int, concurrency: int) -> float:
    """Spawns of `true` per second with bare trio at this concurrency."""
    limiter = trio.CapacityLimiter(concurrency)

    async def one() -> None:
        async with limiter:
            await trio.run_process(["true"])

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(runs):
            nursery.start_soon(one)
    return runs / (time.perf_counter() - start)


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
            await trio.sleep(0.05)
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
        start = time.perf_counter()
        if shutil.which("wrk"):
            await trigger_with_wrk(client, ids, runs, clients)
        else:
            progress("  (wrk not found: triggering from Python, which costs a core; apt-get install wrk)")
            await trigger_with_httpx(client, ids, runs, clients)
        total = (await client.get("/v2/runs?summary=1&limit=1")).json()["total"]
        progress(
            f"  {total} runs triggered in {time.perf_counter() - start:.1f}s; waiting for them to finish"
        )
        while True:
            page = (await client.get("/v2/runs?summary=1&status=succeeded&limit=1")).json()
            if page["total"] >= total:
                break
            await trio.sleep(0.1)
        elapsed = time.perf_counter() - start
        failed = (await client.get("/v2/runs?summary=1&status=failed&limit=1")).json()["total"]
        return {"runs": total, "seconds": elapsed, "rate": total / elapsed, "failed": failed}


async def main(args: argparse.Namespace) -> None:
    progress(f"limit: {args.runs} bare trio.run_process(['true']) at concurrency {args.workers}")
    limit = await process_limit(args.runs, args.workers)
    progress(f"termjobs: {args.runs} runs, --jobs-workers {args.workers}, db {args.db or 'sqlite'}")
    if args.db and args.db.startswith("postgres"):
        with postgres_schema(args.db) as url:
            result = await termjobs_rate(args.runs, args.workers, args.clients, url)
    else:
        result = await termjobs_rate(args.runs, args.workers, args.clients, args.db)
    report(
        f"run throughput ({args.db.split(':')[0] if args.db else 'sqlite'})",
        {
            "runs": result["runs"],
            "jobs workers": args.workers,
            "termjobs completed runs/s": result["rate"],
            "limit: bare spawns/s": limit,
            "ratio": f"{result['rate'] / limit:.0%}",
            "failed runs": int(result["failed"]),
        },
        as_json=args.json,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--clients", type=int, default=16, help="concurrent HTTP clients triggering runs")
    parser.add_argument("--db", default=None, help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--json", action="store_true")
    trio.run(main, parser.parse_args())
