"""Storage outages: the database goes away under load and comes back; nothing is lost.

* **PostgreSQL stopped**: a private PostgreSQL (its own data directory and port, started
  by the drill, never a shared server) is stopped for ``--down`` seconds (20) while
  clients trigger runs and read, retries and scheduled fires fall due, then started
  again. Invariants: the server recovers without a restart; no answer is a 5xx other
  than 503, every 503 has ``Retry-After`` and names no host or port; every accepted
  trigger has its run; the retries and fires that fell due during the outage ran; no
  run is stuck.
* **PostgreSQL frozen** (SIGSTOP): connections stay open and nothing answers. Every
  request is still answered (503 or success) within the request timeout + 2 s.
* **SQLite on a full disk**: the database sits on a size-limited tmpfs (needs root to
  mount; skipped with the reason otherwise) that a filler file fills up. Writes get
  503 saying the disk is full; once space is freed everything carries on, no run is
  stuck, and ``PRAGMA integrity_check`` is ``ok``.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from drills._common import (
    TERMINAL,
    Report,
    all_jobs,
    all_runs,
    client,
    drill_marker,
    main,
    program_job,
    server,
)
from drills._pg import PostgresUnavailable, PrivatePostgres
from termjobs.testing import ServerProcess

REQUEST_TIMEOUT_S = 10.0
SETTLE_S = 120.0


@dataclass
class Traffic:
    """What clients saw while the database was away."""

    answers: Counter[str] = field(default_factory=Counter)
    accepted: set[str] = field(default_factory=set)
    bad: list[str] = field(default_factory=list)
    slowest: float = 0.0


async def load(proc: ServerProcess, manual: list[str], traffic: Traffic, rng: random.Random) -> None:
    """Triggers and reads until cancelled; every answer is checked."""
    async with client(proc, timeout=REQUEST_TIMEOUT_S + 20) as api:
        while True:
            kind = rng.choice(["trigger", "trigger", "list", "get", "runs"])
            path = {
                "trigger": f"/v2/jobs/{rng.choice(manual)}/trigger",
                "list": "/v2/jobs",
                "get": f"/v2/jobs/{rng.choice(manual)}",
                "runs": "/v2/runs?summary=1&limit=20",
            }[kind]
            started = trio.current_time()
            try:
                answer = await (api.post(path) if kind == "trigger" else api.get(path))
            except httpx.HTTPError as exc:
                traffic.answers[f"error {type(exc).__name__}"] += 1
                traffic.bad.append(f"{kind}: {exc!r}")
                continue
            traffic.slowest = max(traffic.slowest, trio.current_time() - started)
            traffic.answers[f"{kind} {answer.status_code}"] += 1
            check_answer(answer, traffic)
            if kind == "trigger" and answer.status_code == 202:
                traffic.accepted.add(answer.json()["id"])
            await trio.sleep(rng.uniform(0, 0.05))


def check_answer(answer: httpx.Response, traffic: Traffic) -> None:
    if answer.status_code >= 500 and answer.status_code != 503:
        traffic.bad.append(f"{answer.status_code}: {answer.text[:200]}")
    if answer.status_code == 503:
        text = answer.text
        if answer.headers.get("retry-after") is None:
            traffic.bad.append(f"503 without Retry-After: {text[:200]}")
        if "127.0.0.1" in text or "port" in text.lower() or "psycopg" in text:
            traffic.bad.append(f"503 naming connection details: {text[:200]}")


def outage_jobs(marker: str, retry_after: int = 8) -> list[dict[str, Any]]:
    """Manual jobs, jobs that fail once and retry after ``retry_after`` s, a cron job."""
    retry = {"max_attempts": 3, "backoff": "fixed", "initial_delay": f"{retry_after}s"}
    jobs = [
        program_job(f"manual-{i}", "sleep 0.2", marker, concurrency_policy="allow", max_concurrent_runs=50)
        for i in range(3)
    ]
    # The reproduction: a retry that falls due while the database is down.
    jobs += [
        program_job(
            f"flaky-{i}",
            'sleep 0.3; [ "$TERM_LLM_RUN_ATTEMPT" -ge 2 ]',
            marker,
            retry_policy=retry,
            concurrency_policy="allow",
            max_concurrent_runs=5,
        )
        for i in range(3)
    ]
    jobs.append(
        program_job(
            "every-minute", "true", marker, trigger_type="cron", trigger_config={"expression": "* * * * *"}
        )
    )
    return jobs


async def settle(api: httpx.AsyncClient) -> list[dict[str, Any]]:
    for job in await all_jobs(api):
        await api.post(f"/v2/jobs/{job['id']}/pause")
    with trio.move_on_after(SETTLE_S):
        while any(run["status"] not in TERMINAL for run in await all_runs(api)):
            await trio.sleep(0.5)
    return await all_runs(api)


async def postgres_outage(args: Any) -> Report:
    report = Report("storage outage (PostgreSQL stopped, then frozen)")
    down = 5.0 if args.short else float(args.down)
    rng = random.Random(4)
    marker = drill_marker()
    try:
        pg = PrivatePostgres()
        pg.init()
        pg.start()
    except PostgresUnavailable as exc:
        report.figure("skipped", str(exc))
        return report
    try:
        async with server(pg.url, "--jobs-workers", "8") as proc, client(proc) as api:
            pid = proc.process.pid
            # The retries fall due inside the outage (it starts 2 s after their runs fail).
            bodies = outage_jobs(marker, retry_after=min(8, int(2 + down / 2)))
            ids = [(await api.post("/v2/jobs", json=body)).json()["id"] for body in bodies]
            manual, flaky = ids[:3], ids[3:6]
            traffic = Traffic()
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(load, proc, manual, traffic, rng)
                for job_id in flaky:  # fail at once; their retries fall due in the outage
                    await api.post(f"/v2/jobs/{job_id}/trigger")
                await trio.sleep(2)
                pg.stop()
                report.figure("database down (s)", down)
                await trio.sleep(down)
                pg.start()
                back = trio.current_time()
                recovered = await first_success(api)
                report.figure("recovered after the database came back (s)", round(recovered - back, 2))
                await trio.sleep(5)
                # Frozen: connections stay open, nothing answers.
                before = traffic.slowest
                pg.pause()
                await trio.sleep(min(down, 15.0))
                pg.unpause()
                report.figure("slowest answer while frozen (s)", round(traffic.slowest, 2))
                report.expect(
                    traffic.slowest <= REQUEST_TIMEOUT_S + 2 or traffic.slowest == before,
                    f"a request waited {traffic.slowest:.1f}s on a frozen database",
                )
                await first_success(api)
                await trio.sleep(5)
                nursery.cancel_scope.cancel()
            runs = await settle(api)
            report.expect(proc.process.returncode is None and proc.process.pid == pid, "the server restarted")
            by_id = {run["id"]: run for run in runs}
            report.figure("answers", dict(sorted(traffic.answers.items())))
            report.expect_zero(
                "bad answers (5xx but 503, 503 without Retry-After or naming the host)", len(traffic.bad)
            )
            report.violations += traffic.bad[:5]
            report.expect_zero(
                "accepted triggers without a run", sum(1 for i in traffic.accepted if i not in by_id)
            )
            report.expect_zero(
                "runs stuck (non-terminal after settling)",
                sum(1 for r in runs if r["status"] not in TERMINAL),
            )
            retries = [r for r in runs if r["job_id"] in flaky and r["attempt"] == 2]
            report.figure(
                "retries due during the outage that ran and succeeded",
                sum(r["status"] == "succeeded" for r in retries),
            )
            report.expect(
                len(retries) == 3 and all(r["status"] == "succeeded" for r in retries),
                f"retries during the outage: {[(r['status'], r.get('error')) for r in retries]}",
            )
            cancelled = [r for r in runs if r["status"] == "cancelled"]
            report.expect_zero("runs cancelled", len(cancelled))
            report.figure("runs", len(runs))
    finally:
        pg.close()
    return report


async def first_success(api: httpx.AsyncClient) -> float:
    """Poll until a read succeeds; when it did."""
    with trio.fail_after(60):
        while True:
            try:
                if (await api.get("/v2/jobs?limit=1")).status_code == 200:
                    return trio.current_time()
            except httpx.HTTPError:
                pass
            await trio.sleep(0.1)


async def sqlite_full_disk(args: Any) -> Report:
    report = Report("storage outage (SQLite on a full disk)")
    if os.geteuid() != 0:
        report.figure("skipped", "mounting a size-limited tmpfs needs root; run the drill as root")
        return report
    mount = Path(tempfile.mkdtemp(prefix="termjobs-drill-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        report.figure("skipped", f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
        return report
    marker = drill_marker()
    rng = random.Random(5)
    db = mount / "jobs.db"
    try:
        async with server(str(db), "--jobs-workers", "4") as proc, client(proc) as api:
            ids = [(await api.post("/v2/jobs", json=body)).json()["id"] for body in outage_jobs(marker)]
            chatty = (await api.post("/v2/jobs", json=program_job("chatty", "seq 1 3000", marker))).json()[
                "id"
            ]
            traffic = Traffic()
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    nursery.start_soon(load, proc, ids[:3], traffic, rng)
                await trio.sleep(2)
                filler = fill(mount)
                report.figure("disk filled (filler MiB)", round(filler.stat().st_size / 2**20, 1))
                await api.post(f"/v2/jobs/{chatty}/trigger")
                # A write that surely needs new space: a job carrying 4 MiB of labels.
                big = program_job("big", "true", marker, labels={"blob": "x" * (4 << 20)})
                big_while_full = await api.post("/v2/jobs", json=big)
                await trio.sleep(3 if args.short else 10)
                full_answers = dict(traffic.answers)
                filler.unlink()
                await first_success(api)
                await trio.sleep(3)
                nursery.cancel_scope.cancel()
            after_free = await api.post(f"/v2/jobs/{ids[0]}/trigger")
            runs = await settle(api)
            by_id = {run["id"]: run for run in runs}
            report.figure("answers", dict(sorted(traffic.answers.items())))
            # Writes that fit in WAL pages already on disk still succeed; those that need
            # new space are refused, as the big one must be.
            refused = sum(n for key, n in full_answers.items() if key.endswith(" 503"))
            report.figure("requests refused (503) while full", refused)
            report.figure(
                "4 MiB create while full", f"{big_while_full.status_code} {big_while_full.text[:90]}"
            )
            report.expect(
                big_while_full.status_code == 503 and "disk is full" in big_while_full.text,
                f"a 4 MiB create on the full disk answered {big_while_full.status_code}",
            )
            big_after = await api.post("/v2/jobs", json={**big, "name": "big-after"})
            report.expect(
                big_after.status_code == 201, f"the 4 MiB create after freeing space: {big_after.status_code}"
            )
            report.expect(
                after_free.status_code == 202,
                f"a trigger after freeing space answered {after_free.status_code}",
            )
            report.expect_zero("bad answers (5xx but 503, 503 without Retry-After)", len(traffic.bad))
            report.violations += traffic.bad[:5]
            report.expect_zero(
                "accepted triggers without a run", sum(1 for i in traffic.accepted if i not in by_id)
            )
            report.expect_zero(
                "runs stuck (non-terminal after settling)",
                sum(1 for r in runs if r["status"] not in TERMINAL),
            )
            report.expect("disk is full" in proc.log, "the log does not say the disk is full")
            report.expect(await proc.stop(signal.SIGTERM) == 0, "the server did not stop cleanly")
        conn = sqlite3.connect(db)
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        report.figure("integrity_check", integrity)
        report.expect(integrity == "ok", f"integrity_check: {integrity}")
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode == 0:
            mount.rmdir()
    return report


def fill(mount: Path) -> Path:
    """Fill the filesystem at ``mount`` up to the last byte; the filler file."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                continue
    finally:
        os.close(fd)
    return filler


async def run(args: Any) -> list[Report]:
    return [await postgres_outage(args), await sqlite_full_disk(args)]


if __name__ == "__main__":
    main(
        run,
        __doc__.splitlines()[0],
        extra=[("--down", float, 20.0, "seconds PostgreSQL stays stopped (default 20)")],
    )
