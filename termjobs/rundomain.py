"""The run domain: how a run comes to be, whether it may start, and how it ends.

Pure rules, no I/O: the job actor and the run tasks ask these functions what to do and
storage records the answer. Beside ``lifecycle`` (which moves are allowed), this module
decides which move to make:

* **Fires**: which of a job's due fires become queued runs and which are recorded as
  ``skipped`` (concurrency policy, misfire policy), and whether a retry that came due
  may start.
* **Endings**: the final :class:`Outcome` of a run from what its runner reported and why
  it was stopped; the retry to create after a failure; the *cancel wins* rule (a run
  whose cancel was requested ends ``cancelled`` whatever its runner reported).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from dataclasses import dataclass
from typing import Any, Final

from termjobs.jobdef import Job, JobDefinition
from termjobs.model import (
    PAYLOAD_FIELDS,
    ConcurrencyPolicy,
    ExitReason,
    JSONObject,
    MisfirePolicy,
    Run,
    RunOutput,
    RunStatus,
    RunTrigger,
    format_ts,
    new_run_id,
)
from termjobs.notify import NotifyTarget
from termjobs.retry import format_duration, retry_delay
from termjobs.runners.base import RunResult, StopReason
from termjobs.schedule import DueFires

#: At most this many runs of a ``queue``-policy job wait at once; more are skipped.
QUEUE_LIMIT: Final = 100

QUEUED_MESSAGES: Final = {
    RunTrigger.MANUAL: "manual run queued",
    RunTrigger.SCHEDULE: "scheduled run queued",
    RunTrigger.RETRY: "retry run queued",
}
STOP_MESSAGES: Final = {
    StopReason.CANCEL: "cancelled by request",
    StopReason.SHUTDOWN: "cancelled: the server shut down before the run finished",
    StopReason.DELETE: "cancelled: the job was deleted",
    StopReason.REPLACE: "cancelled: replaced by a newer run (concurrency_policy replace)",
    StopReason.LEASE_LOST: "worker lost: its server lost its cluster lease (it stalled, or lost the "
    "database) and another server took the job over",
}
LOST_MESSAGE: Final = "worker lost before run could finish: the server stopped while the run was in progress"
INTERRUPTED_CANCEL: Final = "cancelled: the server stopped before the cancellation completed"
ACTOR_LOST_MESSAGE: Final = "run interrupted: its job actor stopped unexpectedly"
CANCEL_WON_MESSAGE: Final = "cancelled by request before the run finished"
OUTPUT_LOST_NOTE: Final = "the run's output could not be stored"


def new_run(
    job_id: str,
    *,
    trigger: RunTrigger,
    scheduled_for: dt.datetime,
    now: dt.datetime,
    attempt: int = 1,
    retry_of: str | None = None,
    overrides: JSONObject | None = None,
) -> Run:
    """A queued run of ``job_id`` that has not been stored yet."""
    return Run(
        id=new_run_id(),
        job_id=job_id,
        attempt=attempt,
        trigger=trigger,
        scheduled_for=scheduled_for,
        status=RunStatus.QUEUED,
        retry_of=retry_of,
        overrides=overrides,
        created_at=now,
        updated_at=now,
    )


def timeout_of(spec: JobDefinition, run: Run) -> int:
    """How long ``run`` may take: its own ``timeout_seconds`` override, else the job's."""
    override = (run.overrides or {}).get("timeout_seconds")
    return override if isinstance(override, int) and not isinstance(override, bool) else spec.timeout_seconds


# ------------------------------------------------------------------------ fires


@dataclass(frozen=True, slots=True)
class Enqueue:
    """A run to queue, with extra data for its ``queued`` event."""

    run: Run
    data: JSONObject | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """A run decided against, recorded ``skipped`` with the reason."""

    run: Run
    message: str
    data: JSONObject


FireDecision = Enqueue | Skip


def refusal(spec: JobDefinition, active: int) -> str | None:
    """Why the concurrency policy refuses one more run while ``active`` runs are
    active (or already admitted), or ``None`` if it may be queued."""
    if spec.concurrency_policy is ConcurrencyPolicy.QUEUE:
        waiting = active - spec.run_limit
        return (
            f"{waiting} runs already waiting (queue limit {QUEUE_LIMIT})" if waiting >= QUEUE_LIMIT else None
        )
    if active < spec.run_limit or spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
        return None
    if spec.run_limit == 1:
        return f"job already has an active run (concurrency_policy {spec.concurrency_policy})"
    return f"job already has {active} active runs (max {spec.run_limit})"


