"""``python -m drills``: run every reliability drill and print one table.

Each drill is a script (``python -m drills.<name>``) that drives the real server on
loopback, prints its figures and exits 1 when an invariant was violated. ``--short``
runs a few iterations of each (what CI runs, a few minutes in all); the default is the
full drills (about half an hour on two cores). PostgreSQL variants run when
``--postgres`` (or ``TERMJOBS_TEST_POSTGRES_URL``) names a database; the outage drill
starts its own private PostgreSQL instead. Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DRILLS = ("malformed_input", "sigterm_drain", "kill9", "storage_outage", "hostile_clients", "cluster")


def run(name: str, *, short: bool, postgres: str | None) -> list[dict[str, Any]]:
    """One drill in a child process; its reports (or why it failed)."""
    argv = [sys.executable, "-m", f"drills.{name}", "--json", *(["--short"] if short else [])]
    env = {**os.environ}
    if postgres:
        env["TERMJOBS_TEST_POSTGRES_URL"] = postgres
    else:
        env.pop("TERMJOBS_TEST_POSTGRES_URL", None)
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, cwd=ROOT)
    reports = []
    for line in done.stdout.splitlines():
        try:
            reports.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not reports:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:]) or "no output"
        return [{"drill": name, "verdict": "FAILED", "violations": [f"exit {done.returncode}: {tail}"]}]
    return reports


def show(report: dict[str, Any]) -> str:
    lines = [f"== {report.get('drill')}: {report.get('verdict')}"]
    for key, value in report.items():
        if key not in ("drill", "verdict", "violations"):
            lines.append(f"  {key:<58} {value}")
    lines += [f"  VIOLATION: {text}" for text in report.get("violations", [])]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m drills", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="a few iterations of each drill (CI)")
    size.add_argument("--full", action="store_true", help="the full drills (the default)")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("TERMJOBS_TEST_POSTGRES_URL"),
        help="PostgreSQL database for the PostgreSQL variants [env: TERMJOBS_TEST_POSTGRES_URL]",
    )
    parser.add_argument(
        "--only", action="append", default=[], help="run only drills whose name contains this"
    )
    args = parser.parse_args()
    chosen = [name for name in DRILLS if not args.only or any(text in name for text in args.only)]
    started = time.perf_counter()
    violated = 0
    for index, name in enumerate(chosen, 1):
        print(f"[{index}/{len(chosen)}] {name} ...", file=sys.stderr, flush=True)
        for report in run(name, short=args.short, postgres=args.postgres):
            print(show(report), flush=True)
            violated += report.get("verdict") != "ok"
    verdict = "all invariants held" if not violated else f"{violated} drill report(s) VIOLATED"
    print(f"\n{len(chosen)} drill(s) in {time.perf_counter() - started:.0f}s: {verdict}")
    sys.exit(1 if violated else 0)


if __name__ == "__main__":
    main()
