"""Scale at rest: a server holding N job definitions (cron, mostly far in the future).

Measures start-up time to serving (process start to the first answered ``GET
/v2/jobs?limit=50``), resident memory after start-up and after some listing, and the
latency of ``GET /v2/jobs?limit=50``. The limit is the same server with an empty
database, measured in the same run.
Usage: python benchmarks/scale_at_rest.py [--jobs 100000] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import httpx
import trio

from benchmarks._build import cron_jobs, write_jobs
from benchmarks._server import percentile, progress, report, running_server

TARGET_RSS_MB = 600.0
TARGET_START_S = 15.0
LIST_REQUESTS = 100


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def measure(db: str) -> dict[str, float]:
    started = time.perf_counter()
    async with running_server("--log-level", "error", db=db) as server, server.client(timeout=60) as client:
        while True:  # the banner is printed before the first request is answered
            try:
                (await client.get("/v2/jobs?limit=50")).raise_for_status()
                break
            except httpx.TransportError:
                await trio.sleep(0.01)
        start_s = time.perf_counter() - started
        rss_start = rss_mb(server.process.pid)
        latencies = []
        for _ in range(LIST_REQUESTS):
            t = time.perf_counter()
            (await client.get("/v2/jobs?limit=50")).raise_for_status()
            latencies.append(time.perf_counter() - t)
        total = (await client.get("/v2/jobs?limit=1")).json()["total"]
        return {
            "jobs": total,
            "start_s": start_s,
            "rss_start": rss_start,
            "rss_after": rss_mb(server.process.pid),
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
        }


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        empty, full = str(Path(tmp) / "empty.db"), str(Path(tmp) / "full.db")
        now = dt.datetime.now(dt.UTC)
        progress(f"building {args.jobs} cron jobs")
        # Mostly far in the future (yearly), a few daily: what a real fleet looks like.
        await write_jobs(empty, [])
        await write_jobs(
            full,
            [
                cron_jobs("yearly", args.jobs - args.jobs // 100, "0 0 1 1 *", now),
                cron_jobs("daily", args.jobs // 100, "30 3 * * *", now),
            ],
        )
        progress("measuring the empty server (the limit)")
        base = await measure(empty)
        progress(f"measuring the server with {args.jobs} jobs")
        loaded = await measure(full)
    report(
        "scale at rest (sqlite)",
        {
            "jobs": int(loaded["jobs"]),
            "start-up to serving s": loaded["start_s"],
            "start-up target s": TARGET_START_S,
            "limit: empty server start-up s": base["start_s"],
            "RSS after start-up MB": loaded["rss_start"],
            "RSS after listing MB": loaded["rss_after"],
            "RSS target MB": TARGET_RSS_MB,
            "limit: empty server RSS MB": base["rss_after"],
            "RSS ratio to target": f"{loaded['rss_after'] / TARGET_RSS_MB:.0%}",
            "GET /v2/jobs?limit=50 p50 ms": loaded["p50_ms"],
            "GET /v2/jobs?limit=50 p99 ms": loaded["p99_ms"],
            "limit: same on empty server p50 ms": base["p50_ms"],
        },
        as_json=args.json,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    trio.run(main, parser.parse_args())
