"""kill -9 loop: a busy server is SIGKILLed and restarted, again and again; nothing is lost.

Under continuous triggers, with cron and once jobs falling due and retries in flight,
the server is killed with SIGKILL at random moments (some during start-up and crash
recovery, before it even serves) and started again on the same database, ``--cycles``
times (100 in the full drill), on SQLite and on PostgreSQL (``--postgres``). Then a
last server pauses every job and lets everything settle. Invariants, all 0: runs left
non-terminal, accepted triggers (202) without a run, once fires doubled or missing,
failed runs whose retry is missing, scheduled fires recorded twice, and processes of
the jobs left running after the last graceful stop.
"""

from __future__ import annotations

import datetime as dt
import random
import signal
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from drills._common import (
    TOKEN,
    Report,
    database,
    drill_marker,
    expect_retries_kept,
    expect_runs_accounted,
    main,
    pause_all_and_settle,
    processes_with_marker,
    program_job,
    server,
)
from termjobs.testing import READY_MARKER, free_port, server_argv

FULL_CYCLES = 100
SHORT_CYCLES = 4
#: Share of cycles killed at a random moment of start-up (before or during recovery).
STARTUP_KILL_SHARE = 0.2
ONCE_SPACING_S = 2.0
SETTLE_S = 180.0
#: The retention cap is lifted: deleting the oldest runs of a busy job (as
#: --max-runs-per-job does, at every start) would look like lost runs here.
SERVER_ARGS = ("--jobs-workers", "8", "--max-runs-per-job", "1000000")


@dataclass
class Ledger:
    """What the clients saw across all cycles."""

    accepted: dict[str, str] = field(default_factory=dict)  # run id -> job id (202)
    answers: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    startup_kills: int = 0
    errors_logged: int = 0
    up_seconds: float = 0.0


def jobs_to_create(marker: str, start: dt.datetime, once_count: int) -> list[dict[str, Any]]:
    """Manual jobs (some failing once, with retries), cron jobs and once jobs."""
    retry = {"max_attempts": 3, "backoff": "fixed", "initial_delay": "1s"}
    many = {"concurrency_policy": "allow", "max_concurrent_runs": 20}
    jobs = [
        program_job(f"manual-{i}", f"sleep 0.{i % 4}{i}", marker, **many, timeout_seconds=30)
        for i in range(4)
    ]
    jobs += [
        program_job(
            f"flaky-{i}",
            f'sleep 0.{i + 2}; [ "$TERM_LLM_RUN_ATTEMPT" -ge 2 ]',
            marker,
            **many,
            retry_policy=retry,
        )
        for i in range(3)
    ]
    jobs.append(program_job("slow", "sleep 3", marker, **many, timeout_seconds=60))
    for i, (expression, command) in enumerate(
        [("* * * * *", "sleep 2"), ("* * * * *", "sleep 1; exit 1"), ("*/2 * * * *", "sleep 0.5")]
    ):
        jobs.append(
            program_job(
                f"cron-{i}",
                command,
                marker,
                trigger_type="cron",
                trigger_config={"expression": expression},
                retry_policy=retry,
            )
        )
    for i in range(once_count):
        run_at = start + dt.timedelta(seconds=10 + i * ONCE_SPACING_S)
        jobs.append(
            program_job(
                f"once-{i}",
                "sleep 0.5",
                marker,
                trigger_type="once",
                trigger_config={"run_at": run_at.isoformat().replace("+00:00", "Z")},
            )
        )
    return jobs


async def create_jobs(proc_url: str, jobs: list[dict[str, Any]]) -> list[str]:
    """Create the jobs on a server (retrying a 503); the manual jobs' ids."""
    manual: list[str] = []
    async with httpx.AsyncClient(base_url=proc_url, headers=_auth(), timeout=30) as api:
        for job in jobs:
            created = await api.post("/v2/jobs", json=job)
            created.raise_for_status()
            if job["trigger_type"] == "manual":
                manual.append(created.json()["id"])
    return manual


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


async def trigger_load(url: str, manual: list[str], ledger: Ledger, rng: random.Random) -> None:
    """Trigger random manual jobs until cancelled; every 202 is recorded."""
    async with httpx.AsyncClient(base_url=url, headers=_auth(), timeout=5) as api:
        while True:
            job_id = rng.choice(manual)
            try:
                answer = await api.post(f"/v2/jobs/{job_id}/trigger")
            except httpx.HTTPError:
                ledger.answers["connection error"] += 1
                await trio.sleep(0.05)
                continue
            ledger.answers[str(answer.status_code)] += 1
            if answer.status_code == 202:
                ledger.accepted[answer.json()["id"]] = job_id
            await trio.sleep(rng.uniform(0, 0.03))


