"""``python -m benchmarks``: run the benchmark suite and print one table.

Each script runs on its own (a real server process, loopback only), prints its figures
as JSON with ``--json``, and measures its own limit in the same run. The suite takes
about seven minutes on a 2-core machine. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    module: str
    args: tuple[str, ...] = ()
    needs_postgres: bool = False


SUITE = (
    Bench("run throughput (sqlite)", "run_throughput"),
    Bench("run throughput (postgresql)", "run_throughput", needs_postgres=True),
    Bench("scheduling precision", "schedule_precision"),
    Bench("scale at rest", "scale_at_rest"),
    Bench("api", "api_wrk"),
    Bench("event ingestion", "events_ingest"),
    Bench("stream fan-out", "stream_fanout"),
    Bench("peer: APScheduler 4", "peer_apscheduler"),
)


def run(item: Bench, postgres: str | None) -> dict[str, Any]:
    """One benchmark in a child process; its figures (or why it was skipped or failed)."""
    if item.needs_postgres and not postgres:
        return {"benchmark": item.name, "skipped": "no --postgres URL (or TERMJOBS_BENCH_POSTGRES_URL)"}
    argv = [sys.executable, "-m", f"benchmarks.{item.module}", "--json", *item.args]
    if item.needs_postgres and postgres:
        argv += ["--db", postgres]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=os.environ.copy(), cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"benchmark": item.name, "failed": f"exit {done.returncode}: {tail}"}
    try:
        figures: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"benchmark": item.name, "skipped": lines[-1]}
    return figures


def table(results: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, str, str]] = []
    for result in results:
        name = str(result.get("benchmark", "?"))
        for key, value in result.items():
            if key != "benchmark":
                rows.append((name, key, _format(value)))
                name = ""
    widths = [max(len(row[i]) for row in [("BENCHMARK", "FIGURE", "VALUE"), *rows]) for i in range(3)]
    lines = [f"{'BENCHMARK':<{widths[0]}}  {'FIGURE':<{widths[1]}}  VALUE"]
    lines += [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TERMJOBS_BENCH_POSTGRES_URL"),
        help="also measure run throughput on this PostgreSQL database (a temporary schema is used)",
    )
    parser.add_argument(
        "--only", action="append", default=[], help="run only benchmarks whose name contains this"
    )
    parser.add_argument("--json", action="store_true", help="print all figures as one JSON document")
    parser.add_argument(
        "--plot",
        metavar="DIR",
        type=Path,
        help="draw the cost curves as PNGs in DIR",
    )
    parser.add_argument("--quick", action="store_true", help="with --plot: fewer, smaller points")
    parser.add_argument("--replot", action="store_true", help="with --plot: redraw DIR/figures.json")
    args = parser.parse_args()
    if args.plot is not None:
        from benchmarks.plot import plot

        plot(args.plot, quick=args.quick, replot=args.replot)
        return
    chosen = [b for b in SUITE if not args.only or any(text in b.name for text in args.only)]
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for index, item in enumerate(chosen, 1):
        print(f"[{index}/{len(chosen)}] {item.name} ...", file=sys.stderr, flush=True)
        results.append(run(item, args.postgres))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(table(results))
    print(f"\n{len(results)} benchmark(s) in {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
