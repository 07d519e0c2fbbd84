"""The JobActor: one per job definition; owns its definition, schedule and active runs.

Its loop waits for *the next fire time or a message*, whichever comes first; it never
polls. Messages (``termjobs.actors.protocol``) are handled one at a time, so decisions
that depend on the job's state (the concurrency limit, the schedule) cannot race:
requests from the supervisor, and notices from its own run tasks (a retry came due, a
run ended). Active runs live in the actor's run nursery (``termjobs.actors.runs``) and
keep going while the actor handles messages. The rules themselves (which fires run,
which are skipped) are in ``termjobs.rundomain``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import assert_never

import trio

from termjobs import jobspec, rundomain, wire
from termjobs.actors.alarms import Alarms
from termjobs.actors.mailbox import MAILBOX_SIZE
from termjobs.actors.protocol import (
    TICK,
    ActorExit,
    ActorGone,
    CancelRun,
    DeleteJob,
    JobMessage,
    Release,
    Request,
    RetryDue,
    RunEnded,
    RunHandle,
    Tick,
    TriggerNow,
    UpdateJob,
)
from termjobs.actors.runs import RunEnv, RunTask
from termjobs.clock import deadline_or_inf
from termjobs.errors import (
    AlreadyAnswered,
    Conflict,
    InternalError,
    JobNotFound,
    RunNotFound,
    TermjobsError,
    Unavailable,
)
from termjobs.jobdef import Job
from termjobs.jobspec import JobPatch
from termjobs.model import ConcurrencyPolicy, Run, RunStatus, RunTrigger, TriggerType
from termjobs.rundomain import Refusal
from termjobs.runners.base import StopReason, check_runnable
from termjobs.schedule import due_fires, initial_next_run
from termjobs.storage import DuplicateReceipt, NameTaken, NotOwner, StorageUnavailable

logger = logging.getLogger(__name__)

#: How long ``cancel``/``delete`` wait for runs to record their final state.
RUN_STOP_WAIT_S = 60.0
#: Longest wait between attempts to record scheduled fires while storage fails (short:
#: the fire should run soon after storage is back).
FIRE_RETRY_MAX_S = 5.0
#: An actor with no active runs and no fire within ``HIBERNATE_HORIZON_S`` hibernates
#: after ``HIBERNATE_IDLE_S`` without messages; its supervisor wakes it again.
HIBERNATE_IDLE_S = 30.0
HIBERNATE_HORIZON_S = 60.0


class _Hibernate:
    """Internal: returned by ``_next_message`` when the actor should hibernate."""


_HIBERNATE = _Hibernate()


class JobActor:
    """Owns one job (see the module docstring).

    With ``hibernate`` set, an idle actor (no active runs, no fire soon, no messages
    for a while) ends its loop; the supervisor keeps only the job's next fire time and
    starts a new actor before it is due or when a request arrives. This keeps memory
    proportional to busy jobs, not to all jobs.
    """

    def __init__(
        self,
        job: Job,
        env: RunEnv,
        *,
        runs: Sequence[Run] = (),
        hibernate: bool = False,
        alarms: Alarms,
        closing: Callable[[], bool] = lambda: False,
        late_fire: dt.datetime | None = None,
    ) -> None:
        problem = job.spec.parsed.problem
        if problem is not None:
            # Stored before a rule changed (or its zone left tzdata): keep the job
            # reachable so it can be fixed with PATCH, but never fire it as it is.
            logger.error(
                "job %s (%s) will not fire until it is fixed: %s",
                job.id,
                job.spec.name,
                problem,
                extra={"job_id": job.id},
            )
            job = replace(job, next_run_at=None)
        self._job = job
        self._env = env
        self._initial_runs = list(runs)
        self.mailbox, self._inbox = trio.open_memory_channel[JobMessage](MAILBOX_SIZE)
        self._runs: dict[str, RunHandle] = {}
        self._job_slot = trio.CapacityLimiter(job.spec.run_limit)
        self._loop_scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._stopping = False
        self._fire_retry_at: float | None = None
        self._fire_backoff = 0.0
        #: when the fire being retried first came due and was judged (misfire grace);
        #: ``late_fire``: a fire its supervisor could not wake it for (storage down)
        self._fire_judged_at: dt.datetime | None = late_fire
        self._hibernate = hibernate
        self._alarms = alarms
        self._service_closing = closing
        self._ending: ActorExit | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> ActorExit:
        """Run until the job is deleted, the actor hibernates or the service stops (then
        until its runs end); why it ended."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for run in self._initial_runs:
                self._spawn(run)
            task_status.started()
            if self._service_closing():
                self.stop_firing()  # started while the service was shutting down
            try:
                with self._loop_scope:
                    self._ending = await self._loop()
            finally:
                self._alarms.discard(self)
                self._close_mailbox()
        return self._ending or ActorExit("stopped", self._job)

    # --------------------------------------------------------------- control

    def stop_firing(self) -> None:
        """Stop handling messages and firing; queued runs that have not started are
        left queued (they run after the next start). Running runs carry on."""
        self._stopping = True
        self._loop_scope.cancel()
        for handle in self._runs.values():
            if not handle.started:
                handle.cancel(StopReason.SHUTDOWN)

    def lose(self) -> None:
        """This server no longer owns the job (a cluster's fence said so, or its lease
        lapsed): stop at once. Running runs are stopped and end ``failed`` /
        ``worker_lost`` (unless the new owner recorded that first); queued ones stay
        queued for the new owner."""
        if self._ending is None or self._ending.reason != "deleted":
            self._ending = ActorExit("lost", self._job)
        self._stopping = True
        self._loop_scope.cancel()
        self.stop_runs(StopReason.LEASE_LOST)

    def stop_runs(self, reason: StopReason) -> None:
        """Ask every active run to stop."""
        for handle in self._runs.values():
            handle.cancel(reason)

    def running(self) -> list[RunHandle]:
        """Runs that are executing now (not waiting, not done)."""
        return [h for h in self._runs.values() if h.started and not h.done.is_set()]

    def active(self) -> list[RunHandle]:
        """Runs not yet done."""
        return [h for h in self._runs.values() if not h.done.is_set()]

    # ------------------------------------------------------------------ loop

    async def _loop(self) -> ActorExit:
        while True:
            try:
                message = await self._next_message()
            except trio.EndOfChannel:
                return ActorExit("stopped", self._job)
            # Handled outside the deadline scope: a fire coming due must never cancel
            # a request half-way (its reply would be lost and its effect undone).
            if message is None:
                await self._fire_due()
            elif isinstance(message, _Hibernate):
                return ActorExit("hibernated", self._job)
            else:
                ended = await self._handle(message)
                if ended is not None:
                    return ended

    async def _next_message(self) -> JobMessage | _Hibernate | None:
        """The next message; ``None`` when the next fire (or fire retry) is due;
        ``_HIBERNATE`` after an idle spell with nothing to look after."""
        if self._fire_retry_at is not None:
            wake = self._fire_retry_at
        else:
            wake = deadline_or_inf(self._env.clock, self._job.next_run_at if self._job.spec.enabled else None)
        idle_until = trio.current_time() + HIBERNATE_IDLE_S if self._may_hibernate() else math.inf
        deadline = min(wake, idle_until)
        while trio.current_time() < deadline:
            if deadline < math.inf:
                self._alarms.set(self, deadline, self._tick)
            message = await self._inbox.receive()
            if not isinstance(message, Tick):
                return message
        if trio.current_time() >= idle_until and self._may_hibernate():
            return _HIBERNATE
        return None

    def _tick(self) -> None:
        # Rung for 100,000 actors at once: a try costs a third of contextlib.suppress.
        try:  # noqa: SIM105
            self.mailbox.send_nowait(TICK)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # busy (it looks at the clock before it waits again) or gone: not needed

    def _may_hibernate(self) -> bool:
        if not self._hibernate or self._runs or self._stopping or self._fire_retry_at is not None:
            return False
        job = self._job
        if not job.spec.enabled or job.next_run_at is None:
            return True
        # Wall time, not the wake-up deadline: a real clock caps deadlines (30 s) so
        # that clock jumps are noticed, which says nothing about when the job fires.
        return (job.next_run_at - self._env.clock.now()).total_seconds() > HIBERNATE_HORIZON_S

    async def _handle(self, message: JobMessage) -> ActorExit | None:
        """Handle one message; why the actor ends now, if it does."""
        match message:
            case RunEnded():
                self._ended(message)
            case Tick():
                pass  # an outdated alarm
            case RetryDue():
                message.reply.send(self._admit_due_retry(message.handle))
            case Release():
                idle = not self._runs
                message.reply.send(idle)
                if idle:
                    return ActorExit("released", self._job)
            case TriggerNow() | UpdateJob() | CancelRun() | DeleteJob():
                if await self._answer(message):
                    return ActorExit("deleted", self._job)
            case _:
                assert_never(message)
        return None

    async def _answer(self, request: Request) -> bool:
        try:
            match request:
                case TriggerNow():
                    request.reply.send(await self._trigger_now(request))
                case UpdateJob():
                    request.reply.send(await self._update(request.patch))
                case CancelRun():
                    request.reply.send(await self._cancel_run(request.run_id))
                case DeleteJob():
                    await self._delete(request.cancel_active)
                    request.reply.send(None)
                    return True
                case _:
                    assert_never(request)
        except NotOwner as exc:
            request.reply.fail(exc)  # the caller asks the job's new owner
            self._env.lost_job(self._job.id)
        except (TermjobsError, StorageUnavailable) as exc:
            # StorageUnavailable: the database is down or slow; the client gets a 503
            # with Retry-After, not an internal error.
            request.reply.fail(exc)
        except Exception as exc:
            ref = secrets.token_hex(4)
            logger.exception(
                "job %s: failed to handle %s (ref %s)",
                self._job.id,
                type(request).__name__,
                ref,
                extra={"job_id": self._job.id},
            )
            request.reply.fail(InternalError(ref, exc))
        except trio.Cancelled:
            request.reply.fail(Unavailable("the server is shutting down"))
            raise
        return False

    def _close_mailbox(self) -> None:
        """Refuse new messages and answer those still waiting, so no caller hangs."""
        self.mailbox.close()
        gone: Exception = ActorGone()  # hibernating or crashed: the supervisor sends it again
        if self._ending is not None and self._ending.reason == "deleted":
            gone = JobNotFound()
        elif self._ending is not None and self._ending.reason in ("released", "lost"):
            gone = NotOwner(self._job.id)  # the caller asks the job's new owner
        elif self._stopping:
            gone = Unavailable("the server is shutting down")
        while True:
            try:
                message = self._inbox.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if not isinstance(message, RunEnded | Tick):
                message.reply.fail(gone)
        self._inbox.close()

    # ----------------------------------------------------------------- firing

    async def _fire_due(self) -> None:
        self._fire_retry_at = None
        job = self._job
        # A fire retried because storage failed is judged as of its first attempt: an
        # outage must not turn a fire that was on time into a misfire.
        now = self._fire_judged_at or self._env.clock.now()
        if not job.spec.enabled or job.next_run_at is None or now < job.next_run_at:
            # Woken early (a capped real-clock sleep), or the schedule changed while a
            # fire was being retried: nothing due (as of then); judge anew next time.
            self._fire_judged_at = None
            return
        grace = dt.timedelta(seconds=job.spec.misfire_grace_seconds)
        due = due_fires(job.spec.parsed.trigger, job.next_run_at, now, grace)
        decisions = rundomain.decide_fires(job, due, now, active=len(self.active()))
        last = due.on_time[-1] if due.on_time else due.missed_last
        advanced = replace(
            job,
            spec=job.spec.with_enabled(job.spec.enabled and job.spec.trigger_type is not TriggerType.ONCE),
            next_run_at=due.next_at,
            last_fire_at=last,
            updated_at=now,
        )
        try:
            queued = await self._env.storage.record_fires(
                advanced, decisions, now=now, notify=self._env.notify_targets(advanced)
            )
        except NotOwner:
            # Another server took the job over (the fence refused the fire): it fires it.
            self._env.lost_job(job.id)
            return
        except Exception:
            # Messages keep being served meanwhile; the fire is retried with backoff.
            self._fire_judged_at = now
            self._fire_backoff = min(FIRE_RETRY_MAX_S, max(1.0, self._fire_backoff * 2))
            self._fire_retry_at = trio.current_time() + self._fire_backoff
            logger.exception(
                "job %s: could not record scheduled fires; retrying in %gs",
                job.id,
                self._fire_backoff,
                extra={"job_id": job.id},
            )
            return
        self._fire_retry_at, self._fire_backoff, self._fire_judged_at = None, 0.0, None
        self._env.observer.fires_recorded(advanced, decisions, now)
        self._job = advanced
        self._replace_for(queued)
        for run in queued:
            self._spawn(run)

    def _admit_due_retry(self, handle: RunHandle) -> Refusal | None:
        others = [h for h in self.active() if h is not handle]
        refusal = rundomain.admit_retry(self._job.spec, others_active=len(others))
        if refusal is None and self._job.spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
            self._replace_for([handle.run], keep=handle)
        return refusal

    def _replace_for(self, new_runs: Sequence[Run], *, keep: RunHandle | None = None) -> None:
        """Under ``replace``, make room for ``new_runs`` by stopping the oldest runs."""
        if self._job.spec.concurrency_policy is not ConcurrencyPolicy.REPLACE:
            return
        old = sorted(
            (h for h in self.active() if not h.stop.requested and h is not keep),
            key=lambda h: (h.run.created_at, h.run.id),
        )
        excess = len(old) + len(new_runs) - self._job.spec.run_limit
        for handle in old[: max(0, excess)]:
            handle.cancel(StopReason.REPLACE)

    # --------------------------------------------------------------- requests

    async def _trigger_now(self, request: TriggerNow) -> Run:
        job = self._job
        if not job.spec.enabled:
            raise Conflict("job is disabled; resume it before triggering runs")
        if request.overrides is not None:
            jobspec.check_overrides(job.spec, request.overrides)
        refusal = rundomain.refusal(job.spec, len(self.active()))
        if refusal is not None:
            raise Conflict(refusal)
        now = self._env.clock.now()
        run = rundomain.new_run(
            job.id, trigger=RunTrigger.MANUAL, scheduled_for=now, now=now, overrides=request.overrides
        )
        receipt = None
        if request.idempotency is not None:
            receipt = request.idempotency.receipt(202, wire.dumps(wire.run_json(run)), now)
        try:
            stored = await self._env.storage.create_run(run, receipt=receipt)
        except DuplicateReceipt:
            raise AlreadyAnswered() from None
        self._replace_for([stored])
        self._spawn(stored)
        return stored

    async def _update(self, patch: JobPatch) -> Job:
        job = self._job
        spec = jobspec.apply_patch(job.spec, patch)
        if patch.changes.keys() & {"runner_type", "runner_config"}:
            check_runnable(self._env.runners, spec)  # e.g. an llm job's agent must exist
        now = self._env.clock.now()
        next_run_at = job.next_run_at
        if job.spec.schedule_differs(spec):
            next_run_at = initial_next_run(
                spec.parsed.trigger, enabled=spec.enabled, now=now, last_fire_at=job.last_fire_at
            )
        updated = replace(job, spec=spec, updated_at=now, next_run_at=next_run_at)
        try:
            await self._env.storage.update_job(updated)
        except NameTaken as exc:
            raise Conflict(str(exc)) from None
        self._job = updated
        self._job_slot.total_tokens = spec.run_limit
        for handle in self._runs.values():
            handle.job = updated
        return updated

    async def _cancel_run(self, run_id: str) -> Run:
        handle = self._runs.get(run_id)
        if handle is None or handle.done.is_set():
            stored = await self._stored_run(run_id)
            if stored.status is not RunStatus.QUEUED:
                return stored
            # Queued but owned by no task (its task died with an earlier actor).
            targets = self._env.notify_targets(self._job)
            now = self._env.clock.now()
            final = await self._env.storage.cancel_queued(
                stored, now=now, message="run cancelled before start", notify=targets
            )
            if final is not None:
                self._env.observer.run_finished(self._job, final, notified=bool(targets))
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
        await self._env.storage.request_cancel(run, now=self._env.clock.now(), message=message)

    async def _stored_run(self, run_id: str) -> Run:
        run = await self._env.storage.get_run(run_id)
        if run is None or run.job_id != self._job.id:
            raise RunNotFound()
        return run

    async def _delete(self, cancel_active: bool) -> None:
        active = self.active()
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
        if not await self._env.storage.delete_job(self._job.id):
            raise JobNotFound()

    # ------------------------------------------------------------------ runs

    def _spawn(self, run: Run) -> None:
        if self._nursery is None:
            raise Unavailable("job actor is not running")
        handle = RunHandle(run, self._job)
        self._runs[run.id] = handle
        if self._stopping:
            handle.cancel(StopReason.SHUTDOWN)
        task = RunTask(handle, self._env, job_slot=self._job_slot, actor=self.mailbox)
        self._nursery.start_soon(task, name=f"run:{run.id}")

    def _ended(self, notice: RunEnded) -> None:
        self._runs.pop(notice.handle.run.id, None)
        if notice.retry is not None and not self._stopping:
            self._spawn(notice.retry)