async def one_life(db: str, port: int, manual: list[str], ledger: Ledger, rng: random.Random) -> None:
    """Start a server, load it for a while (or kill it during start-up), SIGKILL it."""
    argv = server_argv("--db", db, *SERVER_ARGS, "--shutdown-grace", "2", port=port, token=TOKEN)
    process = await trio.lowlevel.open_process(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = bytearray()
    ready = trio.Event()
    started = trio.current_time()

    async def collect() -> None:
        assert process.stderr is not None
        while chunk := await process.stderr.receive_some(65536):
            log.extend(chunk)
            if READY_MARKER in log:
                ready.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            if rng.random() < STARTUP_KILL_SHARE:
                await trio.sleep(rng.uniform(0.0, 2.5))  # imports, migrations, recovery...
                ledger.startup_kills += 0 if ready.is_set() else 1
            else:
                with trio.fail_after(60):
                    await ready.wait()
                with trio.move_on_after(rng.uniform(0.5, 4.0)):
                    await trigger_load(f"http://127.0.0.1:{port}", manual, ledger, rng)
            process.send_signal(signal.SIGKILL)
            ledger.kills += 1
            await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
        ledger.up_seconds += trio.current_time() - started
        ledger.errors_logged += log.count(b"Traceback")


def check(
    report: Report,
    jobs: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    ledger: Ledger,
    paused_at: dt.datetime,
) -> None:
    expect_runs_accounted(report, runs, ledger.accepted)
    doubled = missing = 0
    for job in jobs:
        if job["trigger_type"] != "once":
            continue
        fires = sum(1 for run in runs if run["job_id"] == job["id"] and run["trigger"] == "schedule")
        run_at = dt.datetime.fromisoformat(job["trigger_config"]["run_at"].replace("Z", "+00:00"))
        doubled += fires > 1
        missing += fires == 0 and run_at < paused_at - dt.timedelta(seconds=5)
    report.expect_zero("once fires doubled", doubled)
    report.expect_zero("once fires missing", missing)
    expect_retries_kept(report, jobs, runs)
    statuses = Counter(run["status"] for run in runs)
    report.figure("runs", len(runs))
    report.figure("runs by status", dict(sorted(statuses.items())))
    report.figure(
        "runs ended worker_lost (recovered)", sum(1 for r in runs if r.get("exit_reason") == "worker_lost")
    )
    report.figure("once jobs", sum(1 for job in jobs if job["trigger_type"] == "once"))
    report.figure("most runs of one job", max(Counter(run["job_id"] for run in runs).values(), default=0))


async def drill(kind: str, args: Any, workdir: Path) -> Report:
    report = Report(f"kill -9 loop ({kind})")
    cycles = args.cycles or (SHORT_CYCLES if args.short else FULL_CYCLES)
    rng = random.Random(9)
    marker = drill_marker()
    ledger = Ledger()
    port = free_port()
    once_count = max(5, int(cycles * 2.8 / ONCE_SPACING_S))
    with database(kind, workdir, args.postgres) as db:
        async with server(db, *SERVER_ARGS, port=port) as first:
            start = dt.datetime.now(dt.UTC)
            manual = await create_jobs(first.url, jobs_to_create(marker, start, once_count))
            first.process.send_signal(signal.SIGKILL)  # the first kill comes with the setup
            await first.process.wait()
            ledger.kills += 1
        for _ in range(cycles - 1):
            await one_life(db, port, manual, ledger, rng)
        async with server(db, *SERVER_ARGS, "--shutdown-grace", "5", port=port) as last:
            async with httpx.AsyncClient(base_url=last.url, headers=_auth(), timeout=30) as api:
                jobs, runs, paused_at = await pause_all_and_settle(api, within=SETTLE_S, tries=20)
            status = await last.stop(signal.SIGTERM, within=60)
            report.expect(status == 0, f"the last server exited with {status} on SIGTERM")
        await trio.sleep(1.0)  # killed process groups take a moment to disappear
    check(report, jobs, runs, ledger, paused_at)
    report.expect_zero("processes left behind", len(processes_with_marker(marker)))
    report.figure("SIGKILLs", ledger.kills)
    report.figure("SIGKILLs during start-up or recovery", ledger.startup_kills)
    report.figure("triggers accepted (202)", len(ledger.accepted))
    report.figure("trigger answers", dict(sorted(ledger.answers.items())))
    report.figure("tracebacks logged by the killed servers", ledger.errors_logged)
    return report


async def run(args: Any) -> list[Report]:
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    with tempfile.TemporaryDirectory(prefix="termjobs-drill-") as tmp:
        return [await drill(kind, args, Path(tmp) / kind) for kind in kinds]


if __name__ == "__main__":
    main(
        run,
        __doc__.splitlines()[0],
        extra=[("--cycles", int, 0, "SIGKILL/restart cycles (default 100; 4 with --short)")],
    )
