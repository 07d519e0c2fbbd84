"""Run transactions: each function is one unit of work for the gateway's writer.

A status change and the timeline event that records it are always written in the
same transaction, so the timeline can never disagree with the run row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from termjobs.model import (
    EventType,
    ExitReason,
    Job,
    JSONValue,
    Run,
    RunStatus,
    RunTrigger,
    new_run_id,
)
from termjobs.storage import store
from termjobs.storage.store import WriteTx

_QUEUED_MESSAGES = {
    RunTrigger.MANUAL: "manual run queued",
    RunTrigger.SCHEDULE: "scheduled run queued",
    RunTrigger.RETRY: "retry run queued",
}


def new_run(
    job: Job,
    *,
    trigger: RunTrigger,
    scheduled_for: dt.datetime,
    now: dt.datetime,
    attempt: int = 1,
    retry_of: str | None = None,
    status: RunStatus = RunStatus.QUEUED,
) -> Run:
    """A run value for ``job`` that has not been stored yet."""
    return Run(
        id=new_run_id(),
        job_id=job.id,
        attempt=attempt,
        trigger=trigger,
        scheduled_for=scheduled_for,
        status=status,
        retry_of=retry_of,
        created_at=now,
        updated_at=now,
    )


def create_run(tx: WriteTx, run: Run, *, now: dt.datetime, data: dict[str, Any] | None = None) -> Run:
    """Store a new queued run and its ``queued`` event."""
    store.insert_run(tx, run)
    payload: dict[str, Any] = {"trigger": run.trigger.value, "attempt": run.attempt}
    if run.retry_of:
        payload["retry_of"] = run.retry_of
    store.insert_event(
        tx,
        run=run,
        event_type=EventType.QUEUED,
        message=_QUEUED_MESSAGES[run.trigger],
        now=now,
        data={**payload, **(data or {})},
    )
    return run


def create_skipped_run(tx: WriteTx, run: Run, *, now: dt.datetime, message: str, data: dict[str, Any]) -> Run:
    """Store a run that was decided against (status ``skipped``) and why."""
    skipped = replace(run, status=RunStatus.SKIPPED, finished_at=now, error=message)
    store.insert_run(tx, skipped)
    store.insert_event(tx, run=skipped, event_type=EventType.SKIPPED, message=message, now=now, data=data)
    return skipped


def start_run(tx: WriteTx, run: Run, *, worker_id: str, now: dt.datetime) -> Run | None:
    """``queued -> claimed -> running`` in one update, with both events; ``None`` if the
    run is no longer queued."""
    running = store.update_run(
        tx,
        run.id,
        status=RunStatus.RUNNING,
        via=RunStatus.CLAIMED,
        now=now,
        worker_id=worker_id,
        started_at=now,
    )
    if running is None:
        return None
    data = {"worker_id": worker_id}
    store.insert_event(
        tx, run=running, event_type=EventType.CLAIMED, message="run claimed by worker", now=now, data=data
    )
    store.insert_event(
        tx, run=running, event_type=EventType.RUNNING, message="run started", now=now, data=data
    )
    return running


def cancel_queued(tx: WriteTx, run: Run, *, now: dt.datetime, message: str) -> Run | None:
    """``queued|claimed -> cancelled`` before the run started."""
    cancelled = store.update_run(tx, run.id, status=RunStatus.CANCELLED, now=now, finished_at=now)
    if cancelled is not None:
        store.insert_event(tx, run=cancelled, event_type=EventType.CANCELLED, message=message, now=now)
    return cancelled


def skip_queued(tx: WriteTx, run: Run, *, now: dt.datetime, message: str, data: dict[str, Any]) -> Run | None:
    """``queued -> skipped`` (a retry that came due while its job was paused or busy)."""
    skipped = store.update_run(tx, run.id, status=RunStatus.SKIPPED, now=now, finished_at=now, error=message)
    if skipped is not None:
        store.insert_event(tx, run=skipped, event_type=EventType.SKIPPED, message=message, now=now, data=data)
    return skipped


def request_cancel(tx: WriteTx, run: Run, *, now: dt.datetime, message: str) -> Run | None:
    """``running -> cancel_requested``; ``None`` if the run is not running."""
    updated = store.update_run(tx, run.id, status=RunStatus.CANCEL_REQUESTED, now=now)
    if updated is not None:
        store.insert_event(tx, run=updated, event_type=EventType.CANCEL_REQUESTED, message=message, now=now)
    return updated


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, as decided by the run's owner."""

    status: RunStatus
    exit_reason: ExitReason
    error: str | None = None
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    thinking: str | None = None
    response: str | None = None
    session_id: str | None = None
    truncated: bool = False
    turn_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    @classmethod
    def keeping(cls, run: Run, status: RunStatus, exit_reason: ExitReason, error: str) -> Outcome:
        """An outcome that keeps what ``run`` has already stored (partial output...)."""
        return cls(
            status,
            exit_reason,
            error,
            exit_code=run.exit_code,
            stdout=run.stdout,
            stderr=run.stderr,
            thinking=run.thinking,
            response=run.response,
            session_id=run.session_id,
            truncated=run.truncated,
            turn_count=run.turn_count,
            input_tokens=run.input_tokens,
            output_tokens=run.output_tokens,
        )


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry to create together with the failed run's final state."""

    run: Run
    delay: str


