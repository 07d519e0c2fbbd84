"""Cluster: servers of one PostgreSQL database are SIGKILLed and replaced under load.

Three servers (``--lease-seconds 3``) share a fresh PostgreSQL schema. While once jobs
fall due every 2 s, cron jobs every minute and two clients trigger manual jobs (``allow``
and ``forbid``, some failing their first attempt and retrying) through random servers,
a server owning jobs is SIGKILLed every few seconds (4 times with ``--short``, 30 in the
full drill) and a replacement started on the same port, so the cluster stays at three.
Half of the replacements come up as on another host (``TERMJOBS_CLUSTER_NAMESPACE``
changes: the dead server's jobs are taken on its lease alone, the worst case), half on
the same host (the replacement may bury its predecessor at once). For every kill the
takeover lag is measured in the database: from the SIGKILL until every job the server
owned is owned by another live server. Then the jobs are paused, everything settles
and every server gets SIGTERM. Invariants, all 0: takeovers slower than two leases plus
10 s, runs left non-terminal, accepted triggers (202) without a run, once fires doubled
or missing, scheduled fires recorded twice, cron minutes without a fire, ``forbid`` runs
overlapping, failed runs whose retry is missing, answers that were 5xx other than 503
with ``Retry-After`` (the job had no live owner yet), servers not exiting 0 on SIGTERM
and processes of the jobs left behind. PostgreSQL only (``--postgres``); skipped
without it.
"""

from __future__ import annotations

import datetime as dt
import random
import secrets
import signal
import statistics
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
import trio

