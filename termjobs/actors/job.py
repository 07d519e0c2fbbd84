"""The JobActor: one per job definition; owns its definition, schedule and active runs.

Its loop waits for *the next fire time or a message*, whichever comes first; it never
polls. Messages are handled one at a time, so decisions that depend on the job's state
(the concurrency limit, the schedule) cannot race. Active runs live in the actor's run
nursery (``termjobs.actors.runs``) and keep going while the actor handles messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import assert_never

import trio

from termjobs import jobspec
from termjobs.actors.mailbox import MAILBOX_SIZE, Reply
from termjobs.actors.runs import Refusal, RunEnv, RunHandle, RunTask
from termjobs.clock import deadline_or_inf
from termjobs.errors import Conflict, JobNotFound, RunNotFound, TermjobsError, Unavailable
from termjobs.model import (
    ConcurrencyPolicy,
    Job,
    MisfirePolicy,
    Run,
    RunStatus,
    RunTrigger,
    TriggerType,
    format_ts,
)
from termjobs.runners.base import StopReason
from termjobs.schedule import (
    DueFires,
    ManualTrigger,
    Trigger,
    TriggerError,
    due_fires,
    initial_next_run,
    parse_trigger,
)
from termjobs.storage import runops, store

logger = logging.getLogger(__name__)

#: How long ``cancel``/``delete`` wait for runs to record their final state.
RUN_STOP_WAIT_S = 60.0
#: At most this many runs of a ``queue``-policy job wait at once; more are skipped.
QUEUE_LIMIT = 100
#: Longest wait between attempts to record scheduled fires while storage fails.
FIRE_RETRY_MAX_S = 60.0
#: An actor with no active runs and no fire within ``HIBERNATE_HORIZON_S`` hibernates
#: after ``HIBERNATE_IDLE_S`` without messages; its supervisor wakes it again.
HIBERNATE_IDLE_S = 30.0
HIBERNATE_HORIZON_S = 60.0


# ------------------------------------------------------------------------ messages


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerNow:
    """Queue a manual run now."""

    reply: Reply[Run] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateJob:
    """Apply a PATCH body (pause and resume are ``{"enabled": false|true}``)."""

    body: dict[str, object]
    reply: Reply[Job] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteJob:
    """Delete the job (and its history); with ``cancel_active``, stop its runs first."""

    cancel_active: bool
    reply: Reply[None] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRun:
    """Cancel one of the job's runs."""

    run_id: str
    reply: Reply[Run] = field(default_factory=Reply)


JobMessage = TriggerNow | UpdateJob | DeleteJob | CancelRun


class ActorGone(Exception):
    """The actor stopped (hibernated) before it handled the message: send it again."""


class _Hibernate:
    """Internal: returned by ``_next_message`` when the actor should hibernate."""


_HIBERNATE = _Hibernate()


