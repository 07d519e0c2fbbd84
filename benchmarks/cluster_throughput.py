"""Cluster throughput: no-op runs per second with 1, 2 and 3 servers on one PostgreSQL.

For each cluster size, the servers start on a fresh schema (``--jobs-workers`` each),
12 manual jobs of `true` are created and spread over them by the cluster, and wrk
sends --runs triggers in two ways, one after the other:

- ``to owners``: each server gets the triggers of the jobs it owns (a client that
  knows the placement, or one job per client);
- ``to any server``: each server gets triggers for every job (a load balancer in
  front), so most are forwarded to the job's owner through PostgreSQL.

A rate is completed runs per second, from the first trigger to the last run recorded
as finished; every run must have succeeded (none lost on the way). The
limit is bare `trio.run_process(["true"])` at one server's concurrency, same run.
Usage: python -m benchmarks.cluster_throughput [--db postgresql://...] [--servers 1,2,3] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import sqlalchemy as sa
import trio

from benchmarks._server import Server, postgres_schema, program_job, progress, report, running_server
from benchmarks.run_throughput import process_limit
from termjobs.storage.engine import resolve_url

JOBS = 12
LEASE_S = 15.0
#: Placement is settled when every job has a live owner and nothing moved for this long.
SETTLED_S = 2.0
SETTLE_LIMIT_S = 60.0


@asynccontextmanager
async def cluster(url: str, size: int, workers: int) -> AsyncIterator[list[Server]]:
    """``size`` servers on the database at ``url``, stopped afterwards."""
    async with AsyncExitStack() as stack:
        servers = []
        for _ in range(size):
            extra = ("--jobs-workers", str(workers), "--lease-seconds", str(LEASE_S))
            servers.append(await stack.enter_async_context(running_server(*extra, db=url)))
        yield servers


def placement(engine: sa.Engine) -> dict[str, str]:
    """Job id -> the advertised URL of the live server that owns it."""
    query = sa.text(
        "SELECT jobs.id, workers.url FROM jobs JOIN workers ON workers.id = jobs.owner_id "
        "WHERE workers.left_at IS NULL"
    )
    with engine.connect() as conn:
        return {row.id: row.url for row in conn.execute(query)}


async def settled_placement(engine: sa.Engine, size: int) -> dict[str, str]:
    """The placement once every job has an owner, every server some jobs, and nothing
    has moved for a while."""
    with trio.fail_after(SETTLE_LIMIT_S):
        last: dict[str, str] = {}
        since = trio.current_time()
        while True:
            now = await trio.to_thread.run_sync(placement, engine)
            if now != last:
                last, since = now, trio.current_time()
            elif (
                len(now) == JOBS
                and len(set(now.values())) == size
                and trio.current_time() - since > SETTLED_S
            ):
                return now
            await trio.sleep(0.2)


def run_counts(engine: sa.Engine) -> tuple[int, int, int]:
    """Runs in all, runs that have ended, runs that ended other than succeeded."""
    final = "('succeeded', 'failed', 'timed_out', 'cancelled', 'skipped')"
    with engine.connect() as conn:
        total, ended, unsuccessful = conn.execute(
            sa.text(
                f"SELECT count(*), count(*) FILTER (WHERE status IN {final}), "
                f"count(*) FILTER (WHERE status IN {final} AND status <> 'succeeded') FROM runs"
            )
        ).one()
    return int(total), int(ended), int(unsuccessful)


async def wrk_at(base_url: str, ids: Sequence[str], connections: int) -> trio.Process:
    """wrk sending triggers for ``ids``, round-robin, to one server (until killed)."""
    env = {**os.environ, "JOB_IDS": ",".join(ids)}
    script = str(Path(__file__).parent / "trigger.lua")
    argv = ["wrk", "-t1", f"-c{connections}", "-d300s", "-s", script, base_url]
    return await trio.lowlevel.open_process(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def measure(
    engine: sa.Engine, senders: dict[str, list[str]], runs: int, connections: int
) -> dict[str, float]:
    """Send ``runs`` triggers (``senders``: server URL -> the job ids it is sent) and
    wait for every run; the rate and the checks."""
    before, _, _ = await trio.to_thread.run_sync(run_counts, engine)
    share = max(1, connections // len(senders))
    start = time.perf_counter()
    processes = [await wrk_at(url, ids, share) for url, ids in senders.items()]
    try:
        while (await trio.to_thread.run_sync(run_counts, engine))[0] - before < runs:
            await trio.sleep(0.05)
    finally:
        for process in processes:
            process.kill()
            await process.wait()
    while True:
        total, ended, unsuccessful = await trio.to_thread.run_sync(run_counts, engine)
        if ended >= total:
            break
        await trio.sleep(0.1)
    elapsed = time.perf_counter() - start
    return {"runs": total - before, "rate": (total - before) / elapsed, "unsuccessful": unsuccessful}


async def cluster_rates(base: str, size: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Both ways of triggering on a cluster of ``size`` servers."""
    with postgres_schema(base) as url:
        engine = sa.create_engine(resolve_url(url))
        try:
            async with cluster(url, size, args.workers) as servers:
                async with servers[0].client(timeout=60) as client:
                    for i in range(JOBS):
                        body = program_job(f"noop-{i}", "true", concurrent=1000)
                        (await client.post("/v2/jobs", json=body)).raise_for_status()
                owners = await settled_placement(engine, size)
                urls = sorted(set(owners.values()))
                progress(
                    f"  {size} server(s): jobs per server {[list(owners.values()).count(u) for u in urls]}"
                )
                to_owners = {u: [job for job, owner in owners.items() if owner == u] for u in urls}
                result = {"to owners": await measure(engine, to_owners, args.runs, args.connections)}
                if size > 1:
                    to_any = {u: sorted(owners) for u in urls}
                    result["to any server"] = await measure(engine, to_any, args.runs, args.connections)
                return result
        finally:
            engine.dispose()


async def main(args: argparse.Namespace) -> None:
    base = (
        args.db
        or os.environ.get("TERMJOBS_BENCH_POSTGRES_URL")
        or os.environ.get("TERMJOBS_TEST_POSTGRES_URL")
    )
    if not base:
        print("skipped: needs PostgreSQL (--db postgresql://... or TERMJOBS_BENCH_POSTGRES_URL)")
        return
    if not shutil.which("wrk"):
        print("skipped: needs wrk (apt-get install wrk)")
        return
    progress(f"limit: {args.runs} bare trio.run_process(['true']) at concurrency {args.workers}")
    limit, _ = await process_limit(args.runs, args.workers)
    figures: dict[str, object] = {"limit: bare spawns/s (one server's concurrency)": limit}
    failed = 0
    for size in [int(n) for n in args.servers.split(",")]:
        progress(f"{size} server(s), {args.runs} runs each way, --jobs-workers {args.workers} per server")
        for way, result in (await cluster_rates(base, size, args)).items():
            figures[f"{size} server(s), triggers {way}: runs/s"] = result["rate"]
            failed += int(result["unsuccessful"])
    figures["runs that did not succeed"] = failed
    report("cluster throughput (postgresql)", figures, as_json=args.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3000, help="runs per measurement")
    parser.add_argument("--servers", default="1,2,3", help="cluster sizes to measure")
    parser.add_argument("--workers", type=int, default=16, help="--jobs-workers of each server")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections in all")
    parser.add_argument("--db", default=None, help="PostgreSQL URL (a scratch schema is made in it)")
    parser.add_argument("--json", action="store_true")
    trio.run(main, parser.parse_args())