from drills._common import (
    TOKEN,
    Report,
    client,
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
from termjobs.storage.engine import resolve_url
from termjobs.storage.tables import jobs as jobs_table
from termjobs.storage.tables import workers as workers_table
from termjobs.testing import ServerProcess, free_port

SERVERS = 3
LEASE_S = 3
#: A takeover slower than this is a violation.
TAKEOVER_LIMIT_S = 2 * LEASE_S + 10.0
#: A takeover is given up on (and counted over the limit) after this long.
TAKEOVER_GIVE_UP_S = 60.0
FULL_KILLS = 30
SHORT_KILLS = 4
#: The load lasts at least this long (the short one spans a cron minute or two).
FULL_LOAD_S = 390.0
SHORT_LOAD_S = 75.0
ONCE_SPACING_S = 2.0
#: The first once job falls due this long after the jobs are created...
ONCE_FIRST_S = 10.0
#: ...and the last one this long before the load ends.
ONCE_LAST_BEFORE_END_S = 15.0
TRIGGER_CLIENTS = 2
#: Pause between two triggers of one client (uniform, seconds).
TRIGGER_GAP_S = (0.02, 0.15)
#: After the last takeover, before pausing: fires that were due get recorded.
QUIET_S = 5.0
SETTLE_S = 120.0
POLL_S = 0.1
SERVER_ARGS = (
    "--lease-seconds",
    str(LEASE_S),
    "--jobs-workers",
    "8",
    "--shutdown-grace",
    "5",
    # The retention cap is lifted: deleting runs would look like lost runs.
    "--max-runs-per-job",
    "1000000",
)
EXECUTING = ("claimed", "running", "cancel_requested")


def new_namespace() -> str:
    return f"host-{secrets.token_hex(4)}"


@dataclass
class Slot:
    """One of the cluster's places: a server, replaced by a new one when killed."""

    index: int
    port: int = field(default_factory=free_port)
    namespace: str = field(default_factory=new_namespace)
    proc: ServerProcess | None = None
    worker_id: str = ""
    up: trio.Event = field(default_factory=trio.Event)
    order: trio.Event = field(default_factory=trio.Event)
    stopping: bool = False
    exit_status: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def killed(self, *, same_host: bool) -> None:
        """Its server was just SIGKILLed: start the next one (on the same host or not)."""
        self.proc = None
        self.up = trio.Event()
        if not same_host:
            self.namespace = new_namespace()
        self.order.set()

    def stop(self) -> None:
        """Stop its server with SIGTERM, for good."""
        self.stopping = True
        self.order.set()


@dataclass
class Ledger:
    """What the clients and the kill loop saw."""

    accepted: dict[str, str] = field(default_factory=dict)  # run id -> job id (202)
    answers: Counter[str] = field(default_factory=Counter)
    bad_answers: list[str] = field(default_factory=list)
    kills: int = 0
    kills_same_host: int = 0
    kills_without_jobs: int = 0
    lags_lease: list[float] = field(default_factory=list)
    lags_same_host: list[float] = field(default_factory=list)
    starts: int = 0
    tracebacks: int = 0
    exit_statuses: list[int] = field(default_factory=list)


def jobs_to_create(marker: str, start: dt.datetime, once_count: int) -> list[dict[str, Any]]:
    """Manual jobs (allow and forbid, some failing once and retrying), cron jobs, once jobs."""
    retry = {"max_attempts": 3, "backoff": "fixed", "initial_delay": "1s"}
    fail_once = '[ "$TERM_LLM_RUN_ATTEMPT" -ge 2 ]'
    many = {"concurrency_policy": "allow", "max_concurrent_runs": 20}
    jobs = [program_job(f"manual-{i}", f"sleep 0.{i + 1}", marker, **many) for i in range(4)]
    jobs += [
        program_job(f"flaky-{i}", f"sleep 0.{i + 2}; {fail_once}", marker, **many, retry_policy=retry)
        for i in range(2)
    ]
    jobs += [
        program_job(f"forbid-{i}", f"sleep 0.{5 + 2 * i}", marker, concurrency_policy="forbid")
        for i in range(2)
    ]
    jobs.append(
        program_job(
            "forbid-flaky", f"sleep 1; {fail_once}", marker, concurrency_policy="forbid", retry_policy=retry
        )
    )
    for i, command in enumerate(["sleep 1", f"sleep 0.5; {fail_once}"]):
        jobs.append(
            program_job(
                f"cron-{i}",
                command,
                marker,
                trigger_type="cron",
                trigger_config={"expression": "* * * * *"},
                retry_policy=retry,
            )
        )
    for i in range(once_count):
        run_at = start + dt.timedelta(seconds=ONCE_FIRST_S + i * ONCE_SPACING_S)
        jobs.append(
            program_job(
                f"once-{i}",
                f"sleep 0.3; {fail_once}" if i % 5 == 0 else "sleep 0.3",
                marker,
                trigger_type="once",
                trigger_config={"run_at": run_at.isoformat().replace("+00:00", "Z")},
                retry_policy=retry,
            )
        )
    return jobs


# ------------------------------------------------------------------ servers


async def keep_serving(slot: Slot, db: str, ledger: Ledger) -> None:
    """The slot's server, replaced each time it is killed, until told to stop."""
    while True:
        async with server(
            db, *SERVER_ARGS, port=slot.port, env={"TERMJOBS_CLUSTER_NAMESPACE": slot.namespace}
        ) as proc:
            ledger.starts += 1
            async with client(proc) as api:
                answer = await api.get("/v2/cluster")
                answer.raise_for_status()
                slot.worker_id = answer.json()["this_server"]
            slot.proc = proc
            slot.up.set()
            await slot.order.wait()
            slot.order = trio.Event()
            if slot.stopping:
                slot.proc = None
                slot.exit_status = await proc.stop(signal.SIGTERM, within=60)
            else:
                await proc.process.wait()  # SIGKILLed by the kill loop
            ledger.tracebacks += proc.log.count("Traceback")
        if slot.stopping:
            return


# ---------------------------------------------------------------- the load


async def trigger_load(
    slots: Sequence[Slot], targets: Sequence[str], ledger: Ledger, rng: random.Random
) -> None:
    """Trigger random manual jobs through random live servers until cancelled."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        while True:
            serving = [slot for slot in slots if slot.proc is not None]
            if not serving:
                await trio.sleep(0.1)
                continue
            job_id = rng.choice(targets)
            try:
                answer = await http.post(f"{rng.choice(serving).url}/v2/jobs/{job_id}/trigger")
            except httpx.HTTPError:
                ledger.answers["connection error"] += 1  # its server was killed
                await trio.sleep(0.05)
                continue
            status = answer.status_code
            ledger.answers[str(status)] += 1
            if status == 202:
                ledger.accepted[answer.json()["id"]] = job_id
            elif status >= 500 and not (status == 503 and "retry-after" in answer.headers):
                ledger.bad_answers.append(f"trigger of {job_id} answered {status}: {answer.text[:200]}")
            await trio.sleep(rng.uniform(*TRIGGER_GAP_S))


# -------------------------------------------------------------- takeovers


def _live_ids() -> sa.Select[tuple[str]]:
    lease = sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.literal(float(LEASE_S), sa.Float))
    return sa.select(workers_table.c.id).where(
        workers_table.c.left_at.is_(None), workers_table.c.heartbeat_at > sa.func.now() - lease
    )


def owned_by(engine: sa.Engine, worker_id: str) -> list[str]:
    with engine.connect() as conn:
        query = sa.select(jobs_table.c.id).where(jobs_table.c.owner_id == worker_id)
        return list(conn.execute(query).scalars())


def without_new_owner(engine: sa.Engine, job_ids: Sequence[str], dead: str) -> int:
    """How many of ``job_ids`` no live server but ``dead`` owns (the database's clock)."""
    c = jobs_table.c
    with engine.connect() as conn:
        query = (
            sa.select(sa.func.count())
            .select_from(jobs_table)
            .where(
                c.id.in_(list(job_ids)),
                sa.or_(c.owner_id.is_(None), c.owner_id == dead, c.owner_id.not_in(_live_ids())),
            )
        )
        return int(conn.execute(query).scalar_one())


async def pick_victim(slots: Sequence[Slot], rng: random.Random) -> Slot:
    """A server owning jobs (as ``GET /v2/cluster`` on a random server tells), at random."""
    asked = rng.choice(slots)
    assert asked.proc is not None
    owning: set[str] = set()
    try:
        async with client(asked.proc, timeout=10) as api:
            answer = await api.get("/v2/cluster")
            answer.raise_for_status()
            owning = {row["id"] for row in answer.json()["servers"] if row["alive"] and row["jobs_owned"]}
    except httpx.HTTPError:
        pass
    candidates = [slot for slot in slots if slot.worker_id in owning] or list(slots)
    return rng.choice(candidates)


async def kill_loop(
    slots: Sequence[Slot], engine: sa.Engine, kills: int, load_s: float, ledger: Ledger, rng: random.Random
) -> None:
    """SIGKILL a server owning jobs every ``load_s / kills`` seconds or so, measure each
    takeover; return once the load time is over and the cluster is whole again."""
    started = trio.current_time()
    interval = load_s / kills
    for kill in range(kills):
        await trio.sleep_until(started + (kill + rng.uniform(0.3, 0.9)) * interval)
        for slot in slots:
            await slot.up.wait()
        victim = await pick_victim(slots, rng)
        dead = victim.worker_id
        owned = await trio.to_thread.run_sync(owned_by, engine, dead)
        same_host = kill % 2 == 1
        assert victim.proc is not None
        victim.proc.process.send_signal(signal.SIGKILL)
        killed_at = trio.current_time()
        victim.killed(same_host=same_host)
        ledger.kills += 1
        ledger.kills_same_host += same_host
        if not owned:
            ledger.kills_without_jobs += 1
            continue
        while await trio.to_thread.run_sync(without_new_owner, engine, owned, dead):
            if trio.current_time() - killed_at > TAKEOVER_GIVE_UP_S:
                break
            await trio.sleep(POLL_S)
        lag = trio.current_time() - killed_at
        (ledger.lags_same_host if same_host else ledger.lags_lease).append(lag)
    await trio.sleep_until(started + load_s)
    for slot in slots:
        await slot.up.wait()


# ------------------------------------------------------------ the verdict


def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def check(
    report: Report,
    jobs: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    ledger: Ledger,
    paused_at: dt.datetime,
) -> None:
    expect_runs_accounted(report, runs, ledger.accepted)
    fired = [run for run in runs if run["trigger"] == "schedule"]
    doubled = missing = 0
    cron_slots = cron_missed = 0
    for job in jobs:
        own = [run for run in fired if run["job_id"] == job["id"]]
        if job["trigger_type"] == "once":
            doubled += len(own) > 1
            missing += not own
        elif job["trigger_type"] == "cron":
            # Every minute after the job was created, up to the pause (less the longest
            # takeover allowed: a fire late by that much still runs, within the grace).
            ran = {_ts(run["scheduled_for"]) for run in own if run["status"] != "skipped"}
            minute = _ts(job["created_at"]).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
            while minute < paused_at - dt.timedelta(seconds=TAKEOVER_LIMIT_S):
                cron_slots += 1
                cron_missed += minute not in ran
                minute += dt.timedelta(minutes=1)
    report.expect_zero("once fires doubled", doubled)
    report.expect_zero("once fires missing", missing)
    report.expect_zero("cron minutes without a fire", cron_missed)
    overlaps = 0
    for job in jobs:
        if job.get("concurrency_policy", "forbid") != "forbid":
            continue
        spans = sorted(
            (_ts(run["started_at"]), _ts(run["finished_at"]))
            for run in runs
            if run["job_id"] == job["id"] and run.get("started_at") and run.get("finished_at")
        )
        ended: dt.datetime | None = None  # the latest end so far
        for started, finished in spans:
            overlaps += ended is not None and started < ended
            ended = finished if ended is None else max(ended, finished)
    report.expect_zero("forbid runs overlapping", overlaps)
    expect_retries_kept(report, jobs, runs)
    report.expect_zero("bad answers (5xx but 503 with Retry-After)", len(ledger.bad_answers))
    report.violations += ledger.bad_answers[:5]
    report.figure("runs", len(runs))
    report.figure("runs by status", dict(sorted(Counter(run["status"] for run in runs).items())))
    report.figure("runs by trigger", dict(sorted(Counter(run["trigger"] for run in runs).items())))
    skipped = Counter(
        f"{run['trigger']}: {str(run.get('error', '')).split(':')[-1].strip()[:60]}"
        for run in runs
        if run["status"] == "skipped"
    )
    report.figure("skipped runs, why", dict(sorted(skipped.items())))
    report.figure(
        "runs ended worker_lost (taken over)", sum(1 for r in runs if r.get("exit_reason") == "worker_lost")
    )
    report.figure("once jobs", sum(1 for job in jobs if job["trigger_type"] == "once"))
    report.figure("cron minutes checked", cron_slots)


def lag_figures(report: Report, ledger: Ledger) -> None:
    lags = ledger.lags_lease + ledger.lags_same_host
    report.figure("takeover limit (2 leases + 10 s)", TAKEOVER_LIMIT_S)
    for name, values in (
        ("takeover lag", lags),
        ("  on the lease alone", ledger.lags_lease),
        ("  replaced on the same host", ledger.lags_same_host),
    ):
        if values:
            report.figure(f"{name}, median / max (s)", f"{statistics.median(values):.2f} / {max(values):.2f}")
    report.expect_zero("takeovers over the limit", sum(1 for lag in lags if lag > TAKEOVER_LIMIT_S))


async def drill(args: Any, workdir: Path) -> Report:
    report = Report("cluster (postgresql)")
    kills = args.kills or (SHORT_KILLS if args.short else FULL_KILLS)
    load_s = SHORT_LOAD_S if args.short else FULL_LOAD_S
    rng = random.Random(3)
    marker = drill_marker()
    ledger = Ledger()
    slots = [Slot(index) for index in range(SERVERS)]
    once_count = max(5, int((load_s - ONCE_FIRST_S - ONCE_LAST_BEFORE_END_S) / ONCE_SPACING_S))
    with database("postgresql", workdir, args.postgres) as db:
        engine = sa.create_engine(resolve_url(db))
        try:
            async with trio.open_nursery() as servers:
                for slot in slots:
                    servers.start_soon(keep_serving, slot, db, ledger)
                for slot in slots:
                    await slot.up.wait()
                first = slots[0].proc
                assert first is not None
                async with client(first, timeout=30) as api:
                    start = dt.datetime.now(dt.UTC)
                    targets: list[str] = []
                    for body in jobs_to_create(marker, start, once_count):
                        created = await api.post("/v2/jobs", json=body)
                        created.raise_for_status()
                        if body["trigger_type"] == "manual":
                            targets.append(created.json()["id"])
                async with trio.open_nursery() as load:
                    for _ in range(TRIGGER_CLIENTS):
                        load.start_soon(trigger_load, slots, targets, ledger, rng)
                    await kill_loop(slots, engine, kills, load_s, ledger, rng)
                    load.cancel_scope.cancel()
                await trio.sleep(QUIET_S)
                last = slots[0].proc
                assert last is not None
                async with client(last, timeout=30) as api:
                    jobs, runs, paused_at = await pause_all_and_settle(api, within=SETTLE_S, tries=40)
                for slot in slots:
                    slot.stop()
        finally:
            engine.dispose()
        await trio.sleep(1.0)  # killed process groups take a moment to disappear
    report.figure("servers", SERVERS)
    report.figure("lease (s)", LEASE_S)
    report.figure("SIGKILLs", ledger.kills)
    report.figure("  replaced on the same host", ledger.kills_same_host)
    report.figure("  of a server owning no job", ledger.kills_without_jobs)
    report.figure("servers started", ledger.starts)
    lag_figures(report, ledger)
    check(report, jobs, runs, ledger, paused_at)
    statuses = [slot.exit_status for slot in slots]
    report.expect_zero("servers not exiting 0 on SIGTERM", sum(1 for status in statuses if status != 0))
    report.expect_zero("processes left behind", len(processes_with_marker(marker)))
    report.figure("triggers accepted (202)", len(ledger.accepted))
    report.figure("trigger answers", dict(sorted(ledger.answers.items())))
    report.figure("tracebacks logged by the servers", ledger.tracebacks)
    return report


async def run(args: Any) -> list[Report]:
    if not args.postgres:
        report = Report("cluster (postgresql)")
        report.figure("skipped", "needs PostgreSQL: set TERMJOBS_TEST_POSTGRES_URL or pass --postgres")
        return [report]
    with tempfile.TemporaryDirectory(prefix="termjobs-drill-") as tmp:
        return [await drill(args, Path(tmp))]


if __name__ == "__main__":
    main(
        run,
        __doc__.splitlines()[0],
        extra=[("--kills", int, 0, "SIGKILLs of a server (default 30; 4 with --short)")],
    )
