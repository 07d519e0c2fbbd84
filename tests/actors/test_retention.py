"""The retention actor on 5,000 runs (virtual clock, exact ages)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import trio
import trio.testing
from sqlalchemy.engine import URL

from termjobs.jobdef import Job
from termjobs.model import EventType, Run, RunStatus, RunTrigger, Session, SessionMessage
from termjobs.rundomain import new_run
from termjobs.storage import RunFilters
from termjobs.storage.database import SqlStorage
from termjobs.storage.sql import WriteTx, events, runs
from tests.helpers import EPOCH, harness, job_body

DAY = dt.timedelta(days=1)


def aged(job: Job, age: dt.timedelta, status: RunStatus, n: int) -> Run:
    """A run created ``age`` before EPOCH (+n µs, for a stable order), finished if terminal."""
    created = EPOCH - age + dt.timedelta(microseconds=n)
    run = new_run(job.id, trigger=RunTrigger.SCHEDULE, scheduled_for=created, now=created)
    finished = created if status.terminal else None
    return dataclasses.replace(run, status=status, finished_at=finished)


async def test_retention_keeps_exactly_what_it_should(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url, retention_days=30, max_runs_per_job=1000) as h:
        a = await h.create(job_body("a"))
        b = await h.create(job_body("b"))
        c = await h.create(job_body("c"))
        # a: 1000 terminal runs 40-41 days old, 2000 within retention (1-21 days old)
        plan = [aged(a, 40 * DAY + i * dt.timedelta(minutes=1), RunStatus.SUCCEEDED, i) for i in range(1000)]
        plan += [aged(a, DAY + i * dt.timedelta(minutes=10), RunStatus.FAILED, i) for i in range(2000)]
        # b: 500 active runs 60 days old (never touched), 1000 recent terminal runs
        plan += [aged(b, 60 * DAY, RunStatus.QUEUED, i) for i in range(500)]
        plan += [aged(b, 2 * DAY, RunStatus.CANCELLED, i) for i in range(1000)]
        # c: 500 terminal runs, all 31 days old
        plan += [aged(c, 31 * DAY, RunStatus.SKIPPED, i) for i in range(500)]
        assert len(plan) == 5000

        # History in any state is planted below the facade, in one transaction.
        def insert(tx: WriteTx) -> None:
            for run in plan:
                runs.insert(tx, run)
                events.insert(tx, run, EventType.QUEUED, "x", None, now=run.created_at)

        assert isinstance(h.services.storage, SqlStorage)
        await h.services.storage.gateway.write(insert)
        newest_a = sorted(
            (r for r in plan if r.job_id == a.id and r.status is RunStatus.FAILED),
            key=lambda r: r.created_at,
            reverse=True,
        )[:1000]
        # The queued runs of b belong to b's actor only after a restart; retention must
        # still leave them alone. The next sweep is due one hour after start-up.
        await trio.sleep(3601)
        stats = h.services.retention.last
        assert stats is not None and (stats.expired, stats.over_cap) == (1500, 1000)
        assert stats.batches > 2  # bounded batches, not one huge delete

        async def ids(job: Job, statuses: list[RunStatus] | None = None) -> set[str]:
            filters = RunFilters(job_ref=job.id, statuses=tuple(statuses or ()))
            page = await h.services.storage.runs_page(limit=10_000, offset=0, filters=filters)
            return {r.id for r in page.items}

        assert await ids(a) == {r.id for r in newest_a}
        assert await ids(b, [RunStatus.QUEUED]) == {
            r.id for r in plan if r.job_id == b.id and not r.status.terminal
        }
        assert len(await ids(b)) == 1500
        assert await ids(c) == set()
        kept = await h.services.storage.events_after(0, limit=100_000)
        assert len(kept) == 1000 + 1500  # events went with their runs


async def test_retention_removes_llm_sessions_no_run_refers_to(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url, retention_days=30) as h:
        storage = h.services.storage

        def session(session_id: str, updated: dt.datetime) -> Session:
            return Session(
                id=session_id,
                agent="developer",
                provider="p",
                model="m",
                created_at=updated,
                updated_at=updated,
            )

        message = SessionMessage(
            session_id="", role="user", content={"role": "user", "text": "hi"}, created_at=EPOCH
        )
        await storage.save_session(session("old", EPOCH - 29 * DAY), [message])
        await storage.save_session(session("recent", EPOCH), [message])
        await trio.sleep(1)  # the start-up sweep: both are within the 30 days
        assert await storage.get_session("old") is not None
        await trio.sleep(2 * 24 * 3600)  # hourly sweeps; "old" passes 30 days idle
        assert await storage.get_session("old") is None and await storage.get_session("recent") is not None
