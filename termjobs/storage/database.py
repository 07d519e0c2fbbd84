"""The storage facade over SQLite or PostgreSQL (see ``termjobs.storage.base``).

Each method is one transaction run by the gateway's writer (group commit) or one read
on a reader connection: a statement of ``termjobs.storage.sql`` or a transaction of
``termjobs.storage.transactions`` composed from them (a status change and the
timeline event that records it are always written in the same transaction, so the
timeline can never disagree with the run row). In a cluster, writes that act on a job
are fenced: they commit only while this server owns the job.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar, cast

from sqlalchemy.engine import URL, Connection

from termjobs.jobdef import Job
from termjobs.model import (
    EventType,
    JSONObject,
    JSONValue,
    Run,
    RunEvent,
    RunOutput,
    RunStatus,
    Session,
    SessionMessage,
)
from termjobs.notify import NotifyTarget
from termjobs.rundomain import (
    Ending,
    FireDecision,
)
from termjobs.storage import transactions as ops
from termjobs.storage.base import (
    ALL_RUNS,
    JobFilters,
    JobView,
    Page,
    PendingNotification,
    Receipt,
    RunFilters,
    ScheduleEntry,
    SessionTranscript,
    Storage,
)
from termjobs.storage.gateway import READ_TIMEOUT_S, Bulk, Gateway, OnBatch, OnCommit, WriteOp, open_gateway
from termjobs.storage.sql import cluster, events, history, jobs, outbox, runs, sessions
from termjobs.storage.sql.points import PointReads
from termjobs.storage.transactions import Fence

T = TypeVar("T")
R = TypeVar("R")
Item = TypeVar("Item")

#: Read pages of the firehose replay are at most this long.
DEFAULT_EVENTS_LIMIT = 1000


def _sqlite_only(conn: Connection) -> int:
    raise AssertionError("data_version reads SQLite's own counter")


class SqlStorage(Storage):
    """:class:`~termjobs.storage.base.Storage` on a database, through a gateway."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        #: SQLite's point reads on the driver's connection (``storage.sql.points``)
        self._points = PointReads(gateway.engines.reader.dialect) if gateway.engines.is_sqlite else None
        #: in a cluster: the writes that act on a job check that this server owns it
        self.fence: Fence | None = None
        #: the fenced form of each bulk write, for the fence it was made for
        self._fenced_bulks: dict[str, tuple[Fence, Bulk[Any, Any]]] = {}

    def _fenced(self, op: WriteOp[T], *job_ids: str, first: bool = False) -> WriteOp[T]:
        """``op``, on condition (in a cluster) that this server owns the jobs: checked
        with the transaction's other jobs just before it commits, or ``first`` (a write
        that deletes the job's row)."""
        fence = self.fence
        if fence is None:
            return op
        return partial(ops.fenced_op, op=op, job_ids=sorted(set(job_ids)), fence=fence, first=first)

    async def schema_is_current(self) -> bool:
        return await self.gateway.read(ops.at_head)

    async def data_version(self) -> object | None:
        if self._points is None:
            return None  # PostgreSQL: other servers write too, unannounced
        version = await self.gateway.read_point(self._points.data_version, _sqlite_only)
        # A connection's own count: paired with which connection it was.
        return (self.gateway.point_connections, version)

    # ------------------------------------------------------------------ jobs

    async def create_job(self, job: Job, *, receipt: Receipt | None = None, owner: str | None = None) -> None:
        await self.gateway.write(partial(ops.create_job, job=job, receipt=receipt, owner=owner))

    async def import_jobs(self, new_jobs: Sequence[Job]) -> None:
        await self.gateway.write(partial(jobs.insert_many, new_jobs=new_jobs))

    async def update_job(self, job: Job) -> None:
        await self.gateway.write(self._fenced(partial(jobs.update, job=job), job.id))

    async def delete_job(self, job_id: str) -> bool:
        return await self.gateway.write(self._fenced(partial(jobs.delete, job_id=job_id), job_id, first=True))

    async def get_job(self, job_id: str) -> Job | None:
        return await self.gateway.read(partial(jobs.get, job_id=job_id))

    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        return await self.gateway.read(partial(jobs.get_many, job_ids=job_ids))

    async def resolve_job(self, ref: str) -> Job | None:
        return await self.gateway.read(partial(jobs.find, ref=ref))

    async def job_view(self, ref: str) -> JobView | None:
        point = None if self._points is None else partial(self._points.job_view, ref=ref)
        return await self.gateway.read_point(point, partial(ops.job_view, ref=ref))

    async def jobs_page(self, *, limit: int, offset: int, filters: JobFilters) -> Page[JobView]:
        query = partial(ops.jobs_page, limit=limit, offset=offset, filters=filters)
        return await self.gateway.read(query, heavy=True)  # counts every match

    async def schedule_index(self, job_ids: Sequence[str] | None = None) -> list[ScheduleEntry]:
        return await self.gateway.read(partial(jobs.schedule_index, job_ids=job_ids), heavy=True)

    # ------------------------------------------------------------------ runs

    async def create_run(
        self, run: Run, *, data: JSONObject | None = None, receipt: Receipt | None = None
    ) -> Run:
        creation = ops.Creation(run, data, receipt)
        return await self.gateway.write_bulk(self._bulk(ops.CREATES, ops.creation_jobs), creation)

    async def record_fires(
        self,
        job: Job,
        decisions: Sequence[FireDecision],
        *,
        now: dt.datetime,
        notify: tuple[NotifyTarget, ...] = (),
    ) -> list[Run]:
        fires = ops.Fires(job, decisions, now, notify)
        return await self.gateway.write_bulk(self._bulk(ops.FIRES, ops.fires_jobs), fires)

    def _bulk(self, bulk: Bulk[Item, R], job_ids: Callable[[Item], Iterable[str]]) -> Bulk[Item, R]:
        """``bulk``, fenced in a cluster; the same object every time while the fence
        stays, so the gateway can gather its items."""
        fence = self.fence
        if fence is None:
            return bulk
        name = job_ids.__name__
        made = self._fenced_bulks.get(name)
        if made is None or made[0] is not fence:
            made = self._fenced_bulks[name] = (fence, ops.fenced_bulk(bulk, fence, job_ids))
        return cast(Bulk[Item, R], made[1])

    async def start_run(self, run: Run, *, worker_id: str, now: dt.datetime) -> Run | None:
        start = ops.Start(run, worker_id, now)
        return await self.gateway.write_bulk(self._bulk(ops.STARTS, ops.start_jobs), start)

    async def finish_runs(self, endings: Sequence[Ending], *, now: dt.datetime) -> list[Run | None]:
        # Fenced too: a server that lost a job must not end its runs (nor queue their
        # retries); the new owner ends them as lost.
        finish = ops.Finish(endings, now)
        return await self.gateway.write_bulk(self._bulk(ops.FINISHES, ops.finish_jobs), finish)

    async def cancel_queued(
        self, run: Run, *, now: dt.datetime, message: str, notify: tuple[NotifyTarget, ...] = ()
    ) -> Run | None:
        op = partial(ops.end_queued, run=run, status=RunStatus.CANCELLED, now=now, message=message, data=None)
        return await self.gateway.write(self._fenced(partial(op, notify=notify), run.job_id))

    async def skip_queued(
        self,
        run: Run,
        *,
        now: dt.datetime,
        message: str,
        data: JSONObject,
        notify: tuple[NotifyTarget, ...] = (),
    ) -> Run | None:
        op = partial(ops.end_queued, run=run, status=RunStatus.SKIPPED, now=now, message=message, data=data)
        return await self.gateway.write(self._fenced(partial(op, notify=notify), run.job_id))

    async def request_cancel(self, run: Run, *, now: dt.datetime, message: str) -> Run | None:
        op = partial(ops.request_cancel, run=run, now=now, message=message)
        return await self.gateway.write(self._fenced(op, run.job_id))

    async def get_run(self, run_id: str, *, full: bool = True) -> Run | None:
        point = None if self._points is None else partial(self._points.run, run_id=run_id, full=full)
        return await self.gateway.read_point(point, partial(runs.get, run_id=run_id, full=full))

    async def runs_page(
        self, *, limit: int, offset: int, filters: RunFilters = ALL_RUNS, full: bool = True
    ) -> Page[Run]:
        query = partial(ops.runs_page, limit=limit, offset=offset, filters=filters, full=full)
        return await self.gateway.read(query, heavy=True)  # counts every match

    async def active_runs(self, job_ids: Sequence[str] | None = None) -> list[Run]:
        return await self.gateway.read(partial(runs.active, job_ids=job_ids))

    async def update_run_output(self, run_id: str, output: RunOutput, *, now: dt.datetime) -> Run | None:
        return await self.gateway.write(partial(runs.update_output, run_id=run_id, output=output, now=now))

    # ---------------------------------------------------------------- events

    async def add_event(
        self, run: Run, event_type: EventType, message: str | None, data: JSONValue, *, now: dt.datetime
    ) -> RunEvent:
        op = partial(events.insert, run=run, event_type=event_type, message=message, data=data, now=now)
        return await self.gateway.write(op)

    async def submit_event(
        self, run: Run, event_type: EventType, message: str | None, data: JSONValue, *, now: dt.datetime
    ) -> None:
        op = partial(events.insert, run=run, event_type=event_type, message=message, data=data, now=now)
        await self.gateway.submit(op)

    async def events_page(
        self, run_id: str, *, since_id: int, limit: int, offset: int
    ) -> Page[RunEvent] | None:
        query = partial(ops.events_page, run_id=run_id, since_id=since_id, limit=limit, offset=offset)
        return await self.gateway.read(query, heavy=True)  # counts every match

    async def events_after(
        self,
        since_id: int,
        *,
        job_id: str | None = None,
        run_id: str | None = None,
        limit: int = DEFAULT_EVENTS_LIMIT,
    ) -> list[RunEvent]:
        query = partial(events.after, since_id=since_id, job_id=job_id, run_id=run_id, limit=limit)
        return await self.gateway.read(query, heavy=True)

    async def max_event_id(self) -> int:
        return await self.gateway.read(events.max_id)

    # ------------------------------------------------------ webhooks, receipts

    async def pending_notifications(
        self, *, limit: int, owner: str | None = None
    ) -> list[PendingNotification]:
        return await self.gateway.read(partial(outbox.pending, limit=limit, owner=owner))

    async def notification_done(
        self,
        notification: PendingNotification,
        *,
        event_type: EventType,
        message: str,
        data: JSONObject,
        now: dt.datetime,
    ) -> None:
        op = partial(ops.notification_done, notification=notification, event_type=event_type, now=now)
        await self.gateway.write(partial(op, message=message, data=data))

    async def receipt(self, key: str, *, since: dt.datetime) -> Receipt | None:
        return await self.gateway.read(partial(outbox.find_receipt, key=key, since=since))

    async def delete_receipts(self, *, before: dt.datetime) -> int:
        return await self.gateway.write(partial(outbox.delete_receipts, before=before))

    # -------------------------------------------------------------- sessions

    async def save_session(self, session: Session, messages: Sequence[SessionMessage]) -> None:
        await self.gateway.write(partial(sessions.save, session=session, messages=messages))

    async def get_session(self, session_id: str) -> SessionTranscript | None:
        return await self.gateway.read(partial(sessions.get, session_id=session_id), heavy=True)

    async def delete_orphan_sessions(self, *, before: dt.datetime, limit: int) -> int:
        return await self.gateway.write(partial(sessions.delete_orphans, before=before, limit=limit))

    # ------------------------------------------------------------- retention

    async def expired_runs(self, *, before: dt.datetime, limit: int) -> list[str]:
        return await self.gateway.read(partial(history.expired, before=before, limit=limit), heavy=True)

    async def jobs_over_run_cap(self, *, cap: int) -> list[str]:
        return await self.gateway.read(partial(history.jobs_over_cap, cap=cap), heavy=True)

    async def runs_beyond_cap(self, job_id: str, *, cap: int, limit: int) -> list[str]:
        query = partial(history.beyond_cap, job_id=job_id, cap=cap, limit=limit)
        return await self.gateway.read(query, heavy=True)

    async def delete_terminal_runs(self, run_ids: Sequence[str]) -> int:
        return await self.gateway.write(partial(history.delete_terminal, run_ids=run_ids))

    # --------------------------------------------------------------- cluster
    # PostgreSQL only (termjobs.cluster): membership, owners, requests between servers.

    async def join_cluster(
        self, worker_id: str, *, host: str, pid: int, namespace: str, url: str, version: str
    ) -> None:
        op = partial(cluster.register, worker_id=worker_id, host=host, pid=pid, namespace=namespace)
        await self.gateway.write(partial(op, url=url, version=version))

    async def neighbours(self, worker_id: str, namespace: str, *, lease_s: float) -> list[tuple[str, int]]:
        op = partial(cluster.neighbours, worker_id=worker_id, namespace=namespace, lease_s=lease_s)
        return await self.gateway.read(op)

    async def mark_gone(self, worker_ids: Sequence[str]) -> None:
        await self.gateway.write(partial(cluster.mark_gone, worker_ids=worker_ids))

    async def heartbeat(self, worker_id: str, *, lease_s: float) -> bool:
        return await self.gateway.write(partial(cluster.heartbeat, worker_id=worker_id, lease_s=lease_s))

    async def rejoin_cluster(self, worker_id: str) -> None:
        await self.gateway.write(partial(cluster.rejoin, worker_id=worker_id))

    async def leave_cluster(self, worker_id: str) -> None:
        await self.gateway.write(partial(cluster.leave, worker_id=worker_id))

    async def forget_servers(self, *, older_than: dt.timedelta) -> int:
        return await self.gateway.write(partial(cluster.forget, older_than=older_than))

    async def live_servers(self, *, lease_s: float) -> list[str]:
        return await self.gateway.read(partial(cluster.live_ids, lease_s=lease_s))

    async def servers(self, *, lease_s: float) -> list[cluster.WorkerRow]:
        return await self.gateway.read(partial(cluster.servers, lease_s=lease_s))

    async def owned_counts(self) -> dict[str, int]:
        return await self.gateway.read(cluster.owned_counts, heavy=True)

    async def runs_left_behind(self, run_ids: Sequence[str], *, lease_s: float) -> set[str]:
        op = partial(cluster.runs_left_behind, run_ids=run_ids, lease_s=lease_s)
        return await self.gateway.read(op)

    async def running_counts(self) -> dict[str, int]:
        return await self.gateway.read(cluster.running_counts, heavy=True)

    async def orphaned_jobs(self, *, lease_s: float, limit: int) -> list[str]:
        return await self.gateway.read(partial(cluster.orphans, lease_s=lease_s, limit=limit), heavy=True)

    async def claim_jobs(self, worker_id: str, job_ids: Sequence[str], *, lease_s: float) -> list[str]:
        op = partial(cluster.claim, worker_id=worker_id, job_ids=job_ids, lease_s=lease_s)
        return await self.gateway.write(op)

    async def jobs_given(self, worker_id: str, *, since: dt.datetime | None) -> tuple[list[str], dt.datetime]:
        return await self.gateway.read(partial(cluster.owned_since, worker_id=worker_id, since=since))

    async def hand_over(self, worker_id: str, moves: Mapping[str, str]) -> list[str]:
        return await self.gateway.write(partial(cluster.hand_over, worker_id=worker_id, moves=moves))

    async def set_owner(self, job_id: str, owner_id: str) -> None:
        await self.gateway.write(partial(cluster.set_owner, job_id=job_id, owner_id=owner_id))

    async def job_owner(self, job_id: str, *, lease_s: float) -> tuple[str | None, bool] | None:
        return await self.gateway.read(partial(cluster.owner_of, job_id=job_id, lease_s=lease_s))

    async def send_request(self, *, sender_id: str, target_id: str, job_id: str, body: str) -> int:
        op = partial(cluster.send_request, sender_id=sender_id, target_id=target_id, job_id=job_id)
        return await self.gateway.write(partial(op, body=body))

    async def retarget_request(self, request_id: int, target_id: str) -> bool:
        return await self.gateway.write(partial(cluster.retarget, request_id=request_id, target_id=target_id))

    async def pending_requests(self, worker_id: str) -> list[cluster.PendingRequest]:
        return await self.gateway.read(partial(cluster.pending_requests, worker_id=worker_id))

    async def answer_request(self, request: cluster.PendingRequest, reply: str) -> None:
        await self.gateway.write(partial(cluster.answer, request=request, reply=reply))

    async def request_reply(self, request_id: int) -> str | None:
        return await self.gateway.read(partial(cluster.reply_of, request_id=request_id))


@asynccontextmanager
async def open_storage(
    url: URL,
    *,
    inline: bool = False,
    readers: int = 2,
    on_commit: OnCommit | None = None,
    on_batch: OnBatch | None = None,
    read_timeout: float = READ_TIMEOUT_S,
) -> AsyncIterator[SqlStorage]:
    """Open the database at ``url`` (migrating it) as a :class:`SqlStorage`; queued
    writes are committed before it closes. Reads taking over ``read_timeout`` seconds
    raise :class:`~termjobs.storage.base.StorageUnavailable`."""
    async with open_gateway(
        url,
        inline=inline,
        readers=readers,
        on_commit=on_commit,
        on_batch=on_batch,
        read_timeout=read_timeout,
    ) as gateway:
        yield SqlStorage(gateway)