def finish_run(
    tx: WriteTx,
    run: Run,
    outcome: Outcome,
    *,
    now: dt.datetime,
    message: str = "run finished",
    retry: Retry | None = None,
) -> Run | None:
    """Write a run's final state and terminal event (and its retry, if any).

    If a cancel was requested meanwhile, the run ends ``cancelled`` whatever the
    outcome, and is not retried. ``None`` if the run was already terminal.
    """
    fields = _outcome_fields(outcome, now)
    final = store.update_run(tx, run.id, status=outcome.status, now=now, **fields)
    if final is None and outcome.status is not RunStatus.CANCELLED:
        forced = {**fields, "exit_reason": ExitReason.CANCELLED}
        forced["error"] = "cancelled by request before the run finished"
        final = store.update_run(tx, run.id, status=RunStatus.CANCELLED, now=now, **forced)
        retry = None
    if final is None:
        return None
    store.insert_event(
        tx,
        run=final,
        event_type=EventType(final.status.value),
        message=message,
        now=now,
        data=terminal_data(final),
    )
    if retry is not None and final.status in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        create_run(tx, retry.run, now=now)
        store.insert_event(
            tx,
            run=final,
            event_type=EventType.RETRY_SCHEDULED,
            message="retry run scheduled",
            now=now,
            data={
                "retry_run_id": retry.run.id,
                "next_attempt": retry.run.attempt,
                "delay": retry.delay,
            },
        )
    return final


def storable(text: str | None) -> str | None:
    """``text`` without NUL characters, which PostgreSQL text columns refuse (a program
    may print anything); each becomes U+FFFD, as undecodable bytes do."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


def _outcome_fields(outcome: Outcome, now: dt.datetime) -> dict[str, Any]:
    return {
        "finished_at": now,
        "exit_reason": outcome.exit_reason,
        "error": storable(outcome.error),
        "exit_code": outcome.exit_code,
        "stdout": storable(outcome.stdout),
        "stderr": storable(outcome.stderr),
        "thinking": storable(outcome.thinking),
        "response": storable(outcome.response),
        "session_id": storable(outcome.session_id),
        "truncated": outcome.truncated,
        "turn_count": outcome.turn_count,
        "input_tokens": outcome.input_tokens,
        "output_tokens": outcome.output_tokens,
    }


def terminal_data(run: Run) -> dict[str, JSONValue]:
    """The data of a terminal event: the run's final state, every key present."""
    return {
        "status": run.status.value,
        "attempt": run.attempt,
        "session_id": run.session_id or "",
        "exit_code": run.exit_code,
        "error": run.error or "",
        "exit_reason": run.exit_reason.value if run.exit_reason else "",
        "truncated": run.truncated,
        "turn_count": run.turn_count,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
    }


def requeue(tx: WriteTx, run: Run, *, now: dt.datetime) -> Run | None:
    """``claimed -> queued`` (the server stopped between claim and start)."""
    back = store.update_run(tx, run.id, status=RunStatus.QUEUED, now=now, worker_id=None)
    if back is not None:
        store.insert_event(
            tx,
            run=back,
            event_type=EventType.REQUEUED,
            message="run returned to queue during server shutdown",
            now=now,
            data={"worker_id": run.worker_id or ""},
        )
    return back


@dataclass(frozen=True, slots=True)
class Skip:
    """A scheduled fire decided against, with the reason to record."""

    run: Run
    message: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Enqueue:
    """A run to queue, with extra data for its ``queued`` event."""

    run: Run
    data: dict[str, Any] | None = None


def record_fires(tx: WriteTx, job: Job, decisions: list[Enqueue | Skip], *, now: dt.datetime) -> list[Run]:
    """Store the outcome of a scheduler wake-up and the job's advanced schedule
    atomically; returns the queued runs."""
    queued: list[Run] = []
    for decision in decisions:
        if store.scheduled_run_exists(tx.conn, job.id, decision.run.scheduled_for):
            # Already recorded (a once job re-armed to a time it fired at, or a clock
            # that stepped back): fires are idempotent per nominal time.
            continue
        if isinstance(decision, Skip):
            create_skipped_run(tx, decision.run, now=now, message=decision.message, data=decision.data)
        else:
            queued.append(create_run(tx, decision.run, now=now, data=decision.data))
    store.update_job(tx, job)
    return queued