def concurrency_data(spec: JobDefinition, active: int) -> JSONObject:
    """The ``data`` of a run skipped by the concurrency policy."""
    return {"reason": "concurrency", "policy": spec.concurrency_policy.value, "active_runs": active}


def admit(spec: JobDefinition, run: Run, active: int, data: JSONObject | None = None) -> FireDecision:
    """Queue ``run``, or skip it if the concurrency policy refuses it."""
    why = refusal(spec, active)
    if why is None:
        return Enqueue(run, data)
    return Skip(run, f"skipped: {why}", concurrency_data(spec, active))


def decide_fires(job: Job, due: DueFires, now: dt.datetime, *, active: int) -> list[FireDecision]:
    """What to record for the fires that came due: missed fires become one skipped or
    catch-up run (``misfire_policy``), fires on time are admitted one by one."""
    spec = job.spec
    decisions: list[FireDecision] = []
    if due.missed_count:
        assert due.missed_first is not None and due.missed_last is not None
        missed: JSONObject = {
            "missed": due.missed_count,
            "missed_capped": due.missed_capped,
            "first_missed": format_ts(due.missed_first),
            "last_missed": format_ts(due.missed_last),
        }
        run = new_run(job.id, trigger=RunTrigger.SCHEDULE, scheduled_for=due.missed_first, now=now)
        if spec.misfire_policy is MisfirePolicy.SKIP:
            count = f"{due.missed_count}{'+' if due.missed_capped else ''}"
            message = (
                f"skipped {count} missed fire(s): late by more than "
                f"misfire_grace_seconds={spec.misfire_grace_seconds} (misfire_policy skip)"
            )
            decisions.append(Skip(run, message, {"reason": "misfire", **missed}))
        else:
            decisions.append(admit(spec, run, active, {"catch_up": True, **missed}))
    for at in due.on_time:
        queued = sum(isinstance(decision, Enqueue) for decision in decisions)
        run = new_run(job.id, trigger=RunTrigger.SCHEDULE, scheduled_for=at, now=now)
        decisions.append(admit(spec, run, active + queued))
    return decisions


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a due run must not start, as recorded on its ``skipped`` event."""

    message: str
    data: JSONObject


def admit_retry(spec: JobDefinition, *, others_active: int) -> Refusal | None:
    """A retry came due: it obeys the pause state and the concurrency policy as a
    scheduled fire would (``others_active``: the job's other active runs)."""
    if not spec.enabled:
        return Refusal("skipped: the job is paused", {"reason": "paused"})
    why = refusal(spec, others_active)
    if why is not None:
        return Refusal(f"skipped: {why}", concurrency_data(spec, others_active))
    return None


# ---------------------------------------------------------------------- endings


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: its final status and what it leaves behind."""

    status: RunStatus
    exit_reason: ExitReason
    error: str | None = None
    output: RunOutput = dataclasses.field(default_factory=RunOutput)

    @classmethod
    def keeping(cls, run: Run, status: RunStatus, exit_reason: ExitReason, error: str) -> Outcome:
        """An outcome that keeps what ``run`` has already stored (partial output...)."""
        return cls(status, exit_reason, error, run.output)

    def without_payloads(self) -> Outcome:
        """The same ending without the captured output (when storage refuses it)."""
        output = dataclasses.replace(self.output, **_NO_PAYLOADS)
        error = f"{self.error}; {OUTPUT_LOST_NOTE}" if self.error else OUTPUT_LOST_NOTE
        return dataclasses.replace(self, output=output, error=error)


_NO_PAYLOADS: Final[dict[str, Any]] = dict.fromkeys(PAYLOAD_FIELDS)


def cancel_wins(outcome: Outcome) -> Outcome:
    """The ending of a run whose cancel was requested before it finished: cancelled,
    keeping the output, never retried."""
    if outcome.status is RunStatus.CANCELLED:
        return outcome
    return dataclasses.replace(
        outcome, status=RunStatus.CANCELLED, exit_reason=ExitReason.CANCELLED, error=CANCEL_WON_MESSAGE
    )


def decide(spec: JobDefinition, run: Run, result: RunResult, stopped: StopReason | None) -> Outcome:
    """The final status of ``run`` from what its runner reported and why it was stopped."""
    output = result.output
    if stopped is StopReason.TIMEOUT or (stopped is None and result.exit_reason is ExitReason.TIMEOUT):
        error = f"run timed out after {timeout_of(spec, run)}s (timeout_seconds)"
        return Outcome(RunStatus.TIMED_OUT, ExitReason.TIMEOUT, error, output)
    if stopped is StopReason.LEASE_LOST:
        return Outcome(RunStatus.FAILED, ExitReason.WORKER_LOST, STOP_MESSAGES[stopped], output)
    if stopped is not None:
        return Outcome(RunStatus.CANCELLED, ExitReason.CANCELLED, STOP_MESSAGES[stopped], output)
    if result.exit_reason is ExitReason.CANCELLED:
        return Outcome(RunStatus.CANCELLED, ExitReason.CANCELLED, result.error or "cancelled", output)
    if result.error:
        return Outcome(RunStatus.FAILED, result.exit_reason or ExitReason.EXCEPTION, result.error, output)
    return Outcome(RunStatus.SUCCEEDED, result.exit_reason or ExitReason.NATURAL_COMPLETION, None, output)


def lost(run: Run) -> Outcome:
    """The ending of a run whose server died under it (crash recovery)."""
    if run.status is RunStatus.CANCEL_REQUESTED:
        return Outcome.keeping(run, RunStatus.CANCELLED, ExitReason.CANCELLED, INTERRUPTED_CANCEL)
    return Outcome.keeping(run, RunStatus.FAILED, ExitReason.WORKER_LOST, LOST_MESSAGE)


def actor_lost() -> Outcome:
    """The ending of a run whose job actor was torn down while it ran."""
    return Outcome(RunStatus.FAILED, ExitReason.WORKER_LOST, ACTOR_LOST_MESSAGE)


@dataclass(frozen=True, slots=True)
class Retry:
    """A retry to create together with the failed run's final state."""

    run: Run
    delay: str


def plan_retry(
    spec: JobDefinition, run: Run, status: RunStatus, now: dt.datetime, rng: random.Random
) -> Retry | None:
    """The retry run to create if ``run`` ends with ``status``, per the job's policy."""
    policy = spec.parsed.retry
    if status not in (RunStatus.FAILED, RunStatus.TIMED_OUT) or run.attempt >= policy.max_attempts:
        return None
    delay = retry_delay(policy, run.attempt, uniform=rng.uniform)
    retry = new_run(
        run.job_id,
        trigger=RunTrigger.RETRY,
        scheduled_for=now + delay,
        now=now,
        attempt=run.attempt + 1,
        retry_of=run.id,
        overrides=run.overrides,  # a retry repeats the same attempt
    )
    return Retry(run=retry, delay=format_duration(delay))


@dataclass(frozen=True, slots=True)
class Ending:
    """A run's final state to record: the outcome, the retry to create with it (if
    any), and, should the run's cancel have been requested meanwhile, what to record
    instead (cancel wins: cancelled, not retried)."""

    run: Run
    outcome: Outcome
    retry: Retry | None = None
    message: str = "run finished"
    #: webhooks to tell, each if it wants the final status
    notify: tuple[NotifyTarget, ...] = ()

    @property
    def if_cancel_requested(self) -> Outcome:
        return cancel_wins(self.outcome)


def never_started_message(reason: StopReason) -> str:
    """The ``cancelled`` message of a run stopped before it started."""
    if reason is StopReason.CANCEL:
        return "run cancelled before start"
    return f"run {STOP_MESSAGES[reason]} before start"


def queued_data(run: Run, extra: JSONObject | None = None) -> JSONObject:
    """The data of a run's ``queued`` event."""
    data: JSONObject = {"trigger": run.trigger.value, "attempt": run.attempt}
    if run.retry_of:
        data["retry_of"] = run.retry_of
    if run.overrides:
        data["overrides"] = run.overrides
    return {**data, **(extra or {})}


def terminal_data(run: Run) -> JSONObject:
    """The data of a terminal event: the run's final state (every key present, text
    fields as ``""`` when empty), without the captured payloads."""
    data: JSONObject = {
        "status": run.status.value,
        "attempt": run.attempt,
        "error": run.error or "",
        "exit_reason": run.exit_reason.value if run.exit_reason else "",
    }
    for item in dataclasses.fields(RunOutput):
        if item.name in PAYLOAD_FIELDS:
            continue
        value = getattr(run.output, item.name)
        data[item.name] = "" if value is None and item.name != "exit_code" else value
    return data
