"""Event ingestion: output persisted per second from chatty programs.

--runs programs run at once, each printing --lines lines (with --pause seconds between
them; 0 = as fast as it can). Every line reaches storage as part of an ``output``
event; lines that arrive while the previous event of the run is being written are
batched into the next one, by design, so a chatty program cannot flood storage. The
script reports persisted events/s and persisted lines/s, both counted in storage
afterwards. Two limits, in the same run: the storage gateway alone (``output`` events
inserted through the same group-commit writer by as many concurrent writers), and the
programs alone (the same programs, their output read by a bare trio reader that only
counts lines: on two cores, 32 Python programs printing a line a millisecond take a
good part of the machine themselves).
Usage: python benchmarks/events_ingest.py [--runs 32] [--lines 2000] [--pause 0.001] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from benchmarks._server import program_job, progress, report, running_server
from termjobs.jobdef import Job
from termjobs.jobspec import definition_for_create
from termjobs.model import EventType, JSONObject, RunTrigger
from termjobs.rundomain import new_run
from termjobs.storage.database import open_storage
from termjobs.storage.engine import resolve_url

TARGET = 20_000
CHATTY = (
    "import os, time\n"
    "for i in range({lines}):\n"
    "    os.write(1, b'event %d\\n' % i)\n"
    "    {pause} and time.sleep({pause})\n"
)


async def gateway_limit(writers: int, events: int) -> float:
    """Output events per second through storage alone (no runner, no HTTP)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with open_storage(resolve_url(str(Path(tmp) / "limit.db"))) as storage:
            now = dt.datetime.now(dt.UTC)
            spec = definition_for_create(
                {
                    "name": "x",
                    "runner_type": "program",
                    "runner_config": {"command": "true"},
                    "trigger_type": "manual",
                }
            )
            job = Job(
                id="job_x", spec=spec, next_run_at=None, last_fire_at=None, created_at=now, updated_at=now
            )
            await storage.create_job(job)
            run = await storage.create_run(
                new_run(job.id, trigger=RunTrigger.MANUAL, scheduled_for=now, now=now)
            )

            async def writer() -> None:
                for i in range(events // writers):
                    data: JSONObject = {"stream": "stdout", "text": f"event {i}\n"}
                    await storage.add_event(run, EventType.OUTPUT, None, data, now=now)

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(writers):
                    nursery.start_soon(writer)
            return events / (time.perf_counter() - started)


async def producers_alone(args: argparse.Namespace) -> float:
    """Lines per second the same programs print on their own, read by a bare trio
    reader that only counts them: how fast output can arrive at all on this machine."""
    chatty = CHATTY.format(lines=args.lines, pause=args.pause)
    counted = 0

    async def one() -> None:
        nonlocal counted
        process = await trio.lowlevel.open_process([sys.executable, "-c", chatty], stdout=subprocess.PIPE)
        assert process.stdout is not None
        while chunk := await process.stdout.receive_some(65536):
            counted += chunk.count(b"\n")
        await process.wait()

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(args.runs):
            nursery.start_soon(one)
    elapsed = time.perf_counter() - started
    assert counted == args.runs * args.lines, counted
    return counted / elapsed


async def termjobs_rate(args: argparse.Namespace) -> dict[str, float]:
    async with (
        running_server("--jobs-workers", str(args.runs), "--log-level", "error") as server,
        server.client(timeout=60) as client,
    ):
        chatty = CHATTY.format(lines=args.lines, pause=args.pause)
        body = program_job("chatty", sys.executable, "-c", chatty, concurrent=args.runs)
        (await client.post("/v2/jobs", json=body)).raise_for_status()
        started = time.perf_counter()
        ids = [(await client.post("/v2/jobs/chatty/trigger")).json()["id"] for _ in range(args.runs)]
        for run_id in ids:
            while (await client.get(f"/v2/runs/{run_id}")).json()["status"] not in ("succeeded", "failed"):
                await trio.sleep(0.05)
        elapsed = time.perf_counter() - started
        events = lines = 0
        for run_id in ids:
            since = 0
            while page := (await client.get(f"/v2/runs/{run_id}/events?limit=500&since_id={since}")).json()[
                "data"
            ]:
                events += len(page)
                lines += sum(e["data"]["text"].count("\n") for e in page if e["event_type"] == "output")
                since = page[-1]["id"]
        return {"events": events, "lines": lines, "seconds": elapsed, "rate": events / elapsed}


async def main(args: argparse.Namespace) -> None:
    progress(f"limit: {args.runs} writers inserting events through the gateway")
    limit = await gateway_limit(args.runs, 40_000)
    progress(f"limit: the {args.runs} programs alone, read by a bare trio reader")
    alone = await producers_alone(args)
    progress(f"termjobs: {args.runs} programs printing {args.lines} lines each")
    result = await termjobs_rate(args)
    lines_rate = result["lines"] / result["seconds"]
    report(
        "event ingestion (sqlite)",
        {
            "concurrent chatty runs": args.runs,
            "events persisted": int(result["events"]),
            "lines persisted": int(result["lines"]),
            "seconds": result["seconds"],
            "termjobs events persisted/s": result["rate"],
            "termjobs lines persisted/s": lines_rate,
            "lines per event (batching)": result["lines"] / max(result["events"], 1),
            "limit: gateway alone events/s": limit,
            "ratio": f"{result['rate'] / limit:.0%}",
            "limit: the programs alone, lines printed/s": alone,
            "lines persisted/s, share of the programs alone": f"{lines_rate / alone:.0%}",
            "target events/s": TARGET,
        },
        as_json=args.json,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=32)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--pause", type=float, default=0.001, help="seconds between printed lines")
    parser.add_argument("--json", action="store_true")
    trio.run(main, parser.parse_args())
