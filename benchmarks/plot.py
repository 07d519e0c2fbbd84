"""Cost curves as pictures: ``python -m benchmarks --plot DIR``.

Three sweeps, each point a run of the benchmark script that measures it (a real
server, its limit measured beside it), drawn as PNG charts with their limit lines:

- ``run_throughput.png``: completed no-op runs per second against ``--jobs-workers``
  (1 to 64), with bare `trio.run_process(["true"])` spawns at the same concurrency
  and the 60% target;
- ``fire_lag.png``: fire lag p50 and p99 against the number of cron jobs due in one
  minute (1,000, 10,000, 100,000), with the targets;
- ``scale_at_rest.png``: start-up time and RSS against the number of jobs at rest
  (10,000, 100,000, 1,000,000), with the 20 s and 1 GB limits.

The figures of every point are written beside the charts (``figures.json``), so a
chart can be redrawn without measuring again (``--replot``). Needs matplotlib (the
``[bench]`` extra). The full sweep takes about 15 minutes on two cores; ``--quick``
measures fewer, smaller points (a few minutes) to check that it works.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: Targets drawn as limit lines (issue "Performance", benchmarks/RESULTS.md).
RUN_RATIO_TARGET = 0.60
LAG_P99_TARGET_MS = {1_000: 50.0, 10_000: 500.0, 100_000: 5_000.0}
START_TARGET_S = 20.0
RSS_TARGET_MB = 1024.0


@dataclass(frozen=True, slots=True)
class Sweep:
    """What to measure at each point of one chart."""

    name: str
    points: Sequence[int]
    measure: Callable[[int], dict[str, Any]]


def figures_of(module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m benchmarks.<module> --json ARGS`` and return its figures."""
    argv = [sys.executable, "-m", f"benchmarks.{module}", "--json", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=ROOT, env=os.environ.copy())
    lines = [line for line in done.stdout.splitlines() if line.strip().startswith("{")]
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-5:]) or "no output"
        raise RuntimeError(f"benchmarks.{module} {' '.join(args)} failed (exit {done.returncode}):\n{tail}")
    figures: dict[str, Any] = json.loads(lines[-1])
    return figures


def run_point(workers: int, runs: int) -> dict[str, Any]:
    args = ("--workers", str(workers), "--clients", "16", "--runs", str(runs), "--triggered-only")
    got = figures_of("run_throughput", *args)
    return {
        "rate": got["termjobs completed runs/s"],
        "limit": got["limit: bare spawns/s"],
        # Without wrk the script triggers from Python, which takes a core from the server.
        "trigger": "wrk" if shutil.which("wrk") else "python",
    }


