"""The transactions of the SQL storage facade: each function is one unit of work for
the gateway's writer (``tx``) or one read (``conn``), composed from the per-table
statements in ``termjobs.storage.sql``. A status change and the timeline event that
records it are always written in the same transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Sequence
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
    Retry,
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
Item = TypeVar("Item")


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


@dataclass(frozen=True, slots=True)
class Creation:
    """A new queued run to store, with its ``queued`` event's extra data and the
    receipt of the request that created it (an idempotency key)."""

    run: Run
    data: JSONObject | None = None
    receipt: Receipt | None = None


def create_run(tx: WriteTx, creation: Creation) -> Run:
    return create_runs(tx, [creation])[0]


def create_runs(tx: WriteTx, creations: Sequence[Creation]) -> list[Run]:
    """Store each new run with its ``queued`` event, in order; the rows of runs created
    together (manual triggers arriving side by side) go in one ``executemany``. A run
    with a receipt, or a scheduled one (unique per nominal time: :class:`DuplicateRun`),
    is checked and stored on its own, after the runs before it."""
    together: list[Creation] = []
    for creation in creations:
        run, receipt = creation.run, creation.receipt
        if receipt is None and run.trigger is not RunTrigger.SCHEDULE:
            together.append(creation)
            continue
        _insert_created(tx, together)
        together = []
        if receipt is not None:
            outbox.store_receipt(tx, receipt, expired_before=receipt.created_at - RECEIPT_LIFETIME)
        if run.trigger is RunTrigger.SCHEDULE and runs.scheduled_exists(
            tx.conn, run.job_id, run.scheduled_for
        ):
            raise DuplicateRun(f"a scheduled run of {run.job_id} for {run.scheduled_for} is already stored")
        _insert_created(tx, [creation])
    _insert_created(tx, together)
    return [creation.run for creation in creations]


def _insert_created(tx: WriteTx, creations: Sequence[Creation]) -> None:
    if creations:
        runs.insert_many(tx, [creation.run for creation in creations])
        for creation in creations:
            queued_event(tx, creation.run, creation.data)


def insert_queued(tx: WriteTx, run: Run, data: JSONObject | None) -> Run:
    runs.insert(tx, run)
    queued_event(tx, run, data)
    return run


def queued_event(tx: WriteTx, run: Run, data: JSONObject | None) -> None:
    events.record(
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
            events.record(tx, run, EventType.SKIPPED, decision.message, decision.data, now=now)
            outbox.enqueue(tx, run, notify, now=now)
        else:
            queued_event(tx, run, decision.data)
    jobs.advance(tx, [fires.job for fires in batch])
    return queued


@dataclass(frozen=True, slots=True)
class Start:
    """A queued run to start, by this server (``worker_id``)."""

    run: Run
    worker_id: str
    now: dt.datetime


@dataclass(frozen=True, slots=True)
class Finish:
    """Runs that ended, with what to record of each (:class:`Ending`)."""

    endings: Sequence[Ending]
    now: dt.datetime


def start_run(tx: WriteTx, start: Start) -> Run | None:
    return start_runs(tx, [start])[0]


def start_runs(tx: WriteTx, starts: Sequence[Start]) -> list[Run | None]:
    """Start each run (``queued -> running``, the timeline's ``claimed`` and
    ``running``); each one's running run, ``None`` for a run that was not queued any
    more. Their moves go together (``runs.move_many``)."""
    moves = [runs.start_move(s.run.id, worker_id=s.worker_id, now=s.now) for s in starts]
    started = runs.move_many(tx, moves)
    for running, start in zip(started, starts, strict=True):
        if running is not None:
            data: JSONObject = {"worker_id": start.worker_id}
            events.record(tx, running, EventType.CLAIMED, "run claimed by worker", data, now=start.now)
            events.record(tx, running, EventType.RUNNING, "run started", data, now=start.now)
    return started


def finish_runs(tx: WriteTx, finish: Finish) -> list[Run | None]:
    return finish_many(tx, [finish])[0]


def finish_many(tx: WriteTx, batch: Sequence[Finish]) -> list[list[Run | None]]:
    """Record the end of every run of ``batch``: its final status (or, for a run whose
    cancel was requested meanwhile, the ending that says so), its timeline's last
    event, its notifications and its retry. The final moves of the lot go together
    (``runs.move_many``), then the rest, run by run in order. Each run's final state,
    ``None`` where the run had ended already."""
    flat = [(ending, finish.now) for finish in batch for ending in finish.endings]
    finals = runs.move_many(tx, [_end_move(ending.run, ending.outcome, now) for ending, now in flat])
    refused = [index for index, final in enumerate(finals) if final is None]
    if refused:
        moves = [
            _end_move(
                flat[i][0].run,
                flat[i][0].if_cancel_requested,
                flat[i][1],
                only_from=RunStatus.CANCEL_REQUESTED,
            )
            for i in refused
        ]
        for index, final in zip(refused, runs.move_many(tx, moves), strict=True):
            finals[index] = final
    cancelled = set(refused)  # the cancel won: not retried
    for index, ((ending, now), final) in enumerate(zip(flat, finals, strict=True)):
        if final is not None:
            retry = None if index in cancelled else ending.retry
            _record_end(tx, ending, final, retry, now)
    results: list[list[Run | None]] = []
    taken = 0
    for finish in batch:
        results.append(finals[taken : taken + len(finish.endings)])
        taken += len(finish.endings)
    return results


def _end_move(
    run: Run, outcome: Outcome, now: dt.datetime, *, only_from: RunStatus | None = None
) -> runs.Move:
    return runs.end_move(
        run.id,
        status=outcome.status,
        now=now,
        error=outcome.error,
        exit_reason=outcome.exit_reason,
        output=outcome.output,
        only_from=only_from,
    )


def _record_end(tx: WriteTx, ending: Ending, final: Run, retry: Retry | None, now: dt.datetime) -> None:
    events.record(tx, final, EventType(final.status.value), ending.message, terminal_data(final), now=now)
    outbox.enqueue(tx, final, ending.notify, now=now)
    if retry is not None and final.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        insert_queued(tx, retry.run, None)
        data: JSONObject = {
            "retry_run_id": retry.run.id,
            "next_attempt": retry.run.attempt,
            "delay": retry.delay,
        }
        events.record(tx, final, EventType.RETRY_SCHEDULED, "retry run scheduled", data, now=now)


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
    (ended,) = runs.move_many(tx, [runs.end_move(run.id, status=status, now=now, error=error)])
    if ended is not None:
        events.record(tx, ended, EventType(status.value), message, data, now=now)
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
        events.record(tx, run, event_type, message, data, now=now)


def request_cancel(tx: WriteTx, *, run: Run, now: dt.datetime, message: str) -> Run | None:
    updated = runs.request_cancel(tx, run.id, now=now)
    if updated is not None:
        events.record(tx, updated, EventType.CANCEL_REQUESTED, message, None, now=now)
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


#: Recording fires, creating, starting and finishing runs: the gateway gathers many at once.
FIRES: Bulk[Fires, list[Run]] = Bulk(one=record_fires, many=record_many_fires)
CREATES: Bulk[Creation, Run] = Bulk(one=create_run, many=create_runs)
STARTS: Bulk[Start, Run | None] = Bulk(one=start_run, many=start_runs)
FINISHES: Bulk[Finish, list[Run | None]] = Bulk(one=finish_runs, many=finish_many)


def fenced_bulk(bulk: Bulk[Item, T], fence: Fence, job_ids: Callable[[Item], Iterable[str]]) -> Bulk[Item, T]:
    """``bulk``, on condition that this server owns the jobs of its items
    (``job_ids``; see ``fenced_op``)."""

    def one(tx: WriteTx, item: Item) -> T:
        fence_jobs(tx, fence, job_ids(item))
        return bulk.one(tx, item)

    def many(tx: WriteTx, items: Sequence[Item]) -> list[T]:
        fence_jobs(tx, fence, (job_id for item in items for job_id in job_ids(item)))
        return bulk.many(tx, items)

    return Bulk(one=one, many=many)


def fires_jobs(fires: Fires) -> tuple[str]:
    return (fires.job.id,)


def creation_jobs(creation: Creation) -> tuple[str]:
    return (creation.run.job_id,)


def start_jobs(start: Start) -> tuple[str]:
    return (start.run.job_id,)


def finish_jobs(finish: Finish) -> list[str]:
    return [ending.run.job_id for ending in finish.endings]
