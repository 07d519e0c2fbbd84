"""The transactions of the SQL storage facade: each function is one unit of work for
the gateway's writer (``tx``) or one read (``conn``), composed from the per-table
statements in ``termjobs.storage.sql``. A status change and the timeline event that
records it are always written in the same transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import sqlalchemy as sa

from termjobs.jobdef import Job
from termjobs.model import (
    EventType,
    JSONObject,
    Run,
    RunEvent,
    RunStatus,
    RunTrigger,
)
from termjobs.notify import NotifyTarget
from termjobs.rundomain import (
    QUEUED_MESSAGES,
    Ending,
    FireDecision,
    Outcome,
    Skip,
    queued_data,
    terminal_data,
)
from termjobs.storage import migrate
from termjobs.storage.base import (
    RECEIPT_LIFETIME,
    DuplicateRun,
    JobFilters,
    JobView,
    Page,
    PendingNotification,
    Receipt,
    RunFilters,
)
from termjobs.storage.gateway import Bulk, WriteOp
from termjobs.storage.sql import Fences, WriteTx, cluster, events, jobs, outbox, runs

T = TypeVar("T")


def at_head(conn: sa.Connection) -> bool:
    return migrate.revision_of(conn) == migrate.HEAD_REVISION


def job_view(conn: sa.Connection, ref: str) -> JobView | None:
    job = jobs.find(conn, ref)
    if job is None:
        return None
    return JobView(job, runs.last_of(conn, [job.id]).get(job.id))


def jobs_page(conn: sa.Connection, *, limit: int, offset: int, filters: JobFilters) -> Page[JobView]:
    found = jobs.page(conn, limit=limit, offset=offset, filters=filters)
    last = runs.last_of(conn, [job.id for job in found.items])
    return Page([JobView(job, last.get(job.id)) for job in found.items], found.total)


def runs_page(conn: sa.Connection, *, limit: int, offset: int, filters: RunFilters, full: bool) -> Page[Run]:
    job_id = filters.job_ref
    if job_id is not None:
        job = jobs.find(conn, job_id)  # a job name is accepted too
        job_id = job.id if job else job_id
    return runs.page(conn, limit=limit, offset=offset, job_id=job_id, filters=filters, full=full)


def events_page(
    conn: sa.Connection, *, run_id: str, since_id: int, limit: int, offset: int
) -> Page[RunEvent] | None:
    if runs.get(conn, run_id, full=False) is None:
        return None
    return events.page(conn, run_id, since_id=since_id, limit=limit, offset=offset)


def create_job(tx: WriteTx, *, job: Job, receipt: Receipt | None, owner: str | None) -> None:
    if receipt is not None:
        outbox.store_receipt(tx, receipt, expired_before=receipt.created_at - RECEIPT_LIFETIME)
    jobs.insert(tx, job)
    if owner is not None:
        cluster.set_owner(tx, job.id, owner)


def create_run(tx: WriteTx, *, run: Run, data: JSONObject | None, receipt: Receipt | None) -> Run:
    if receipt is not None:
        outbox.store_receipt(tx, receipt, expired_before=receipt.created_at - RECEIPT_LIFETIME)
    if run.trigger is RunTrigger.SCHEDULE and runs.scheduled_exists(tx.conn, run.job_id, run.scheduled_for):
        raise DuplicateRun(f"a scheduled run of {run.job_id} for {run.scheduled_for} is already stored")
    return insert_queued(tx, run, data)


def insert_queued(tx: WriteTx, run: Run, data: JSONObject | None) -> Run:
    runs.insert(tx, run)
    queued_event(tx, run, data)
    return run


def queued_event(tx: WriteTx, run: Run, data: JSONObject | None) -> None:
    events.insert(
        tx, run, EventType.QUEUED, QUEUED_MESSAGES[run.trigger], queued_data(run, data), now=run.created_at
    )


@dataclass(frozen=True, slots=True)
class Fires:
    """One job's fires at a scheduler wake-up: ``job`` is the job as they advance it."""

    job: Job
    decisions: Sequence[FireDecision]
    now: dt.datetime
    notify: tuple[NotifyTarget, ...]


def record_fires(tx: WriteTx, fires: Fires) -> list[Run]:
    return record_many_fires(tx, [fires])[0]


def record_many_fires(tx: WriteTx, batch: Sequence[Fires]) -> list[list[Run]]:
    """Record the fires of many jobs (the queued runs of each, in order), with one
    statement per table for the lot: thousands of jobs may fall due in one second."""
    wanted = [(fires.job.id, d.run.scheduled_for) for fires in batch for d in fires.decisions]
    # Fires are idempotent per nominal time: one already stored (a once job re-armed
    # to a time it fired at, a clock that stepped back) is not recorded again.
    seen = runs.scheduled_among(tx.conn, wanted)
    rows: list[Run] = []
    timeline: list[tuple[Run, FireDecision, dt.datetime, tuple[NotifyTarget, ...]]] = []
    queued: list[list[Run]] = []
    for fires in batch:
        queued.append([])
        for decision in fires.decisions:
            key = (fires.job.id, decision.run.scheduled_for)
            if key in seen:
                continue
            seen.add(key)
            run = decision.run
            if isinstance(decision, Skip):
                run = dataclasses.replace(
                    run, status=RunStatus.SKIPPED, finished_at=fires.now, error=decision.message
                )
            else:
                queued[-1].append(run)
            rows.append(run)
            timeline.append((run, decision, fires.now, fires.notify))
    runs.insert_many(tx, rows)
    for run, decision, now, notify in timeline:
        if isinstance(decision, Skip):
            events.insert(tx, run, EventType.SKIPPED, decision.message, decision.data, now=now)
            outbox.enqueue(tx, run, notify, now=now)
        else:
            queued_event(tx, run, decision.data)
    jobs.advance(tx, [fires.job for fires in batch])
    return queued


