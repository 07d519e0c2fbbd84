"""The program runner alone: what running a no-op program costs the event loop, with no
server, database or scheduler around it.

In one process, --runs runs of `true` through `ProgramRunner.run` (the server's
program runner: the spawn, the output capture, the wait, the descendants' sweep), at
--concurrency at a time, against bare `trio.run_process(["true"])` at the same
concurrency, alternating --rounds times. Prints runs per second and this process's CPU
per run for each. Not part of `python -m benchmarks` (it measures no target): together
with `run_throughput.py`'s runs without a process (see RESULTS.md), it splits a fired
run's cost into its program and the rest of its path.

Usage: python -m benchmarks.runner_alone [--runs 5000] [--concurrency 16] [--rounds 2] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import os

import trio

from benchmarks._build import once_jobs
from benchmarks._server import progress, report
from benchmarks.run_throughput import concurrent_rate, process_limit
from termjobs.model import EventType, JSONValue, RunTrigger
from termjobs.rundomain import new_run
from termjobs.runners.base import RunContext, StopSignal
from termjobs.runners.program import ProgramRunner


async def main(args: argparse.Namespace) -> None:
    now = dt.datetime.now(dt.UTC)
    job = once_jobs("alone", 1, now, now)[0]
    runner = ProgramRunner(base_env=dict(os.environ))

    async def emit(event_type: EventType, message: str | None, data: JSONValue) -> None:
        pass  # `true` prints nothing

    async def through_runner() -> None:
        run = new_run(job.id, trigger=RunTrigger.MANUAL, scheduled_for=now, now=now)
        result = await runner.run(RunContext(job=job, run=run, stop=StopSignal(), emit=emit))
        if result.error is not None:
            raise SystemExit(f"a run failed: {result.error}")

    bare = functools.partial(process_limit, args.runs, args.concurrency)
    through = functools.partial(concurrent_rate, args.runs, args.concurrency, through_runner)
    figures: dict[str, object] = {"runs": args.runs, "concurrency": args.concurrency}
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.serve)  # the descendants' sweep, as in the server
        for round_ in range(1, args.rounds + 1):
            for name, measure in (("limit: bare spawns", bare), ("program runner", through)):
                progress(f"round {round_}: {args.runs} x {name}")
                rate, cpu_ms = await measure()
                figures[f"round {round_}: {name}/s"] = round(rate, 1)
                figures[f"round {round_}: {name}, CPU µs each"] = round(1000 * cpu_ms, 1)
        nursery.cancel_scope.cancel()
    report("program runner alone", figures, as_json=args.json)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    trio.run(main, parser.parse_args())
