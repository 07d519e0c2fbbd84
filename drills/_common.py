"""What every drill shares: arguments, figures and verdicts, the server, process checks.

A drill prints its figures (or one JSON line with ``--json``) and exits 1 if any
invariant was violated, 0 otherwise. ``--short`` runs a few iterations (CI); the
default is the full drill. The server is the real ``term-llm serve jobs`` process
(``termjobs.testing.serve_process``), on loopback only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from termjobs.testing import ServerProcess, postgres_schema, serve_process

TOKEN = "drill-token"
#: Every job a drill creates carries this variable, so leftover processes can be found.
MARKER_ENV = "TERMJOBS_DRILL"
TERMINAL = frozenset({"succeeded", "failed", "timed_out", "cancelled", "skipped"})


@dataclass
class Report:
    """A drill's figures and the invariants it found violated."""

    drill: str
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def figure(self, name: str, value: Any) -> None:
        self.figures[name] = value

    def expect(self, ok: bool, violation: str) -> None:
        """Record ``violation`` unless ``ok``."""
        if not ok:
            self.violations.append(violation)

    def expect_zero(self, name: str, value: int) -> None:
        """A count that must be 0: a figure, and a violation if it is not."""
        self.figures[name] = value
        self.expect(value == 0, f"{name} = {value} (must be 0)")

    def finish(self, *, as_json: bool) -> int:
        """Print the report; the exit status (1 on any violation)."""
        self.figures["seconds"] = round(time.monotonic() - self.started, 1)
        self.figures["verdict"] = "ok" if not self.violations else "VIOLATED"
        if as_json:
            print(json.dumps({"drill": self.drill, **self.figures, "violations": self.violations}))
        else:
            print(f"== {self.drill}")
            for name, value in self.figures.items():
                print(f"  {name:<42} {_format(value)}")
            for violation in self.violations:
                print(f"  VIOLATION: {violation}")
        return 1 if self.violations else 0


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def parser(description: str) -> argparse.ArgumentParser:
    """The arguments every drill takes."""
    args = argparse.ArgumentParser(description=description)
    args.add_argument("--short", action="store_true", help="a few iterations (CI), not the full drill")
    args.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    args.add_argument(
        "--postgres",
        default=os.environ.get("TERMJOBS_TEST_POSTGRES_URL"),
        help="PostgreSQL database for the PostgreSQL variant (a scratch schema is used) "
        "[env: TERMJOBS_TEST_POSTGRES_URL]; without it that variant is skipped",
    )
    return args


@contextmanager
def database(kind: str, workdir: Path, postgres: str | None) -> Iterator[str]:
    """A ``--db`` value: a SQLite file in ``workdir``, or a scratch PostgreSQL schema."""
    if kind == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)
        yield str(workdir / "jobs.db")
        return
    assert postgres is not None
    with postgres_schema(postgres, prefix="drill") as url:
        yield url.render_as_string(hide_password=False)


