"""SIGTERM drain: runs that finish within the grace succeed, the rest end with a reason.

A server with ``--shutdown-grace 3`` holds runs that finish within the grace (1 s),
runs that would not (60 s), runs that ignore SIGTERM (stopped by SIGKILL after their
``kill_grace_seconds``) and queued runs beyond ``--jobs-workers``; then it gets SIGTERM.
Invariants: exit status 0 within grace + kill grace + a margin; short runs succeeded;
long and stubborn runs ``cancelled`` saying the server shut down; queued runs still
queued (they run after the next start); no process of the jobs left; repeated
``--rounds`` times on SQLite and PostgreSQL (``--postgres``).
"""

from __future__ import annotations

import signal
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import trio

from drills._common import (
    Report,
    client,
    database,
    drill_marker,
    main,
    processes_with_marker,
    program_job,
    server,
    wait_for_metric,
)
from termjobs.storage.database import open_storage
from termjobs.storage.engine import resolve_url

GRACE_S = 3.0
KILL_GRACE_S = 2
MARGIN_S = 5.0
SHUTDOWN_MESSAGE = "cancelled: the server shut down before the run finished"


async def one_round(db: str, marker: str, report: Report, counts: Counter[str], round_no: int) -> float:
    """One server, loaded and drained; how long the drain took."""
    jobs = {
        "short": program_job("short", "sleep 1", marker, concurrency_policy="allow", max_concurrent_runs=10),
        "long": program_job("long", "sleep 60", marker, concurrency_policy="allow", max_concurrent_runs=10),
        "stubborn": program_job(
            "stubborn",
            "trap '' TERM; sleep 60",
            marker,
            concurrency_policy="allow",
            max_concurrent_runs=10,
        ),
        "waiting": program_job(
            "waiting", "sleep 1", marker, concurrency_policy="queue", max_concurrent_runs=10
        ),
    }
    jobs["stubborn"]["runner_config"]["kill_grace_seconds"] = KILL_GRACE_S
    plan = {"short": 4, "long": 3, "stubborn": 1, "waiting": 4}
    runs: dict[str, list[str]] = {name: [] for name in plan}
    async with (
        server(db, "--jobs-workers", "8", "--shutdown-grace", str(GRACE_S)) as proc,
        client(proc) as api,
    ):
        for name, body in jobs.items():
            body["name"] = f"{name}-{round_no}"
            job = (await api.post("/v2/jobs", json=body)).json()
            for _ in range(plan[name]):
                runs[name].append((await api.post(f"/v2/jobs/{job['id']}/trigger")).json()["id"])
        # 8 running, 4 waiting for a worker (a busy machine may take a while to start them)
        await wait_for_metric(api, 'termjobs_runs_started_total{runner="program"}', 8)
        started = trio.current_time()
        status = await proc.stop(signal.SIGTERM, within=GRACE_S + KILL_GRACE_S + 60)
        took = trio.current_time() - started
    report.expect(status == 0, f"exit status {status} after SIGTERM")
    report.expect(took <= GRACE_S + KILL_GRACE_S + MARGIN_S, f"the drain took {took:.1f}s")
    async with open_storage(resolve_url(db), inline=True) as storage:
        for name, ids in runs.items():
            for run_id in ids:
                stored = await storage.get_run(run_id, full=False)
                assert stored is not None
                counts[f"{name}: {stored.status.value}"] += 1
                expected = {"short": "succeeded", "long": "cancelled", "stubborn": "cancelled"}.get(name)
                if name == "waiting":
                    ok = stored.status.value in ("queued", "succeeded")  # queued beyond the workers
                else:
                    ok = stored.status.value == expected
                if name in ("long", "stubborn"):
                    ok = ok and stored.error == SHUTDOWN_MESSAGE
                report.expect(ok, f"{name} run ended {stored.status.value}: {stored.error}")
    return took


async def drill(kind: str, args: Any, workdir: Path) -> Report:
    report = Report(f"SIGTERM drain ({kind})")
    rounds = args.rounds or (1 if args.short else 5)
    marker = drill_marker()
    counts: Counter[str] = Counter()
    drains: list[float] = []
    for round_no in range(rounds):
        # A fresh database each round: the runs a drain leaves queued would otherwise
        # start first at the next round and take its workers.
        with database(kind, workdir / f"round-{round_no}", args.postgres) as db:
            drains.append(await one_round(db, marker, report, counts, round_no))
    await trio.sleep(0.5)
    report.figure("rounds", rounds)
    report.figure("grace + kill grace (s)", GRACE_S + KILL_GRACE_S)
    report.figure("drain time, max (s)", round(max(drains), 2))
    report.figure("runs by outcome", dict(sorted(counts.items())))
    report.expect_zero("processes left behind", len(processes_with_marker(marker)))
    return report


async def run(args: Any) -> list[Report]:
    kinds = ["sqlite"] + (["postgresql"] if args.postgres else [])
    with tempfile.TemporaryDirectory(prefix="termjobs-drill-") as tmp:
        return [await drill(kind, args, Path(tmp) / kind) for kind in kinds]


if __name__ == "__main__":
    main(
        run, __doc__.splitlines()[0], extra=[("--rounds", int, 0, "drain rounds (default 5; 1 with --short)")]
    )
