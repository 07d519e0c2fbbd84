"""API throughput with wrk on loopback (50 connections, 10 s per endpoint).

Endpoints: ``GET /v2/jobs/{id}``, ``GET /v2/runs?summary=1`` (on an idle server, and
while 10 runs a second are triggered, so that kept listings keep going stale) and
``POST /v2/jobs/{id}/trigger`` on an ``allow`` job. The limit is a trivial quart-trio JSON
route of the same server process (``GET /healthz``: no storage, no auth), measured
in the same run. Needs wrk (``apt-get install wrk``).
Usage: python benchmarks/api_wrk.py [--duration 10] [--connections 50] [--json]
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path
from typing import Any

import trio

from benchmarks._server import program_job, progress, report, running_server

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
        cases = [
            ("limit: GET /healthz (trivial route)", f"{base}/healthz", None),
            ("GET /v2/jobs/{id}", f"{base}/v2/jobs/{job['id']}", None),
            ("GET /v2/runs?summary=1", f"{base}/v2/runs?summary=1", None),
        ]
        results: dict[str, dict[str, float]] = {}
        for name, url, script in cases:
            progress(f"wrk {args.duration}s: {name}")
            await wrk(url, argparse.Namespace(connections=args.connections, duration=2))  # warm-up
            results[name] = await wrk(url, args, script=script)
        # Listings are kept rendered while nothing is written (http/cache.py): the
        # same listing while runs are written, so every few requests miss.
        busy = f"GET /v2/runs?summary=1 while {WRITES_PER_S} runs/s are triggered"
        progress(f"wrk {args.duration}s: {busy}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trigger_steadily, client, job["id"])
            results[busy] = await wrk(f"{base}/v2/runs?summary=1", args)
            nursery.cancel_scope.cancel()
        progress(f"wrk {args.duration}s: POST /v2/jobs/{{id}}/trigger")
        with trio.fail_after(args.duration + 120):
            env_job = job["id"]
            results["POST /v2/jobs/{id}/trigger (allow job)"] = await wrk_post(
                base, env_job, args, post_script
            )
    limit = results["limit: GET /healthz (trivial route)"]["rps"]
    figures: dict[str, object] = {"connections": args.connections, "seconds per endpoint": args.duration}
    for name, result in results.items():
        figures[f"{name} req/s"] = result["rps"]
        figures[f"{name} p50/p99 ms"] = f"{result['p50']:.1f} / {result['p99']:.1f}"
        if not name.startswith("limit"):
            figures[f"{name} ratio to limit"] = f"{result['rps'] / limit:.0%}"
        if result["non_2xx"]:
            figures[f"{name} non-2xx answers"] = int(result["non_2xx"])
    figures["target for the GETs"] = f"{TARGET:.0%} of the limit"
    report("API (wrk, loopback)", figures, as_json=args.json)


WRITES_PER_S = 10


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
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    trio.run(main, parser.parse_args())