@asynccontextmanager
async def server(
    db: str, *extra: str, port: int | None = None, env: Mapping[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    """The real server on ``db``, with the drill token (and ``env`` added to its
    environment); SIGKILLed at the end if still up."""
    import signal

    async with serve_process(
        "--db", db, *extra, token=TOKEN, port=port, env=env, teardown=signal.SIGKILL
    ) as proc:
        yield proc


def client(proc: ServerProcess, *, timeout: float = 30) -> httpx.AsyncClient:
    return proc.client(timeout=timeout)


def drill_marker() -> str:
    """A value for :data:`MARKER_ENV` unique to this drill run."""
    return f"drill-{secrets.token_hex(6)}"


def program_job(name: str, command: str, marker: str, **fields: Any) -> dict[str, Any]:
    """A ``program`` job running ``command`` under ``/bin/sh``, carrying the marker."""
    return {
        "name": name,
        "runner_type": "program",
        "runner_config": {"command": command, "shell": True, "env": {MARKER_ENV: marker}},
        "trigger_type": "manual",
        **fields,
    }


def processes_with_marker(marker: str) -> list[int]:
    """Live processes whose environment carries ``MARKER_ENV=marker`` (leftovers)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


async def all_runs(api: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    """Every run (summaries), paging through the list."""
    runs: list[dict[str, Any]] = []
    while True:
        page = await api.get(
            "/v2/runs", params={"summary": "1", "limit": "200", "offset": str(len(runs)), **params}
        )
        page.raise_for_status()
        data = page.json()["data"]
        runs += data
        if len(data) < 200:
            return runs


async def metric(api: httpx.AsyncClient, sample: str) -> float:
    """The value of the ``/metrics`` sample ``sample`` (name and labels as printed), 0
    when absent."""
    reply = await api.get("/metrics")
    reply.raise_for_status()
    for line in reply.text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


async def wait_for_metric(
    api: httpx.AsyncClient, sample: str, at_least: float, *, within: float = 60
) -> None:
    """Until ``sample`` reaches ``at_least``: what a drill waits for instead of a fixed
    time that a busy machine outlasts."""
    with trio.fail_after(within):
        while await metric(api, sample) < at_least:
            await trio.sleep(0.05)


async def all_jobs(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every job, paging through the list."""
    jobs: list[dict[str, Any]] = []
    while True:
        page = await api.get("/v2/jobs", params={"limit": "200", "offset": str(len(jobs))})
        page.raise_for_status()
        data = page.json()["data"]
        jobs += data
        if len(data) < 200:
            return jobs


def main(run: Any, description: str, extra: list[tuple[str, type, Any, str]] = ()) -> None:  # type: ignore[assignment]
    """Parse the arguments (the common ones and ``extra``: flag, type, default, help),
    run ``run(args)`` (a list of reports) under trio, print them and exit."""
    import trio

    options = parser(description)
    for flag, kind, default, text in extra:
        options.add_argument(flag, type=kind, default=default, help=text)
    args = options.parse_args()
    reports: list[Report] = trio.run(run, args)
    status = 0
    for report in reports:
        status |= report.finish(as_json=args.json)
    sys.exit(status)


async def pause_all_and_settle(
    api: httpx.AsyncClient, *, within: float, tries: int = 20
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dt.datetime]:
    """Pause every job (each pause retried ``tries`` times, a server may be starting),
    then wait up to ``within`` seconds until every run is terminal; jobs, runs, and
    when the pauses were done."""
    for job in await all_jobs(api):
        for _ in range(tries):
            if (await api.post(f"/v2/jobs/{job['id']}/pause")).status_code == 200:
                break
            await trio.sleep(0.5)
    paused_at = dt.datetime.now(dt.UTC)
    with trio.move_on_after(within):
        while any(run["status"] not in TERMINAL for run in await all_runs(api)):
            await trio.sleep(0.5)
    return await all_jobs(api), await all_runs(api), paused_at


def expect_runs_accounted(report: Report, runs: list[dict[str, Any]], accepted: Iterable[str]) -> None:
    """What every loss drill checks: no run left non-terminal, every accepted trigger
    (``accepted``: the run ids answered 202) has its run, no scheduled slot fired twice."""
    stored = {run["id"] for run in runs}
    report.expect_zero("runs left non-terminal", sum(1 for run in runs if run["status"] not in TERMINAL))
    report.expect_zero(
        "accepted triggers without a run", sum(1 for run_id in accepted if run_id not in stored)
    )
    scheduled = Counter((run["job_id"], run["scheduled_for"]) for run in runs if run["trigger"] == "schedule")
    report.expect_zero("scheduled fires recorded twice", sum(1 for n in scheduled.values() if n > 1))


def expect_retries_kept(report: Report, jobs: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    """Every run that failed with attempts left under its job's retry policy has its retry."""
    retried = {run["retry_of"] for run in runs if run.get("retry_of")}
    policies = {job["id"]: job.get("retry_policy") for job in jobs}
    lost_retries = 0
    for run in runs:
        policy = policies.get(run["job_id"])
        if run["status"] in ("failed", "timed_out") and policy and run["attempt"] < policy["max_attempts"]:
            lost_retries += run["id"] not in retried
    report.expect_zero("failed runs whose retry is missing", lost_retries)
