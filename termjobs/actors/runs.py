"""One run's lifecycle, from ``queued`` to its final status.

A run task (owned by its job's actor, in the actor's run nursery):

1. waits until ``scheduled_for``; a retry then asks its actor whether it may start
   (:class:`~termjobs.actors.protocol.RetryDue`); then it waits for a slot of its job
   (the job's concurrency limit) and a global run slot (``--jobs-workers``), FIFO;
2. records ``claimed`` and ``running``, then executes the runner with a timeout, and
   gives the global slot back once the runner has returned (the job's slot is kept
   until the final state is recorded, so a job's runs never overlap in storage);
3. records the final status decided by ``termjobs.rundomain`` (plus any retry) in one
   transaction, and tells its actor it has ended (:class:`RunEnded`).

The final write is shielded from cancellation, so a run can never be left ``running``
by a cancelled task: if the run task itself is torn down (its actor crashed), the run
is recorded as ``failed`` / ``worker_lost``.

Storage outages never end or drop a run: while storage is unavailable, a run due to
start waits (still ``queued``) and a final state waits to be written, each retried
with backoff until storage answers again (at shutdown, for ``finalize_timeout`` at
most: what is left is ended by the next start's crash recovery).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from termjobs import rundomain
from termjobs.actors.protocol import ActorGone, JobMessage, RetryDue, RunEnded, RunHandle
from termjobs.clock import Clock, sleep_until
from termjobs.errors import Unavailable
from termjobs.jobdef import Job
from termjobs.model import EventType, ExitReason, JSONValue, Run, RunnerType, RunStatus, RunTrigger
from termjobs.notify import NotifyTarget, targets_for
from termjobs.rundomain import Ending, FireDecision
from termjobs.runners.base import Emit, RunContext, Runner, RunResult, StopReason
from termjobs.storage import NotOwner, Storage, StorageClosed, StorageUnavailable

logger = logging.getLogger(__name__)


class RunObserver(Protocol):
    """What the actor layer reports about runs (the server's metrics listen)."""

    def run_started(self, job: Job, run: Run) -> None:
        """A run has started executing."""

    def run_finished(self, job: Job, run: Run, *, notified: bool) -> None:
        """A run's final state is recorded; ``notified``: webhooks were queued with it
        (in the outbox, for the notifier)."""

    def fires_recorded(self, job: Job, decisions: Sequence[FireDecision], now: dt.datetime) -> None:
        """A scheduler wake-up was recorded."""


class NullObserver:
    """Reports to nobody."""

    def run_started(self, job: Job, run: Run) -> None:
        pass

    def run_finished(self, job: Job, run: Run, *, notified: bool) -> None:
        pass

    def fires_recorded(self, job: Job, decisions: Sequence[FireDecision], now: dt.datetime) -> None:
        pass


class Observers:
    """Reports to each of several observers, in order."""

    def __init__(self, *observers: RunObserver) -> None:
        self._observers = observers

    def run_started(self, job: Job, run: Run) -> None:
        for observer in self._observers:
            observer.run_started(job, run)

    def run_finished(self, job: Job, run: Run, *, notified: bool) -> None:
        for observer in self._observers:
            observer.run_finished(job, run, notified=notified)

    def fires_recorded(self, job: Job, decisions: Sequence[FireDecision], now: dt.datetime) -> None:
        for observer in self._observers:
            observer.fires_recorded(job, decisions, now)


@dataclass(slots=True)
class RunCounts:
    """Run tasks of a server now: waiting to start, and executing (kept as they change,
    so a metrics scrape does not walk every awake actor's runs)."""

    waiting: int = 0
    executing: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnv:
    """What every run task needs from the service."""

    storage: Storage
    clock: Clock
    runners: Mapping[RunnerType, Runner]
    slots: trio.CapacityLimiter
    worker_id: str
    rng: random.Random = field(default_factory=random.Random)
    #: one attempt to write a final state may take this long; once the service is
    #: stopping, so may all attempts together
    finalize_timeout: float = 30.0
    #: set when the service starts shutting down
    stopping: trio.Event = field(default_factory=trio.Event)
    #: after a stop request, how long past the runner's stop grace it may take to return
    stop_backstop: float = 15.0
    #: clean up processes left behind by runs of a server that died (crash recovery)
    reapers: tuple[Callable[[Sequence[str]], int], ...] = ()
    observer: RunObserver = field(default_factory=NullObserver)
    #: webhooks of jobs that have none of their own (``--notify-url``)
    default_notify: tuple[NotifyTarget, ...] = ()
    #: in a cluster: told when a write found that this server no longer owns a job
    lost_job: Callable[[str], None] = lambda job_id: None
    counts: RunCounts = field(default_factory=RunCounts)

    def notify_targets(self, job: Job) -> tuple[NotifyTarget, ...]:
        """Who to tell when a run of ``job`` ends."""
        return targets_for(job.spec.parsed.notify, self.default_notify)


class RunTask:
    """Drives one :class:`RunHandle` to a final status."""

    def __init__(
        self,
        handle: RunHandle,
        env: RunEnv,
        *,
        job_slot: trio.CapacityLimiter,
        actor: trio.MemorySendChannel[JobMessage],
    ) -> None:
        self.handle = handle
        self.env = env
        self._job_slot = job_slot
        self._actor = actor
        self._retry: Run | None = None
        self._notified = False
        self._held: list[trio.CapacityLimiter] = []

    async def __call__(self) -> None:
        run = self.handle.run
        held = self._held  # a worker slot is given back early by _execute (see _release)
        counts = self.env.counts
        counts.waiting += 1
        try:
            with self.handle.wait_scope:
                await sleep_until(self.env.clock, run.scheduled_for)
                if run.trigger is RunTrigger.RETRY and not await self._admitted():
                    return
                for limiter in (self._job_slot, self.env.slots):
                    await limiter.acquire_on_behalf_of(run.id)
                    held.append(limiter)
            if self.handle.stop.requested:
                await self._never_started()
                return
            self.handle.started = True
            counts.waiting -= 1
            counts.executing += 1
            await self._execute()
        except Exception:
            # A run task must never take its actor down; the run is recorded as lost.
            logger.exception("run %s failed inside termjobs", run.id, extra=self._context)
        finally:
            for limiter in held:
                limiter.release_on_behalf_of(run.id)
            try:
                if (
                    self.handle.started
                    and self.handle.final is None
                    and self.handle.run.status is not RunStatus.QUEUED
                ):
                    await self._record_lost()
            finally:
                if self.handle.started:
                    counts.executing -= 1
                else:
                    counts.waiting -= 1
                final = self.handle.final
                if final is not None and final.status.terminal:
                    self.env.observer.run_finished(self.handle.job, final, notified=self._notified)
                self.handle.done.set()
                await self._tell_actor()

    def _targets(self) -> tuple[NotifyTarget, ...]:
        """The webhooks told when this run ends (the latest definition's), given to
        each write of a final state; remembered, so that the notifier looks at the
        outbox only after a run that queued some."""
        targets = self.env.notify_targets(self.handle.job)
        self._notified = self._notified or bool(targets)
        return targets

    @property
    def _context(self) -> dict[str, str]:
        """Log fields of this run (``--log-format json``)."""
        return {"job_id": self.handle.run.job_id, "run_id": self.handle.run.id}

    async def _tell_actor(self) -> None:
        # Shielded: a task torn down mid-run still tells its actor. Not time-limited:
        # the notice may carry a retry that only the actor can start, and an actor that
        # stops listening closes its mailbox, which ends this wait.
        with (
            trio.CancelScope(shield=True),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await self._actor.send(RunEnded(handle=self.handle, retry=self._retry))

    async def _admitted(self) -> bool:
        """Ask the actor whether this retry may start; record it skipped if not."""
        request = RetryDue(handle=self.handle)
        try:
            await self._actor.send(request)
            refusal = await request.reply.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, Unavailable, ActorGone):
            return False  # the actor stopped (shutdown): the retry stays queued
        if refusal is None:
            return True
        now, run = self.env.clock.now(), self.handle.run
        self.handle.final = await self._write_final(
            lambda: self.env.storage.skip_queued(
                run, now=now, message=refusal.message, data=refusal.data, notify=self._targets()
            )
        )
        return False

    async def _write_final(
        self,
        write: Callable[[], Awaitable[Run | None]],
        *,
        fallback: Callable[[], Awaitable[Run | None]] | None = None,
    ) -> Run | None:
        """Write a final state even while being cancelled: shielded, and retried with
        backoff for as long as storage is unavailable (an outage must not leave the run
        unfinished); each attempt may take ``finalize_timeout``. A write that storage
        refuses for good is replaced by ``fallback`` (the same final state without its
        output). Once the service is stopping, retries end ``finalize_timeout`` later;
        a run whose final state was not written is ended by the next start's recovery."""
        delay = 0.1
        give_up_at = math.inf
        with trio.CancelScope(shield=True):
            while True:
                try:
                    with trio.fail_after(self.env.finalize_timeout):
                        return await write()
                except StorageClosed:
                    break
                except NotOwner:
                    # Another server owns the job now: it ends this run as lost.
                    self.env.lost_job(self.handle.run.job_id)
                    return None
                except trio.TooSlowError:
                    logger.error(
                        "run %s: storage did not confirm its final state in time", self.handle.run.id
                    )
                except Exception as exc:
                    logger.error(
                        "run %s: could not record its final state: %s",
                        self.handle.run.id,
                        exc,
                        extra=self._context,
                    )
                    if not isinstance(exc, StorageUnavailable) and fallback is not None:
                        write, fallback = fallback, None
                        continue
                if self.env.stopping.is_set():
                    give_up_at = min(give_up_at, trio.current_time() + self.env.finalize_timeout)
                if trio.current_time() + delay > give_up_at:
                    break
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
        logger.error(
            "run %s: final state not recorded; it will be recovered at the next start",
            self.handle.run.id,
            extra=self._context,
        )
        return None

    async def _never_started(self) -> None:
        reason = self.handle.stop.reason
        if reason in (None, StopReason.SHUTDOWN, StopReason.LEASE_LOST):
            return  # stays queued; it runs after the next start (or on the job's new owner)
        message = rundomain.never_started_message(reason)
        now, run = self.env.clock.now(), self.handle.run
        self.handle.final = await self._write_final(
            lambda: self.env.storage.cancel_queued(run, now=now, message=message, notify=self._targets())
        )

    async def _execute(self) -> None:
        job = self.handle.job
        queued = self.handle.run
        running = await self._start(queued)
        if running is None:
            return
        self.handle.run = running
        self.env.observer.run_started(job, running)
        # A stop that arrived while the start was being written wins: do not spawn.
        result = RunResult() if self.handle.stop.requested else await self._invoke(job, running)
        self._release(self.env.slots)
        await self._finish(job, running, result)

    def _release(self, limiter: trio.CapacityLimiter) -> None:
        if limiter in self._held:
            self._held.remove(limiter)
            limiter.release_on_behalf_of(self.handle.run.id)

    async def _start(self, queued: Run) -> Run | None:
        """Record ``claimed`` and ``running``; the running run, or ``None`` if it will
        not start (cancelled meanwhile). While storage is unavailable the run stays
        queued and the start is retried with backoff; a stop request meanwhile ends
        the wait as if the run had never started."""
        delay = 0.1
        while True:
            try:
                running = await self.env.storage.start_run(
                    queued, worker_id=self.env.worker_id, now=self.env.clock.now()
                )
            except StorageClosed:
                raise
            except NotOwner:
                # Another server owns the job now (the fence refused the start): the
                # run stays queued for it.
                self.env.lost_job(queued.job_id)
                return None
            except StorageUnavailable:
                if self.handle.stop.requested:
                    await self._never_started()
                    return None
                logger.warning(
                    "run %s: storage is unavailable; its start is retried in %gs", queued.id, delay
                )
                with trio.move_on_after(delay):
                    await self.handle.stop.wait()
                delay = min(delay * 2, 5.0)
                continue
            if running is None:  # cancelled between our check and the write
                self.handle.final = await self.env.storage.get_run(queued.id)
            return running

    async def _invoke(self, job: Job, run: Run) -> RunResult:
        runner = self.env.runners.get(job.spec.runner_type)
        if runner is None:
            return RunResult(error=f"unknown runner type: {job.spec.runner_type}")
        # The timeout is the stop signal's deadline, and the backstop (a runner that
        # does not return once asked to stop is abandoned) this scope's: no watcher
        # tasks, which every run would start and cancel again.
        stop = self.handle.stop
        stop.expire_at(trio.current_time() + rundomain.timeout_of(job.spec, run))
        allowance = runner.stop_grace(job) + self.env.stop_backstop
        ctx = RunContext(job=job, run=run, stop=stop, emit=self._emitter(run))
        with trio.CancelScope(deadline=stop.deadline + allowance) as runner_scope:

            def backstop() -> None:
                runner_scope.deadline = min(runner_scope.deadline, trio.current_time() + allowance)

            stop.on_request(backstop)
            try:
                result = await runner.run(ctx)
            except Exception as exc:
                logger.exception("runner failed for run %s", run.id, extra=self._context)
                result = RunResult(error=f"runner failed: {exc}", exit_reason=ExitReason.EXCEPTION)
        if runner_scope.cancelled_caught:
            result = RunResult(error="the runner did not stop in time and was abandoned")
        return result

    def _emitter(self, run: Run) -> Emit:
        async def emit(event_type: EventType, message: str | None, data: JSONValue) -> None:
            # Queued, not awaited: a run's live events keep their order (one writer)
            # and are committed before its final state, which is written after them.
            await self.env.storage.submit_event(run, event_type, message, data, now=self.env.clock.now())

        return emit

    async def _finish(self, job: Job, run: Run, result: RunResult) -> None:
        outcome = rundomain.decide(job.spec, run, result, self.handle.stop.reason)
        now = self.env.clock.now()
        # The latest definition decides the retry (it may have changed while running).
        retry = rundomain.plan_retry(self.handle.job.spec, run, outcome.status, now, self.env.rng)
        final = await self._write_final(
            lambda: self._finish_one(Ending(run, outcome, retry, notify=self._targets()), now),
            fallback=lambda: self._finish_one(
                Ending(run, outcome.without_payloads(), retry, notify=self._targets()), now
            ),
        )
        if final is None:
            # Already final: an attempt whose answer was lost (a timeout, a connection
            # dropped at commit) may have written it, retry included. Look (shielded
            # and bounded, like the write: this may run while the service stops).
            with trio.CancelScope(shield=True), trio.move_on_after(self.env.finalize_timeout):
                final, self._retry = await self._stored_ending(run)
        elif retry is not None and final.status is not RunStatus.CANCELLED:
            self._retry = retry.run
        self.handle.final = final or run

    async def _stored_ending(self, run: Run) -> tuple[Run | None, Run | None]:
        """The run as stored and the retry stored for it, if storage answers."""
        try:
            stored = await self.env.storage.get_run(run.id, full=False)
            if stored is None or not stored.status.terminal:
                return None, None
            retries = [r for r in await self.env.storage.active_runs([run.job_id]) if r.retry_of == run.id]
        except StorageUnavailable:
            return None, None
        return stored, (retries[0] if retries else None)

    async def _finish_one(self, ending: Ending, now: dt.datetime) -> Run | None:
        (final,) = await self.env.storage.finish_runs([ending], now=now)
        return final

    async def _record_lost(self) -> None:
        """The run task was torn down mid-run (its actor crashed): record that."""
        ending = Ending(self.handle.run, rundomain.actor_lost(), notify=self._targets())
        now = self.env.clock.now()
        self.handle.final = await self._write_final(lambda: self._finish_one(ending, now))