class JobActor:
    """Owns one job (see the module docstring).

    With ``hibernate`` set, an idle actor (no active runs, no fire soon, no messages
    for a while) ends its loop with ``hibernated`` set; the supervisor keeps only the
    job's next fire time and starts a new actor before it is due or when a request
    arrives. This keeps memory proportional to busy jobs, not to all jobs.
    """

    def __init__(
        self,
        job: Job,
        env: RunEnv,
        *,
        runs: Sequence[Run] = (),
        hibernate: bool = False,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self._job = job
        self._trigger: Trigger
        try:
            self._trigger = parse_trigger(job.trigger_type, job.trigger_config, job.schedule_timezone)
        except TriggerError as exc:
            # Stored before a rule changed (or its zone left tzdata): keep the job
            # reachable so it can be fixed with PATCH, but never fire it as it is.
            logger.error("job %s (%s) will not fire until its trigger is fixed: %s", job.id, job.name, exc)
            self._trigger, self._job = ManualTrigger(), replace(job, next_run_at=None)
        self._env = env
        self._initial_runs = list(runs)
        self.mailbox, self._inbox = trio.open_memory_channel[JobMessage](MAILBOX_SIZE)
        self._runs: dict[str, RunHandle] = {}
        self._job_slot = trio.CapacityLimiter(job.run_limit)
        self._loop_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._fire_retry_at: float | None = None
        self._fire_backoff = 0.0
        self._hibernate = hibernate
        self._service_closing = closing
        self._wait_scope: trio.CancelScope | None = None
        self.deleted = False
        self.hibernated = False
        #: set by the supervisor once the registry no longer routes to this actor
        self.retired = trio.Event()

    @property
    def job(self) -> Job:
        return self._job

    @property
    def active_runs(self) -> list[RunHandle]:
        return list(self._runs.values())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until the job is deleted or the service stops (then until its runs end)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for run in self._initial_runs:
                self._spawn(run)
            task_status.started()
            if self._service_closing():
                self.stop_firing()  # started while the service was shutting down
            try:
                with self._loop_scope:
                    await self._loop()
            finally:
                self._close_mailbox()

    # ------------------------------------------------------------- shutdown API

    def stop_firing(self) -> None:
        """Stop handling messages and firing; queued runs that have not started are
        left queued (they run after the next start). Running runs carry on."""
        self._stopping = True
        self._loop_scope.cancel()
        for handle in self.active_runs:
            if not handle.started:
                handle.cancel(StopReason.SHUTDOWN)

    def stop_runs(self, reason: StopReason) -> None:
        """Ask every active run to stop."""
        for handle in self.active_runs:
            handle.cancel(reason)

    # ---------------------------------------------------------------------- loop

    async def _loop(self) -> None:
        while not self.deleted:
            try:
                message = await self._next_message()
            except trio.EndOfChannel:
                return
            # Handled outside the deadline scope: a fire coming due must never cancel
            # a request half-way (its reply would be lost and its effect undone).
            if message is None:
                await self._fire_due()
            elif isinstance(message, _Hibernate):
                self.hibernated = True
                return
            else:
                await self._handle(message)

    async def _next_message(self) -> JobMessage | _Hibernate | None:
        """The next message; ``None`` when the next fire (or fire retry) is due or the
        runs changed; ``_HIBERNATE`` after an idle spell with nothing to look after."""
        if self._fire_retry_at is not None:
            wake = self._fire_retry_at
        else:
            wake = deadline_or_inf(self._env.clock, self._job.next_run_at if self._job.enabled else None)
        idle_until = trio.current_time() + HIBERNATE_IDLE_S if self._may_hibernate() else math.inf
        with trio.move_on_at(min(wake, idle_until)) as scope:
            self._wait_scope = scope
            return await self._inbox.receive()
        self._wait_scope = None
        if trio.current_time() >= idle_until and self._may_hibernate():
            return _HIBERNATE
        return None

    def _may_hibernate(self) -> bool:
        if not self._hibernate or self._runs or self._stopping or self._fire_retry_at is not None:
            return False
        job = self._job
        if not job.enabled or job.next_run_at is None:
            return True
        # Wall time, not the wake-up deadline: a real clock caps deadlines (30 s) so
        # that clock jumps are noticed, which says nothing about when the job fires.
        return (job.next_run_at - self._env.clock.now()).total_seconds() > HIBERNATE_HORIZON_S

    def _nudge(self) -> None:
        """Make the loop re-evaluate its wake-up (e.g. the last run just ended)."""
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    async def _handle(self, message: JobMessage) -> None:
        try:
            match message:
                case TriggerNow():
                    message.reply.send(await self._trigger_now())
                case UpdateJob():
                    message.reply.send(await self._update(message.body))
                case CancelRun():
                    message.reply.send(await self._cancel_run(message.run_id))
                case DeleteJob():
                    await self._delete(message.cancel_active)
                    self.deleted = True  # ends the loop
                    message.reply.send(None)
                case _:
                    assert_never(message)
        except TermjobsError as exc:
            message.reply.fail(exc)
        except Exception as exc:
            logger.exception("job %s: failed to handle %s", self._job.id, type(message).__name__)
            message.reply.fail(TermjobsError(f"internal error: {exc}"))
        except trio.Cancelled:
            message.reply.fail(Unavailable("the server is shutting down"))
            raise

    def _close_mailbox(self) -> None:
        """Refuse new messages and answer those still waiting, so no caller hangs."""
        self.mailbox.close()
        gone: Exception = ActorGone()  # hibernating or crashed: the supervisor sends it again
        if self.deleted:
            gone = JobNotFound()
        elif self._stopping:
            gone = Unavailable("the server is shutting down")
        while True:
            try:
                self._inbox.receive_nowait().reply.fail(gone)
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        self._inbox.close()

    # ------------------------------------------------------------------- firing

    async def _fire_due(self) -> None:
        self._fire_retry_at = None
        job, now = self._job, self._env.clock.now()
        if not job.enabled or job.next_run_at is None or now < job.next_run_at:
            return  # woken early (a capped real-clock sleep): nothing due yet
        grace = dt.timedelta(seconds=job.misfire_grace_seconds)
        due = due_fires(self._trigger, job.next_run_at, now, grace)
        decisions = self._decide_fires(due, now)
        last = due.on_time[-1] if due.on_time else due.missed_last
        advanced = replace(
            job,
            next_run_at=due.next_at,
            last_fire_at=last,
            enabled=job.enabled and job.trigger_type is not TriggerType.ONCE,
            updated_at=now,
        )
        try:
            queued = await self._env.gateway.write(
                lambda tx: runops.record_fires(tx, advanced, decisions, now=now)
            )
        except Exception:
            # Messages keep being served meanwhile; the fire is retried with backoff.
            self._fire_backoff = min(FIRE_RETRY_MAX_S, max(1.0, self._fire_backoff * 2))
            self._fire_retry_at = trio.current_time() + self._fire_backoff
            logger.exception(
                "job %s: could not record scheduled fires; retrying in %gs", job.id, self._fire_backoff
            )
            return
        self._fire_retry_at, self._fire_backoff = None, 0.0
        self._job = advanced
        self._replace_for(queued)
        for run in queued:
            self._spawn(run)

    def _decide_fires(self, due: DueFires, now: dt.datetime) -> list[runops.Enqueue | runops.Skip]:
        job = self._job
        decisions: list[runops.Enqueue | runops.Skip] = []
        if due.missed_count:
            assert due.missed_first is not None and due.missed_last is not None
            missed = {
                "missed": due.missed_count,
                "missed_capped": due.missed_capped,
                "first_missed": format_ts(due.missed_first),
                "last_missed": format_ts(due.missed_last),
            }
            run = self._new_run(due.missed_first, now)
            if job.misfire_policy is MisfirePolicy.SKIP:
                count = f"{due.missed_count}{'+' if due.missed_capped else ''}"
                message = (
                    f"skipped {count} missed fire(s): late by more than "
                    f"misfire_grace_seconds={job.misfire_grace_seconds} (misfire_policy skip)"
                )
                decisions.append(runops.Skip(run, message, {"reason": "misfire", **missed}))
            else:
                decisions.append(self._admit(run, len(decisions), {"catch_up": True, **missed}))
        for at in due.on_time:
            decisions.append(self._admit(self._new_run(at, now), self._pending(decisions)))
        return decisions

    @staticmethod
    def _pending(decisions: list[runops.Enqueue | runops.Skip]) -> int:
        return sum(isinstance(d, runops.Enqueue) for d in decisions)

    def _new_run(self, scheduled_for: dt.datetime, now: dt.datetime) -> Run:
        return runops.new_run(self._job, trigger=RunTrigger.SCHEDULE, scheduled_for=scheduled_for, now=now)

    def _admit(
        self, run: Run, pending: int, data: dict[str, object] | None = None
    ) -> runops.Enqueue | runops.Skip:
        refusal = self._refusal(pending)
        if refusal is None:
            return runops.Enqueue(run, dict(data) if data else None)
        return runops.Skip(run, f"skipped: {refusal}", self._concurrency_data(pending))

    def _admit_due_retry(self, handle: RunHandle) -> Refusal | None:
        """A retry came due: it obeys the pause state and the concurrency policy as a
        scheduled fire would (synchronous, so the decision cannot race)."""
        if not self._job.enabled:
            return Refusal("skipped: the job is paused", {"reason": "paused"})
        refusal = self._refusal(0, exclude=handle)
        if refusal is not None:
            return Refusal(f"skipped: {refusal}", self._concurrency_data(-1))
        if self._job.concurrency_policy is ConcurrencyPolicy.REPLACE:
            self._replace_for([handle.run], keep=handle)
        return None

    def _concurrency_data(self, pending: int) -> dict[str, object]:
        return {
            "reason": "concurrency",
            "policy": self._job.concurrency_policy.value,
            "active_runs": len(self._runs) + pending,
        }

    def _refusal(self, pending: int, *, exclude: RunHandle | None = None) -> str | None:
        """Why the concurrency policy refuses one more run now, or ``None``."""
        job = self._job
        active = len(self._runs) + pending - (1 if exclude is not None else 0)
        if job.concurrency_policy is ConcurrencyPolicy.QUEUE:
            waiting = active - job.run_limit
            return (
                f"{waiting} runs already waiting (queue limit {QUEUE_LIMIT})"
                if waiting >= QUEUE_LIMIT
                else None
            )
        if active < job.run_limit or job.concurrency_policy is ConcurrencyPolicy.REPLACE:
            return None
        if job.run_limit == 1:
            return f"job already has an active run (concurrency_policy {job.concurrency_policy})"
        return f"job already has {active} active runs (max {job.run_limit})"

    def _replace_for(self, new_runs: Sequence[Run], *, keep: RunHandle | None = None) -> None:
        """Under ``replace``, make room for ``new_runs`` by stopping the oldest runs."""
        if self._job.concurrency_policy is not ConcurrencyPolicy.REPLACE:
            return
        old = sorted(
            (h for h in self._runs.values() if not h.stop.requested and h is not keep),
            key=lambda h: (h.run.created_at, h.run.id),
        )
        excess = len(old) + len(new_runs) - self._job.run_limit
        for handle in old[: max(0, excess)]:
            handle.cancel(StopReason.REPLACE)

    # ---------------------------------------------------------------- messages

    async def _trigger_now(self) -> Run:
        job = self._job
        if not job.enabled:
            raise Conflict("job is disabled; resume it before triggering runs")
        refusal = self._refusal(0)
        if refusal is not None:
            raise Conflict(refusal)
        now = self._env.clock.now()
        run = runops.new_run(job, trigger=RunTrigger.MANUAL, scheduled_for=now, now=now)
        stored = await self._env.gateway.write(lambda tx: runops.create_run(tx, run, now=now))
        self._replace_for([stored])
        self._spawn(stored)
        return stored

    async def _update(self, body: dict[str, object]) -> Job:
        job = self._job
        valid = jobspec.definition_for_patch(job, body)
        old = jobspec.definition_of(job)
        now = self._env.clock.now()
        next_run_at = job.next_run_at
        if jobspec.schedule_changed(old, valid.definition):
            next_run_at = initial_next_run(
                valid.trigger, enabled=valid.definition.enabled, now=now, last_fire_at=job.last_fire_at
            )
        updated = jobspec.build_job(
            valid.definition,
            job_id=job.id,
            created_at=job.created_at,
            updated_at=now,
            next_run_at=next_run_at,
            last_fire_at=job.last_fire_at,
        )
        await self._env.gateway.write(lambda tx: store.update_job(tx, updated))
        self._job, self._trigger = updated, valid.trigger
        self._job_slot.total_tokens = updated.run_limit
        return updated

    async def _cancel_run(self, run_id: str) -> Run:
        handle = self._runs.get(run_id)
        if handle is None:
            stored = await self._stored_run(run_id)
            if stored.status is not RunStatus.QUEUED:
                return stored
            # Queued but owned by no task (its task died with an earlier actor).
            now = self._env.clock.now()
            await self._env.gateway.write(
                lambda tx: runops.cancel_queued(tx, stored, now=now, message="run cancelled before start")
            )
            return await self._stored_run(run_id)
        if handle.started:
            await self._request_cancel(handle.run, "cancellation requested")
            handle.cancel(StopReason.CANCEL)
            return await self._stored_run(run_id)
        handle.cancel(StopReason.CANCEL)
        with trio.move_on_after(RUN_STOP_WAIT_S):
            await handle.done.wait()
        return await self._stored_run(run_id)

    async def _request_cancel(self, run: Run, message: str) -> None:
        now = self._env.clock.now()
        await self._env.gateway.write(lambda tx: runops.request_cancel(tx, run, now=now, message=message))

    async def _stored_run(self, run_id: str) -> Run:
        run = await self._env.gateway.read(lambda conn: store.get_run(conn, run_id))
        if run is None or run.job_id != self._job.id:
            raise RunNotFound()
        return run

    async def _delete(self, cancel_active: bool) -> None:
        active = self.active_runs
        if active and not cancel_active:
            raise Conflict(
                f"job has {len(active)} active run(s); cancel them first, or delete with "
                "cancel_active=true to cancel them and delete the job"
            )
        for handle in active:
            if handle.started and handle.run.status is RunStatus.RUNNING:
                await self._request_cancel(handle.run, "cancellation requested: the job is being deleted")
            handle.cancel(StopReason.DELETE)
        with trio.move_on_after(RUN_STOP_WAIT_S):
            for handle in active:
                await handle.done.wait()
        if not await self._env.gateway.write(lambda tx: store.delete_job(tx, self._job.id)):
            raise JobNotFound()

    # --------------------------------------------------------------------- runs

    def _spawn(self, run: Run) -> None:
        if self._nursery is None:
            raise Unavailable("job actor is not running")
        handle = RunHandle(run)
        self._runs[run.id] = handle
        if self._stopping:
            handle.cancel(StopReason.SHUTDOWN)
        task = RunTask(
            handle,
            self._env,
            current_job=lambda: self._job,
            job_slot=self._job_slot,
            on_retry=self._spawn,
            admit=self._admit_due_retry,
        )
        self._nursery.start_soon(self._run_then_forget, task, name=f"run:{run.id}")

    async def _run_then_forget(self, task: RunTask) -> None:
        try:
            await task()
        finally:
            self._runs.pop(task.handle.run.id, None)
            if not self._runs:
                self._nudge()
