"""``term-llm bench``: run the benchmark suite in ``benchmarks/`` and print one table.

Each script runs on its own (a real server process, loopback only), prints its figures
as JSON with ``--json``, and measures its own limit in the same run. The suite takes
about seven minutes on a 2-core machine (385 s measured).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncclick as click

import termjobs


@dataclass(frozen=True, slots=True)
class Bench:
    name: str
    script: str
    args: tuple[str, ...] = ()
    needs_postgres: bool = False


SUITE = (
    Bench("run throughput (sqlite)", "run_throughput.py"),
    Bench("run throughput (postgresql)", "run_throughput.py", needs_postgres=True),
    Bench("scheduling precision", "schedule_precision.py"),
    Bench("scale at rest", "scale_at_rest.py"),
    Bench("api", "api_wrk.py"),
    Bench("event ingestion", "events_ingest.py"),
    Bench("stream fan-out", "stream_fanout.py"),
    Bench("peer: APScheduler 4", "peer_apscheduler.py"),
)


def benchmarks_dir() -> Path:
    """The ``benchmarks/`` folder of the source tree this package runs from."""
    return Path(termjobs.__file__).resolve().parent.parent / "benchmarks"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--postgres",
    envvar="TERMJOBS_BENCH_POSTGRES_URL",
    default=None,
    help="Also measure run throughput on this PostgreSQL database "
    "[env: TERMJOBS_BENCH_POSTGRES_URL]; a temporary schema is used and dropped.",
)
@click.option("--only", multiple=True, help="Run only the benchmarks whose name contains this text.")
@click.option("--json", "as_json", is_flag=True, help="Print all figures as one JSON document.")
def bench(postgres: str | None, only: tuple[str, ...], as_json: bool) -> None:
    """Run the benchmark suite (see benchmarks/RESULTS.md) and print one table."""
    folder = benchmarks_dir()
    if not (folder / "_server.py").exists():
        raise click.ClickException(f"no benchmark scripts at {folder}: run `term-llm bench` from a clone")
    chosen = [b for b in SUITE if not only or any(text in b.name for text in only)]
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    with click.progressbar(chosen, label="benchmarks", item_show_func=_label, file=sys.stderr) as bar:
        for item in bar:
            results.append(_run(folder, item, postgres))
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(_table(results))
    click.echo(f"\n{len(results)} benchmark(s) in {time.perf_counter() - started:.0f}s")


def _label(item: Bench | None) -> str:
    return item.name if item else ""


def _run(folder: Path, item: Bench, postgres: str | None) -> dict[str, Any]:
    if item.needs_postgres and not postgres:
        return {"benchmark": item.name, "skipped": "no --postgres URL (or TERMJOBS_BENCH_POSTGRES_URL)"}
    argv = [sys.executable, str(folder / item.script), "--json", *item.args]
    if item.needs_postgres and postgres:
        argv += ["--db", postgres]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=os.environ.copy())
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"benchmark": item.name, "failed": f"exit {done.returncode}: {tail}"}
    try:
        figures: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"benchmark": item.name, "skipped": lines[-1]}
    return figures


def _table(results: list[dict[str, Any]]) -> str:
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