def start_run(tx: WriteTx, *, run: Run, worker_id: str, now: dt.datetime) -> Run | None:
    running = runs.start(tx, run.id, worker_id=worker_id, now=now)
    if running is not None:
        data: JSONObject = {"worker_id": worker_id}
        events.insert(tx, running, EventType.CLAIMED, "run claimed by worker", data, now=now)
        events.insert(tx, running, EventType.RUNNING, "run started", data, now=now)
    return running


def finish_runs(tx: WriteTx, *, endings: Sequence[Ending], now: dt.datetime) -> list[Run | None]:
    return [finish(tx, ending, now) for ending in endings]


def finish(tx: WriteTx, ending: Ending, now: dt.datetime) -> Run | None:
    outcome, retry = ending.outcome, ending.retry
    final = end(tx, ending.run, outcome, now)
    if final is None:
        outcome, retry = ending.if_cancel_requested, None
        final = end(tx, ending.run, outcome, now, only_from=RunStatus.CANCEL_REQUESTED)
    if final is None:
        return None
    events.insert(tx, final, EventType(final.status.value), ending.message, terminal_data(final), now=now)
    outbox.enqueue(tx, final, ending.notify, now=now)
    if retry is not None and final.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        insert_queued(tx, retry.run, None)
        data: JSONObject = {
            "retry_run_id": retry.run.id,
            "next_attempt": retry.run.attempt,
            "delay": retry.delay,
        }
        events.insert(tx, final, EventType.RETRY_SCHEDULED, "retry run scheduled", data, now=now)
    return final


def end(
    tx: WriteTx, run: Run, outcome: Outcome, now: dt.datetime, *, only_from: RunStatus | None = None
) -> Run | None:
    return runs.end(
        tx,
        run.id,
        status=outcome.status,
        now=now,
        error=outcome.error,
        exit_reason=outcome.exit_reason,
        output=outcome.output,
        only_from=only_from,
    )


def end_queued(
    tx: WriteTx,
    *,
    run: Run,
    status: RunStatus,
    now: dt.datetime,
    message: str,
    data: JSONObject | None,
    notify: tuple[NotifyTarget, ...],
) -> Run | None:
    error = message if status is RunStatus.SKIPPED else None
    ended = runs.end(tx, run.id, status=status, now=now, error=error)
    if ended is not None:
        events.insert(tx, ended, EventType(status.value), message, data, now=now)
        outbox.enqueue(tx, ended, notify, now=now)
    return ended


def notification_done(
    tx: WriteTx,
    *,
    notification: PendingNotification,
    event_type: EventType,
    message: str,
    data: JSONObject,
    now: dt.datetime,
) -> None:
    run = runs.get(tx.conn, notification.run_id, full=False)
    if outbox.remove(tx, notification.id) and run is not None:
        events.insert(tx, run, event_type, message, data, now=now)


def request_cancel(tx: WriteTx, *, run: Run, now: dt.datetime, message: str) -> Run | None:
    updated = runs.request_cancel(tx, run.id, now=now)
    if updated is not None:
        events.insert(tx, updated, EventType.CANCEL_REQUESTED, message, None, now=now)
    return updated


@dataclass(frozen=True, slots=True)
class Fence:
    """This server in a cluster: writes acting on a job need it to own the job."""

    worker_id: str
    lease_s: float


def fenced_op(tx: WriteTx, *, op: WriteOp[T], job_ids: Sequence[str], fence: Fence, first: bool) -> T:
    """``op``, with its jobs added to those the transaction checks before it commits
    (or checked now, ``first``)."""
    if first:
        cluster.check_owners(tx.conn, Fences(fence.worker_id, fence.lease_s, set(job_ids)))
        return op(tx)
    fence_jobs(tx, fence, job_ids)
    return op(tx)


def fence_jobs(tx: WriteTx, fence: Fence, job_ids: Iterable[str]) -> None:
    """Add ``job_ids`` to the jobs the transaction checks (``fence``) before it commits."""
    fences = tx.fences
    assert fences is not None, "a fenced write outside a gateway transaction"
    fences.worker_id, fences.lease_s = fence.worker_id, fence.lease_s
    fences.job_ids.update(job_ids)


#: Recording fires, for the gateway to run many jobs' fires at once.
FIRES: Bulk[Fires, list[Run]] = Bulk(one=record_fires, many=record_many_fires)


def fenced_fires(fence: Fence) -> Bulk[Fires, list[Run]]:
    """:data:`FIRES`, on condition that this server owns the jobs (see ``fenced_op``)."""

    def one(tx: WriteTx, fires: Fires) -> list[Run]:
        fence_jobs(tx, fence, [fires.job.id])
        return record_fires(tx, fires)

    def many(tx: WriteTx, batch: Sequence[Fires]) -> list[list[Run]]:
        fence_jobs(tx, fence, [fires.job.id for fires in batch])
        return record_many_fires(tx, batch)

    return Bulk(one=one, many=many)
