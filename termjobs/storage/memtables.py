"""The state of :class:`~termjobs.storage.memory.MemoryStorage` and the primitive
operations its facade methods are made of: dictionaries for the tables, a guarded
status change, numbered events published at "commit", and the filters that mirror the
SQL statements' semantics.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
from typing import Any

import trio

from termjobs import lifecycle
from termjobs.jobdef import Job
from termjobs.model import (
    PAYLOAD_FIELDS,
    EventType,
    JSONValue,
    Run,
    RunEvent,
    RunStatus,
    RunTrigger,
    Session,
    SessionMessage,
)
from termjobs.notify import NotifyTarget
from termjobs.storage.base import (
    RECEIPT_LIFETIME,
    DuplicateReceipt,
    JobFilters,
    NameTaken,
    PendingNotification,
    Receipt,
    RunFilters,
    StorageError,
)
from termjobs.storage.gateway import OnCommit

_NO_PAYLOADS: dict[str, Any] = dict.fromkeys(PAYLOAD_FIELDS)


class MemoryTables:
    """The in-memory tables and their primitive operations (see the module docstring)."""

    def __init__(self, *, on_commit: OnCommit | None = None) -> None:
        self._on_commit = on_commit
        self._jobs: dict[str, Job] = {}
        self._runs: dict[str, Run] = {}
        self._seq: dict[str, int] = {}
        self._events: list[RunEvent] = []
        self._next_seq = itertools.count(1)
        self._next_event = itertools.count(1)
        self._pending: list[RunEvent] = []
        self._outbox: dict[int, PendingNotification] = {}
        self._next_notification = itertools.count(1)
        self._receipts: dict[str, Receipt] = {}
        self._sessions: dict[str, Session] = {}
        self._messages: dict[str, list[SessionMessage]] = {}
        self._next_message = itertools.count(1)

    async def _commit(self) -> None:
        await trio.lowlevel.checkpoint()
        published, self._pending = self._pending, []
        if published and self._on_commit is not None:
            self._on_commit(published)

    def _event(
        self, run: Run, event_type: EventType, message: str | None, data: JSONValue, now: dt.datetime
    ) -> RunEvent:
        if run.id not in self._runs:
            raise StorageError(f"run {run.id} does not exist")
        event = RunEvent(
            id=next(self._next_event),
            run_id=run.id,
            job_id=run.job_id,
            event_type=event_type,
            message=(message.strip() if message else None) or None,
            data=data,
            created_at=now,
        )
        self._events.append(event)
        self._pending.append(event)
        return event

    def _move(
        self,
        run_id: str,
        status: RunStatus,
        now: dt.datetime,
        *,
        via: RunStatus | None = None,
        **changes: object,
    ) -> Run | None:
        current = self._runs.get(run_id)
        if via is not None:
            lifecycle.check(via, status)
        if current is None or current.status not in lifecycle.allowed_from(via or status):
            return None
        moved = dataclasses.replace(current, status=status, updated_at=now, **changes)  # type: ignore[arg-type]
        self._runs[run_id] = moved
        return moved

    def _insert_run(self, run: Run) -> None:
        if run.job_id not in self._jobs:
            raise StorageError(f"job {run.job_id} does not exist")
        self._runs[run.id] = run
        self._seq[run.id] = next(self._next_seq)

    def _scheduled_exists(self, job_id: str, at: dt.datetime) -> bool:
        return any(
            r.job_id == job_id and r.trigger is RunTrigger.SCHEDULE and r.scheduled_for == at
            for r in self._runs.values()
        )

    def _check_name(self, job: Job) -> None:
        if any(other.spec.name == job.spec.name and other.id != job.id for other in self._jobs.values()):
            raise NameTaken(job.spec.name)

    def _find(self, ref: str) -> Job | None:
        if ref in self._jobs:
            return self._jobs[ref]
        return next((job for job in self._jobs.values() if job.spec.name == ref), None)

    def _newest_first(self, found: list[Run]) -> list[Run]:
        return sorted(found, key=lambda r: (r.created_at, self._seq[r.id]), reverse=True)

    def _last_run(self, job_id: str) -> Run | None:
        mine = [run for run in self._runs.values() if run.job_id == job_id]
        if not mine:
            return None
        return summary(max(mine, key=lambda r: self._seq[r.id]))

    def _enqueue(self, run: Run, targets: tuple[NotifyTarget, ...], now: dt.datetime) -> None:
        for target in targets:
            if target.wants(run.status):
                ident = next(self._next_notification)
                self._outbox[ident] = PendingNotification(
                    id=ident,
                    run_id=run.id,
                    job_id=run.job_id,
                    url=target.url,
                    secret=target.secret,
                    created_at=now,
                )

    def _store_receipt(self, receipt: Receipt) -> None:
        current = self._receipts.get(receipt.key)
        if current is not None and current.created_at >= receipt.created_at - RECEIPT_LIFETIME:
            raise DuplicateReceipt(f"the Idempotency-Key {receipt.key!r} was used already")
        self._receipts[receipt.key] = receipt

    def _terminal(self) -> list[Run]:
        return [run for run in self._runs.values() if run.status.terminal]


def summary(run: Run) -> Run:
    return dataclasses.replace(run, output=dataclasses.replace(run.output, **_NO_PAYLOADS))


def job_matches(job: Job, filters: JobFilters) -> bool:
    spec = job.spec
    return (
        (not filters.name or filters.name.lower() in spec.name.lower())
        and (filters.enabled is None or spec.enabled == filters.enabled)
        and (filters.trigger_type is None or spec.trigger_type is filters.trigger_type)
        and (filters.runner_type is None or spec.runner_type is filters.runner_type)
        and all(label_is(spec.labels, key, value) for key, value in filters.labels)
        and (not filters.id_prefix or job.id.startswith(filters.id_prefix))
    )


def label_is(labels: JSONValue, key: str, value: str) -> bool:
    if not isinstance(labels, dict) or key not in labels:
        return False
    found = labels[key]
    if isinstance(found, str):
        return found == value
    if isinstance(found, bool | int | float):
        return json.dumps(found) == value
    return False


def run_matches(run: Run, job_id: str | None, filters: RunFilters) -> bool:
    return (
        (job_id is None or run.job_id == job_id)
        and (not filters.statuses or run.status in filters.statuses)
        and (filters.trigger is None or run.trigger is filters.trigger)
        and (filters.created_after is None or run.created_at >= filters.created_after)
        and (filters.created_before is None or run.created_at < filters.created_before)
    )
