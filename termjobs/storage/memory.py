"""An in-memory :class:`~termjobs.storage.base.Storage`, for tests of the layers above.

It keeps the facade's contract (the same suite in ``tests/storage`` runs against it and
the databases): status changes guarded by the transition table, names unique, fires
unique per nominal time, events numbered in commit order and published after each
"commit". Nothing is persisted; every method completes at once (one checkpoint).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Sequence
from typing import Any

import trio

from termjobs.jobdef import Job
from termjobs.model import (
    ACTIVE_STATUSES,
    EventType,
    JSONObject,
    JSONValue,
    Run,
    RunEvent,
    RunOutput,
    RunStatus,
    RunTrigger,
    Session,
    SessionMessage,
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
from termjobs.storage.base import (
    ALL_RUNS,
    DuplicateRun,
    JobFilters,
    JobView,
    NameTaken,
    Page,
    PendingNotification,
    Receipt,
    RunFilters,
    ScheduleEntry,
    SessionTranscript,
    Storage,
    storable,
)
from termjobs.storage.memtables import MemoryTables, job_matches, run_matches, summary


class MemoryStorage(MemoryTables, Storage):
    """Jobs, runs and events in dictionaries (see the module docstring)."""

    async def schema_is_current(self) -> bool:
        await trio.lowlevel.checkpoint()
        return True

    async def data_version(self) -> object | None:
        await trio.lowlevel.checkpoint()
        return None  # tests' store: nothing is kept

    # ------------------------------------------------------------------ jobs

    async def create_job(self, job: Job, *, receipt: Receipt | None = None, owner: str | None = None) -> None:
        self._check_name(job)
        if receipt is not None:
            self._store_receipt(receipt)
        self._jobs[job.id] = job
        await self._commit()

    async def import_jobs(self, jobs: Sequence[Job]) -> None:
        names = [job.spec.name for job in jobs]
        if len(set(names)) < len(names) or any(self._find(name) for name in names):
            raise NameTaken(next(name for name in names if names.count(name) > 1 or self._find(name)))
        self._jobs.update((job.id, job) for job in jobs)
        await self._commit()

    async def update_job(self, job: Job) -> None:
        self._check_name(job)
        if job.id in self._jobs:
            self._jobs[job.id] = job
        await self._commit()

    async def delete_job(self, job_id: str) -> bool:
        existed = self._jobs.pop(job_id, None) is not None
        if existed:
            self._outbox = {k: n for k, n in self._outbox.items() if n.job_id != job_id}
            for run_id in [r.id for r in self._runs.values() if r.job_id == job_id]:
                del self._runs[run_id]
            self._events = [e for e in self._events if e.job_id != job_id]
        await self._commit()
        return existed

    async def get_job(self, job_id: str) -> Job | None:
        await trio.lowlevel.checkpoint()
        return self._jobs.get(job_id)

    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        await trio.lowlevel.checkpoint()
        return [self._jobs[job_id] for job_id in job_ids if job_id in self._jobs]

    async def resolve_job(self, ref: str) -> Job | None:
        await trio.lowlevel.checkpoint()
        return self._find(ref)

    async def job_view(self, ref: str) -> JobView | None:
        await trio.lowlevel.checkpoint()
        job = self._find(ref)
        return None if job is None else JobView(job, self._last_run(job.id))

    async def jobs_page(self, *, limit: int, offset: int, filters: JobFilters) -> Page[JobView]:
        await trio.lowlevel.checkpoint()
        found = [job for job in self._jobs.values() if job_matches(job, filters)]
        found.sort(key=lambda job: (job.created_at, job.id), reverse=True)
        items = [JobView(job, self._last_run(job.id)) for job in found[offset : offset + limit]]
        return Page(items, len(found))

    async def schedule_index(self, job_ids: Sequence[str] | None = None) -> list[ScheduleEntry]:
        await trio.lowlevel.checkpoint()
        ids = self._jobs.keys() if job_ids is None else [i for i in job_ids if i in self._jobs]
        wanted = [self._jobs[i] for i in ids]
        return [ScheduleEntry(job.id, job.spec.enabled, job.next_run_at) for job in wanted]

    # ------------------------------------------------------------------ runs

    async def create_run(
        self, run: Run, *, data: JSONObject | None = None, receipt: Receipt | None = None
    ) -> Run:
        if run.trigger is RunTrigger.SCHEDULE and self._scheduled_exists(run.job_id, run.scheduled_for):
            raise DuplicateRun(f"a scheduled run of {run.job_id} for {run.scheduled_for} is already stored")
        if receipt is not None:
            self._store_receipt(receipt)
        self._queue(run, data)
        await self._commit()
        return run

    def _queue(self, run: Run, data: JSONObject | None) -> None:
        self._insert_run(run)
        self._event(
            run, EventType.QUEUED, QUEUED_MESSAGES[run.trigger], queued_data(run, data), run.created_at
        )

    async def record_fires(
        self,
        job: Job,
        decisions: Sequence[FireDecision],
        *,
        now: dt.datetime,
        notify: tuple[NotifyTarget, ...] = (),
    ) -> list[Run]:
        queued: list[Run] = []
        for decision in decisions:
            run = decision.run
            if self._scheduled_exists(job.id, run.scheduled_for):
                continue
            if isinstance(decision, Skip):
                skipped = dataclasses.replace(
                    run, status=RunStatus.SKIPPED, finished_at=now, error=decision.message
                )
                self._insert_run(skipped)
                self._event(skipped, EventType.SKIPPED, decision.message, decision.data, now)
                self._enqueue(skipped, notify, now)
            else:
                self._queue(run, decision.data)
                queued.append(run)
        self._check_name(job)
        self._jobs[job.id] = job
        await self._commit()
        return queued

    async def start_run(self, run: Run, *, worker_id: str, now: dt.datetime) -> Run | None:
        running = self._move(
            run.id, RunStatus.RUNNING, now, via=RunStatus.CLAIMED, worker_id=worker_id, started_at=now
        )
        if running is not None:
            data: JSONObject = {"worker_id": worker_id}
            self._event(running, EventType.CLAIMED, "run claimed by worker", data, now)
            self._event(running, EventType.RUNNING, "run started", data, now)
        await self._commit()
        return running

    async def finish_runs(self, endings: Sequence[Ending], *, now: dt.datetime) -> list[Run | None]:
        finals = [self._finish(ending, now) for ending in endings]
        await self._commit()
        return finals

    def _finish(self, ending: Ending, now: dt.datetime) -> Run | None:
        outcome, retry = ending.outcome, ending.retry
        final = self._end(ending.run.id, outcome, now)
        current = self._runs.get(ending.run.id)
        if final is None and current is not None and current.status is RunStatus.CANCEL_REQUESTED:
            outcome, retry = ending.if_cancel_requested, None
            final = self._end(ending.run.id, outcome, now)
        if final is None:
            return None
        self._event(final, EventType(final.status.value), ending.message, terminal_data(final), now)
        self._enqueue(final, ending.notify, now)
        if retry is not None and final.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
            self._queue(retry.run, None)
            data: JSONObject = {
                "retry_run_id": retry.run.id,
                "next_attempt": retry.run.attempt,
                "delay": retry.delay,
            }
            self._event(final, EventType.RETRY_SCHEDULED, "retry run scheduled", data, now)
        return final

    def _end(self, run_id: str, outcome: Outcome, now: dt.datetime) -> Run | None:
        texts: dict[str, Any] = {
            item.name: storable(value)
            for item in dataclasses.fields(RunOutput)
            if isinstance(value := getattr(outcome.output, item.name), str)
        }
        output = dataclasses.replace(outcome.output, **texts)
        return self._move(
            run_id,
            outcome.status,
            now,
            finished_at=now,
            error=storable(outcome.error),
            exit_reason=outcome.exit_reason,
            output=output,
        )

    async def cancel_queued(
        self, run: Run, *, now: dt.datetime, message: str, notify: tuple[NotifyTarget, ...] = ()
    ) -> Run | None:
        ended = self._move(run.id, RunStatus.CANCELLED, now, finished_at=now)
        if ended is not None:
            self._event(ended, EventType.CANCELLED, message, None, now)
            self._enqueue(ended, notify, now)
        await self._commit()
        return ended

    async def skip_queued(
        self,
        run: Run,
        *,
        now: dt.datetime,
        message: str,
        data: JSONObject,
        notify: tuple[NotifyTarget, ...] = (),
    ) -> Run | None:
        ended = self._move(run.id, RunStatus.SKIPPED, now, finished_at=now, error=message)
        if ended is not None:
            self._event(ended, EventType.SKIPPED, message, data, now)
            self._enqueue(ended, notify, now)
        await self._commit()
        return ended

    async def request_cancel(self, run: Run, *, now: dt.datetime, message: str) -> Run | None:
        updated = self._move(run.id, RunStatus.CANCEL_REQUESTED, now)
        if updated is not None:
            self._event(updated, EventType.CANCEL_REQUESTED, message, None, now)
        await self._commit()
        return updated

    async def get_run(self, run_id: str, *, full: bool = True) -> Run | None:
        await trio.lowlevel.checkpoint()
        run = self._runs.get(run_id)
        return run if run is None or full else summary(run)

    async def runs_page(
        self, *, limit: int, offset: int, filters: RunFilters = ALL_RUNS, full: bool = True
    ) -> Page[Run]:
        await trio.lowlevel.checkpoint()
        job_id = filters.job_ref
        if job_id is not None:
            job = self._find(job_id)
            job_id = job.id if job else job_id
        found = [run for run in self._runs.values() if run_matches(run, job_id, filters)]
        items = self._newest_first(found)[offset : offset + limit]
        return Page(items if full else [summary(run) for run in items], len(found))

    async def active_runs(self, job_ids: Sequence[str] | None = None) -> list[Run]:
        await trio.lowlevel.checkpoint()
        wanted = None if job_ids is None else set(job_ids)
        found = [
            run
            for run in self._runs.values()
            if run.status in ACTIVE_STATUSES and (wanted is None or run.job_id in wanted)
        ]
        return sorted(found, key=lambda r: (r.scheduled_for, self._seq[r.id]))

    async def update_run_output(self, run_id: str, output: RunOutput, *, now: dt.datetime) -> Run | None:
        current = self._runs.get(run_id)
        updated = None
        if current is not None and current.status in (RunStatus.RUNNING, RunStatus.CANCEL_REQUESTED):
            texts: dict[str, Any] = {
                item.name: storable(value)
                for item in dataclasses.fields(RunOutput)
                if isinstance(value := getattr(output, item.name), str)
            }
            updated = dataclasses.replace(
                current, output=dataclasses.replace(output, **texts), updated_at=now
            )
            self._runs[run_id] = updated
        await self._commit()
        return updated

    # ---------------------------------------------------------------- events

    async def add_event(
        self, run: Run, event_type: EventType, message: str | None, data: JSONValue, *, now: dt.datetime
    ) -> RunEvent:
        event = self._event(run, event_type, message, data, now)
        await self._commit()
        return event

    async def submit_event(
        self, run: Run, event_type: EventType, message: str | None, data: JSONValue, *, now: dt.datetime
    ) -> None:
        await self.add_event(run, event_type, message, data, now=now)

    async def events_page(
        self, run_id: str, *, since_id: int, limit: int, offset: int
    ) -> Page[RunEvent] | None:
        await trio.lowlevel.checkpoint()
        if run_id not in self._runs:
            return None
        found = [e for e in self._events if e.run_id == run_id and e.id > since_id]
        return Page(found[offset : offset + limit], len(found))

    async def events_after(
        self, since_id: int, *, job_id: str | None = None, run_id: str | None = None, limit: int = 1000
    ) -> list[RunEvent]:
        await trio.lowlevel.checkpoint()
        found = (
            e
            for e in self._events
            if e.id > since_id
            and (job_id is None or e.job_id == job_id)
            and (run_id is None or e.run_id == run_id)
        )
        return list(itertools.islice(found, limit))

    async def max_event_id(self) -> int:
        await trio.lowlevel.checkpoint()
        return self._events[-1].id if self._events else 0

    # ------------------------------------------------------ webhooks, receipts

    async def pending_notifications(
        self, *, limit: int, owner: str | None = None
    ) -> list[PendingNotification]:
        await trio.lowlevel.checkpoint()
        return [self._outbox[ident] for ident in sorted(self._outbox)[:limit]]

    async def notification_done(
        self,
        notification: PendingNotification,
        *,
        event_type: EventType,
        message: str,
        data: JSONObject,
        now: dt.datetime,
    ) -> None:
        run = self._runs.get(notification.run_id)
        if self._outbox.pop(notification.id, None) is not None and run is not None:
            self._event(run, event_type, message, data, now)
        await self._commit()

    async def receipt(self, key: str, *, since: dt.datetime) -> Receipt | None:
        await trio.lowlevel.checkpoint()
        found = self._receipts.get(key)
        return found if found is not None and found.created_at >= since else None

    async def delete_receipts(self, *, before: dt.datetime) -> int:
        expired = [key for key, receipt in self._receipts.items() if receipt.created_at < before]
        for key in expired:
            del self._receipts[key]
        await self._commit()
        return len(expired)

    # -------------------------------------------------------------- sessions

    async def save_session(self, session: Session, messages: Sequence[SessionMessage]) -> None:
        created = self._sessions.get(session.id)
        if created is not None:  # the row keeps its creation facts, as the database does
            session = dataclasses.replace(session, job_id=created.job_id, created_at=created.created_at)
        self._sessions[session.id] = session
        transcript = self._messages.setdefault(session.id, [])
        for message in messages:
            transcript.append(
                dataclasses.replace(message, id=next(self._next_message), session_id=session.id)
            )
        await self._commit()

    async def get_session(self, session_id: str) -> SessionTranscript | None:
        await trio.lowlevel.checkpoint()
        session = self._sessions.get(session_id)
        if session is None:
            return None
        return SessionTranscript(session, list(self._messages.get(session_id, [])))

    async def delete_orphan_sessions(self, *, before: dt.datetime, limit: int) -> int:
        referenced = {run.output.session_id for run in self._runs.values()}
        doomed = sorted(
            (s for s in self._sessions.values() if s.updated_at < before and s.id not in referenced),
            key=lambda s: s.updated_at,
        )[:limit]
        for session in doomed:
            del self._sessions[session.id]
            self._messages.pop(session.id, None)
        await self._commit()
        return len(doomed)

    # ------------------------------------------------------------- retention

    async def expired_runs(self, *, before: dt.datetime, limit: int) -> list[str]:
        await trio.lowlevel.checkpoint()
        found = [run for run in self._terminal() if (run.finished_at or run.created_at) < before]
        return [run.id for run in sorted(found, key=lambda r: self._seq[r.id])[:limit]]

    async def jobs_over_run_cap(self, *, cap: int) -> list[str]:
        await trio.lowlevel.checkpoint()
        counts: dict[str, int] = {}
        for run in self._terminal():
            counts[run.job_id] = counts.get(run.job_id, 0) + 1
        return [job_id for job_id, count in counts.items() if count > cap]

    async def runs_beyond_cap(self, job_id: str, *, cap: int, limit: int) -> list[str]:
        await trio.lowlevel.checkpoint()
        mine = [run for run in self._terminal() if run.job_id == job_id]
        mine.sort(key=lambda r: (r.finished_at or r.created_at, self._seq[r.id]), reverse=True)
        return [run.id for run in mine[cap : cap + limit]]

    async def delete_terminal_runs(self, run_ids: Sequence[str]) -> int:
        doomed = {run_id for run_id in run_ids if (run := self._runs.get(run_id)) and run.status.terminal}
        for run_id in doomed:
            del self._runs[run_id]
        self._events = [e for e in self._events if e.run_id not in doomed]
        self._outbox = {k: n for k, n in self._outbox.items() if n.run_id not in doomed}
        await self._commit()
        return len(doomed)
