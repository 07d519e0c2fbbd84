"""API throughput with wrk on loopback (50 connections, 3 rounds of 5 s per endpoint).

Endpoints: ``GET /v2/jobs/{id}`` and ``GET /v2/runs?summary=1`` (each on an idle server,
and while 10 runs a second are triggered, so that kept answers keep going stale) and
``POST /v2/jobs/{id}/trigger`` on an ``allow`` job. The limit is a trivial quart-trio JSON
route of the same server process (``GET /healthz``: no storage, no auth), measured
right before each endpoint, round after round, under the same load (for the listing
while runs are triggered, the limit at rest is reported too); each ratio is the median
of the rounds'.
Needs wrk (``apt-get install wrk``).
Usage: python benchmarks/api_wrk.py [--duration 5] [--rounds 3] [--connections 50] [--json]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import trio

from benchmarks._server import program_job, progress, report, running_server

T = TypeVar("T")
TARGET = 0.70
_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", re.M)
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


async def wrk(url: str, args: argparse.Namespace, *, script: str | None = None) -> dict[str, float]:
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", url]
    if script:
        argv[1:1] = ["-s", script]
    result = await trio.run_process(argv, capture_stdout=True, capture_stderr=True)
    text = result.stdout.decode()
    rps = _RPS.search(text)
    assert rps is not None, text
    latency = {m[0]: float(m[1]) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m[2]] for m in _LATENCY.findall(text)}
    non_2xx = _NON_2XX.search(text)
    return {
        "rps": float(rps.group(1)),
        "p50": latency.get("50", float("nan")),
        "p99": latency.get("99", float("nan")),
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
    }


async def main(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        print("api benchmark skipped: wrk is not installed (apt-get install wrk)")
        return
    post_script = str(Path(__file__).parent / "trigger.lua")
    async with (
        running_server("--jobs-workers", "16", "--log-level", "error") as server,
        server.client(timeout=60) as client,
    ):
        body = program_job("api-bench", "true", concurrent=1000)
        job = (await client.post("/v2/jobs", json=body)).json()
        for _ in range(50):  # some history for the runs listing
            await client.post(f"/v2/jobs/{job['id']}/trigger")
        base = server.url
        limit_url, listing = f"{base}/healthz", f"{base}/v2/runs?summary=1"
        cases = [
            ("GET /v2/jobs/{id}", f"{base}/v2/jobs/{job['id']}", False),
            # Kept rendered too while nothing is written: the same job while runs are
            # written (of this very job: its newest run keeps changing).
            (
                f"GET /v2/jobs/{{id}} while {WRITES_PER_S} runs/s are triggered",
                f"{base}/v2/jobs/{job['id']}",
                True,
            ),
            ("GET /v2/runs?summary=1", listing, False),
            # Listings are kept rendered while nothing is written (http/cache.py): the
            # same listing while runs are written, so every few requests read again.
            (
                f"GET /v2/runs?summary=1 while {WRITES_PER_S} runs/s are triggered",
                f"{base}/v2/runs?summary=1",
                True,
            ),
        ]
        warm_up = argparse.Namespace(connections=args.connections, duration=2)
        for url in [limit_url, *(url for _, url, _ in cases)]:
            await wrk(url, warm_up)
        limits: list[dict[str, float]] = []
        results: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in cases}
        ratios: dict[str, list[float]] = {name: [] for name, _, _ in cases}
        # Each endpoint right after the limit, round after round: the machine's speed
        # drifts over minutes, and a ratio of two figures taken seconds apart does not.
        # An endpoint measured while runs are triggered is compared with the limit
        # measured under the same load (the runs' processes and writes take CPU from
        # both alike), and also with the limit at rest.
        busy_limits: list[dict[str, float]] = []
        at_rest_ratios: dict[str, list[float]] = {name: [] for name, _, busy in cases if busy}
        for round_ in range(args.rounds):
            for name, url, busy in cases:
                progress(f"round {round_ + 1}/{args.rounds}, wrk {args.duration}s: the limit, then {name}")
                limit = await wrk(limit_url, args)
                limits.append(limit)
                if busy:
                    at_rest = limit
                    limit = await under_triggers(client, job["id"], wrk(limit_url, args))
                    busy_limits.append(limit)
                    result = await under_triggers(client, job["id"], wrk(url, args))
                    at_rest_ratios[name].append(result["rps"] / at_rest["rps"])
                else:
                    result = await wrk(url, args)
                results[name].append(result)
                ratios[name].append(result["rps"] / limit["rps"])
        progress(f"wrk {args.duration}s: POST /v2/jobs/{{id}}/trigger")
        with trio.fail_after(args.duration + 120):
            trigger = await wrk_post(base, job["id"], args, post_script)
    figures: dict[str, object] = {
        "connections": args.connections,
        "seconds per measurement": args.duration,
        "rounds": args.rounds,
        "limit: GET /healthz (trivial route) req/s": _spread([limit["rps"] for limit in limits]),
        f"limit while {WRITES_PER_S} runs/s are triggered req/s": _spread(
            [limit["rps"] for limit in busy_limits]
        ),
    }
    for name, _, busy in cases:
        figures[f"{name} req/s"] = _spread([result["rps"] for result in results[name]])
        under = " (triggered likewise)" if busy else ""
        figures[f"{name} ratio to the limit before it{under} (median)"] = (
            f"{statistics.median(ratios[name]):.0%}"
        )
        figures[f"{name} ratios"] = ", ".join(f"{ratio:.0%}" for ratio in ratios[name])
        if busy:
            figures[f"{name} ratio to the limit at rest (median)"] = (
                f"{statistics.median(at_rest_ratios[name]):.0%}"
            )
        last = results[name][-1]
        figures[f"{name} p50/p99 ms (last round)"] = f"{last['p50']:.1f} / {last['p99']:.1f}"
        if any(result["non_2xx"] for result in results[name]):
            figures[f"{name} non-2xx answers"] = int(sum(result["non_2xx"] for result in results[name]))
    figures["POST /v2/jobs/{id}/trigger (allow job) req/s"] = trigger["rps"]
    figures["target for the GETs"] = f"{TARGET:.0%} of the limit"
    report("API (wrk, loopback)", figures, as_json=args.json)


def _spread(values: list[float]) -> str:
    """``median (min-max)``."""
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


WRITES_PER_S = 10


async def under_triggers(client: Any, job_id: str, measurement: Awaitable[T]) -> T:
    """``measurement``'s result, taken while ``WRITES_PER_S`` runs a second are triggered."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trigger_steadily, client, job_id)
        result = await measurement
        nursery.cancel_scope.cancel()
    return result


async def trigger_steadily(client: Any, job_id: str) -> None:
    while True:
        await client.post(f"/v2/jobs/{job_id}/trigger")
        await trio.sleep(1 / WRITES_PER_S)


async def wrk_post(base: str, job_id: str, args: argparse.Namespace, script: str) -> dict[str, float]:
    import os

    os.environ["JOB_IDS"] = job_id
    return await wrk(base, args, script=script)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk measurement")
    parser.add_argument("--rounds", type=int, default=3, help="limit-then-endpoint pairs per endpoint")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    trio.run(main, parser.parse_args())