def lag_point(count: int) -> dict[str, Any]:
    # The script fires a small set one minute and a large set the next; the point is
    # the large set (the small one is a minimal warm-up).
    settle = str(max(8, count // 10_000 * 2))
    got = figures_of("schedule_precision", "--small", "10", "--large", str(count), "--settle", settle)
    return {
        "fired": got[f"{count} jobs: fired"],
        "p50_ms": got[f"{count} jobs: lag p50 ms"],
        "p99_ms": got[f"{count} jobs: lag p99 ms"],
    }


def rest_point(jobs: int) -> dict[str, Any]:
    got = figures_of("scale_at_rest", "--jobs", str(jobs))
    return {
        "start_s": got["start-up to serving s"],
        "rss_mb": got["RSS after listing MB"],
        "list_p99_ms": got["GET /v2/jobs?limit=50 p99 ms"],
        "empty_start_s": got["limit: empty server start-up s"],
        "empty_rss_mb": got["limit: empty server RSS MB"],
    }


def sweeps(*, quick: bool) -> list[Sweep]:
    runs = 500 if quick else 3000
    return [
        Sweep("run_throughput", (1, 16) if quick else (1, 2, 4, 8, 16, 32, 64), lambda w: run_point(w, runs)),
        Sweep("fire_lag", (1_000,) if quick else (1_000, 10_000, 100_000), lag_point),
        Sweep("scale_at_rest", (10_000,) if quick else (10_000, 100_000, 1_000_000), rest_point),
    ]


def measure(out: Path, *, quick: bool) -> dict[str, dict[str, dict[str, Any]]]:
    """Every point of every sweep, saved to ``figures.json`` as it goes."""
    data: dict[str, dict[str, dict[str, Any]]] = {}
    total = sum(len(sweep.points) for sweep in sweeps(quick=quick))
    done = 0
    started = time.perf_counter()
    if not shutil.which("wrk"):
        print(
            "wrk not found: runs will be triggered from Python, which takes a core from the server "
            "and understates its runs/s (apt-get install wrk)",
            file=sys.stderr,
            flush=True,
        )
    for sweep in sweeps(quick=quick):
        data[sweep.name] = {}
        for point in sweep.points:
            done += 1
            print(f"[{done}/{total}] {sweep.name} at {point:,} ...", file=sys.stderr, flush=True)
            data[sweep.name][str(point)] = sweep.measure(point)
            (out / "figures.json").write_text(json.dumps(data, indent=2) + "\n")
    print(f"measured in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return data


def draw(data: dict[str, dict[str, dict[str, Any]]], out: Path) -> list[Path]:
    """The charts of ``data``; the files written."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    if points := data.get("run_throughput"):
        xs = sorted(int(k) for k in points)
        rate = [points[str(x)]["rate"] for x in xs]
        limit = [points[str(x)]["limit"] for x in xs]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot(xs, limit, "o--", color="grey", label="limit: bare trio spawns/s")
        ax.plot(
            xs, [RUN_RATIO_TARGET * v for v in limit], ":", color="tab:red", label="target: 60% of the limit"
        )
        ax.plot(xs, rate, "o-", color="tab:blue", label="termjobs: completed runs/s")
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        title = "No-op program runs (SQLite)"
        if any(points[str(x)].get("trigger") == "python" for x in xs):
            title += ", triggered from Python (no wrk)"
        ax.set(xlabel="--jobs-workers", ylabel="runs per second", title=title)
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, "run_throughput")

    if points := data.get("fire_lag"):
        xs = sorted(int(k) for k in points)
        fig, ax = plt.subplots(figsize=(7, 4.2))
        ax.plot(xs, [points[str(x)]["p50_ms"] for x in xs], "o-", label="lag p50")
        ax.plot(xs, [points[str(x)]["p99_ms"] for x in xs], "o-", label="lag p99")
        ax.plot(xs, [LAG_P99_TARGET_MS[x] for x in xs], ":", color="tab:red", label="target p99")
        late = [
            f"at {x:,}: only {points[str(x)]['fired']:,} queued in time (lags are of those)"
            for x in xs
            if points[str(x)].get("fired", x) < x
        ]
        if late:
            note = "\n".join(late)
            ax.text(0.98, 0.04, note, transform=ax.transAxes, ha="right", fontsize=8, color="tab:red")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(xs, [f"{x:,}" for x in xs])
        ax.set(xlabel="cron jobs due in the same minute", ylabel="fire time to queued (ms)", title="Fire lag")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
        save(fig, "fire_lag")

    if points := data.get("scale_at_rest"):
        xs = sorted(int(k) for k in points)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
        left.plot(xs, [points[str(x)]["start_s"] for x in xs], "o-", label="start-up to serving")
        left.axhline(START_TARGET_S, linestyle=":", color="tab:red", label=f"limit {START_TARGET_S:g} s")
        left.set(xlabel="jobs at rest", ylabel="seconds", title="Start-up time")
        right.plot(xs, [points[str(x)]["rss_mb"] for x in xs], "o-", color="tab:green", label="RSS")
        right.axhline(RSS_TARGET_MB, linestyle=":", color="tab:red", label="limit 1 GB")
        right.set(xlabel="jobs at rest", ylabel="MB", title="Resident memory")
        for ax in (left, right):
            ax.set_xscale("log")
            ax.set_xticks(xs, [f"{x:,}" for x in xs])
            ax.grid(alpha=0.3)
            ax.legend()
        save(fig, "scale_at_rest")
    return written


def plot(out: Path, *, quick: bool, replot: bool) -> None:
    try:
        import matplotlib  # noqa: F401  (checked before measuring for half an hour)
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads((out / "figures.json").read_text()) if replot else measure(out, quick=quick)
    for path in draw(data, out):
        print(path)
