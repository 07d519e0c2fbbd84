"""The Supervisor: owns one JobActor per job, routes requests to them, restarts them.

At start-up it first recovers runs a previous process left unfinished (crash
recovery). Every job then has an entry in the registry; its actor runs while the job
has something to do. An idle actor *hibernates* (see ``JobActor``): the supervisor
then keeps only the job's next fire time in a timer heap and starts a new actor
``PREWARM_S`` before that time, or as soon as a request for the job arrives. So
100,000 mostly idle jobs cost a heap entry each, not a task each.

An actor that crashes is restarted one-for-one after a backoff; one that keeps
crashing is marked faulted and logged, and never takes the service down.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import TypeVar

import trio

from termjobs import jobspec
from termjobs.actors import mailbox
from termjobs.actors.job import RUN_STOP_WAIT_S, ActorGone, CancelRun, DeleteJob, JobActor, JobMessage
from termjobs.actors.mailbox import Reply
from termjobs.actors.runs import RunEnv, plan_retry
from termjobs.clock import deadline_or_inf
from termjobs.errors import JobNotFound, RunNotFound, Unavailable
from termjobs.model import ExitReason, Job, JSONValue, Run, RunStatus, new_job_id
from termjobs.runners.base import StopReason
from termjobs.schedule import initial_next_run
from termjobs.storage import runops, store
from termjobs.storage.store import WriteTx

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: After shutdown has asked the remaining runs to stop, how long it waits for them.
SHUTDOWN_DEADLINE_S = 60.0
#: A hibernating job's actor is started this long before its next fire.
PREWARM = dt.timedelta(seconds=5)
#: After a failed wake-up (storage down), the job's timer is due again this much later.
WAKE_RETRY = dt.timedelta(seconds=1)
LOST_MESSAGE = "worker lost before run could finish: the server stopped while the run was in progress"
INTERRUPTED_CANCEL = "cancelled: the server stopped before the cancellation completed"


@dataclass(eq=False, slots=True)
class _Entry:
    """The registry's view of one job."""

    job_id: str
    actor: JobActor | None = None
    #: set while an actor is being started (or restarted) for this job
    waking: trio.Event | None = None
    #: the fire time the timer heap holds for this job while it hibernates
    wake_at: dt.datetime | None = None


class Supervisor:
    """Owns every JobActor (see the module docstring)."""

    def __init__(
        self,
        env: RunEnv,
        *,
        request_timeout: float = 10.0,
        max_restarts: int = 5,
        restart_window: float = 300.0,
        hibernate: bool = True,
    ) -> None:
        self._env = env
        self._request_timeout = request_timeout
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        self._hibernate = hibernate
        self._entries: dict[str, _Entry] = {}
        self._timers: list[tuple[dt.datetime, int, str]] = []
        self._timer_seq = itertools.count()
        self._timers_changed = trio.Event()
        self._stale_timers = 0
        self.faulted: dict[str, str] = {}
        self._nursery: trio.Nursery | None = None
        self._waker_scope = trio.CancelScope()
        self._closing = False
        self._closing_event = trio.Event()
        self._closed = trio.Event()
        self.recovered = 0

    @property
    def job_count(self) -> int:
        """Jobs known to the supervisor (awake or hibernating)."""
        return len(self._entries)

    def has_job(self, job_id: str) -> bool:
        """Whether a job with this id exists (no storage read)."""
        return job_id in self._entries

    @property
    def awake_count(self) -> int:
        """Jobs whose actor is running now."""
        return sum(1 for entry in self._entries.values() if entry.actor is not None)

    def _actors(self) -> list[JobActor]:
        return [entry.actor for entry in self._entries.values() if entry.actor is not None]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, start the actors that have work, then run until :meth:`shutdown`."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._recover()
            index = await self._env.gateway.read(store.schedule_index, heavy=True)
            runs = await self._env.gateway.read(lambda conn: store.active_runs(conn))
            busy = {run.job_id for run in runs}
            now = self._env.clock.now()
            awake: list[str] = []
            for row in index:
                self._entries[row.job_id] = _Entry(row.job_id)
                due_soon = row.enabled and row.next_run_at is not None and row.next_run_at - PREWARM <= now
                if row.job_id in busy or due_soon or not self._hibernate:
                    awake.append(row.job_id)
                elif row.enabled and row.next_run_at is not None:
                    self._push_timer(self._entries[row.job_id], row.next_run_at)
            await self._activate(awake)
            nursery.start_soon(self._waker)
            logger.info(
                "%d job(s): %d actor(s) awake, %d queued run(s) pending", len(index), len(awake), len(runs)
            )
            task_status.started()
            # Keep the nursery open for actors started later; shutdown() ends this wait.
            await self._closed.wait()

    # ----------------------------------------------------------------- requests

    async def create_job(self, body: dict[str, JSONValue]) -> Job:
        """Validate and store a new job, and start its actor."""
        if self._closing or self._nursery is None:
            raise Unavailable("the server is shutting down")
        valid = jobspec.definition_for_create(body)
        now = self._env.clock.now()
        job = jobspec.build_job(
            valid.definition,
            job_id=new_job_id(),
            created_at=now,
            updated_at=now,
            next_run_at=initial_next_run(
                valid.trigger, enabled=valid.definition.enabled, now=now, last_fire_at=None
            ),
            last_fire_at=None,
        )
        await self._env.gateway.write(lambda tx: store.insert_job(tx, job))
        self._entries[job.id] = _Entry(job.id)
        await self._nursery.start(self._supervise, job, [])
        return job

    async def ask(self, job_id: str, message: JobMessage, reply: Reply[T]) -> T:
        """Send ``message`` to the job's actor (waking it if needed); its answer."""
        # Deleting or cancelling may wait for runs to stop (up to their kill grace).
        slow = isinstance(message, DeleteJob | CancelRun)
        within = self._request_timeout + (RUN_STOP_WAIT_S if slow else 0.0)
        with trio.move_on_after(within):
            while True:
                actor = await self._awake_actor(job_id, message)
                if actor is None:  # answered without an actor (a faulted job's delete)
                    return await reply.wait()
                try:
                    return await mailbox.ask(actor.mailbox, message, reply, within=within)
                except (trio.BrokenResourceError, trio.ClosedResourceError, ActorGone):
                    # The actor stopped (hibernated, crashed, deleted) as we sent: once
                    # the registry no longer points at it, look again.
                    await actor.retired.wait()
                    reply.rearm()
        raise Unavailable(f"the server did not answer within {within:g}s; try again")

    async def _awake_actor(self, job_id: str, message: JobMessage) -> JobActor | None:
        failures = 0
        while True:
            if self._closing:
                raise Unavailable("the server is shutting down")
            entry = self._entries.get(job_id)
            if entry is None:
                raise JobNotFound()
            if entry.actor is not None:
                return entry.actor
            if entry.waking is not None:
                await entry.waking.wait()
                if entry.actor is None and self._entries.get(job_id) is entry:
                    failures += 1  # the activation failed (storage?): back off, then retry
                    await trio.sleep(min(1.0, 0.05 * 2**failures))
            elif job_id in self.faulted:
                await self._without_actor(job_id, message)
                return None
            else:
                # Started in the supervisor's nursery, not in this request: a caller
                # that gives up must not abort the activation half-way.
                entry.waking = trio.Event()
                assert self._nursery is not None
                self._nursery.start_soon(self._activate_claimed, [entry])

    async def _without_actor(self, job_id: str, message: JobMessage) -> None:
        if not isinstance(message, DeleteJob):
            raise Unavailable(
                f"job {job_id} is faulted ({self.faulted[job_id]}); delete it or restart the server"
            )
        # A faulted job has no actor to stop its runs: end them as lost, then delete.
        await self._finish_lost(await self._env.gateway.read(lambda conn: store.active_runs(conn, job_id)))
        await self._env.gateway.write(lambda tx: store.delete_job(tx, job_id))
        del self.faulted[job_id]
        self._entries.pop(job_id, None)
        message.reply.send(None)

    async def cancel_run(self, run_id: str) -> Run:
        """Cancel a run through the actor of its job."""
        run = await self._env.gateway.read(lambda conn: store.get_run(conn, run_id, full=False))
        if run is None:
            raise RunNotFound()
        if run.status.terminal:
            full = await self._env.gateway.read(lambda conn: store.get_run(conn, run_id))
            assert full is not None
            return full
        message = CancelRun(run_id=run_id)
        return await self.ask(run.job_id, message, message.reply)

    # ----------------------------------------------------------------- shutdown

    async def shutdown(self, grace: float) -> None:
        """Stop firing, give running runs ``grace`` seconds, then stop them."""
        self._closing = True
        self._closing_event.set()
        self._waker_scope.cancel()
        actors = self._actors()
        for actor in actors:
            actor.stop_firing()
        running = [h for a in actors for h in a.active_runs if h.started]
        if running:
            logger.info("waiting up to %gs for %d running run(s) to finish", grace, len(running))
        with trio.move_on_after(grace):
            for handle in running:
                await handle.done.wait()
        left = [a for a in actors if a.active_runs]
        if left:
            logger.info(
                "stopping %d run(s) that did not finish within the grace period",
                sum(len(a.active_runs) for a in left),
            )
        for actor in left:
            actor.stop_runs(StopReason.SHUTDOWN)
        self._closed.set()
        if self._nursery is not None:
            # Runs now have their kill grace to stop; past this, actors are torn down
            # and their runs recorded as lost rather than holding the shutdown forever.
            self._nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_DEADLINE_S

    # --------------------------------------------------------------- activation

    async def _activate(self, job_ids: list[str]) -> None:
        """Start actors for these jobs (loading them and their runs in batches)."""
        entries = [
            e for e in (self._entries.get(i) for i in job_ids) if e and e.actor is None and not e.waking
        ]
        for entry in entries:
            entry.waking = trio.Event()
        await self._activate_claimed(entries)

    async def _activate_claimed(self, entries: list[_Entry]) -> None:
        """Start actors for entries whose ``waking`` event the caller has set up.

        Whatever happens, ``waking`` is set at the end; an entry that did not get an
        actor (storage failed, shutdown) keeps its timer so its next fire still comes,
        due again ``WAKE_RETRY`` from now at the earliest (no busy loop while storage
        is down).
        """
        if not entries or self._nursery is None:
            return
        timers = {entry.job_id: entry.wake_at for entry in entries}
        for entry in entries:
            if entry.wake_at is not None:
                entry.wake_at = None
                self._stale_timers += 1
        ids = [entry.job_id for entry in entries]
        try:
            jobs = await self._env.gateway.read(lambda conn: store.get_jobs(conn, ids))
            runs = await self._env.gateway.read(lambda conn: store.active_runs_of(conn, ids))
            by_job: dict[str, list[Run]] = defaultdict(list)
            for run in runs:
                by_job[run.job_id].append(run)
            found = {job.id for job in jobs}
            for entry in entries:
                if entry.job_id not in found:
                    self._entries.pop(entry.job_id, None)  # deleted meanwhile
            for job in jobs:
                if not self._closing:
                    await self._nursery.start(self._supervise, job, by_job[job.id])
        except Exception:
            logger.exception(
                "could not start %d job actor(s); retrying in %gs", len(entries), WAKE_RETRY.total_seconds()
            )
        finally:
            retry_at = self._env.clock.now() + WAKE_RETRY + PREWARM
            for entry in entries:
                at = timers[entry.job_id]
                kept = self._entries.get(entry.job_id) is entry and entry.actor is None
                if kept and at is not None and entry.wake_at is None:
                    self._push_timer(entry, max(at, retry_at))
                waking, entry.waking = entry.waking, None
                if waking is not None:
                    waking.set()

    def _push_timer(self, entry: _Entry, at: dt.datetime) -> None:
        if self._stale_timers > 1000 and self._stale_timers > len(self._timers) // 2:
            self._rebuild_timers()
        entry.wake_at = at
        was_first = not self._timers or at < self._timers[0][0]
        heapq.heappush(self._timers, (at, next(self._timer_seq), entry.job_id))
        if was_first:
            self._timers_changed.set()

    def _rebuild_timers(self) -> None:
        """Drop heap entries that no longer count (jobs woken or deleted since)."""
        self._timers = [t for t in self._timers if (e := self._entries.get(t[2])) and e.wake_at == t[0]]
        heapq.heapify(self._timers)
        self._stale_timers = 0
        self._timers_changed.set()

    def _pop_due(self) -> list[str]:
        """Jobs whose hibernation ends now (stale heap entries are skipped)."""
        horizon = self._env.clock.now() + PREWARM
        due: list[str] = []
        while self._timers and self._timers[0][0] <= horizon:
            at, _, job_id = heapq.heappop(self._timers)
            entry = self._entries.get(job_id)
            if entry is not None and entry.actor is None and entry.waking is None and entry.wake_at == at:
                due.append(job_id)
        return due

    async def _waker(self) -> None:
        """Start hibernating actors ``PREWARM`` before their next fire."""
        with self._waker_scope:
            while True:
                due = self._pop_due()
                if due:
                    await self._activate(due)  # failures keep their timer, retried later
                wake_at = self._timers[0][0] - PREWARM if self._timers else None
                with trio.move_on_at(deadline_or_inf(self._env.clock, wake_at)):
                    await self._timers_changed.wait()
                self._timers_changed = trio.Event()

    # -------------------------------------------------------------- supervision

    async def _supervise(
        self, job: Job, runs: list[Run], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        entry = self._entries.setdefault(job.id, _Entry(job.id))
        crashes: deque[float] = deque()
        status: trio.TaskStatus[None] = task_status
        while True:
            actor = JobActor(
                job, self._env, runs=runs, hibernate=self._hibernate, closing=lambda: self._closing
            )
            entry.actor = actor
            try:
                await actor.run(task_status=status)
                self._retire(entry, actor)
                return
            except Exception as exc:
                logger.exception("job actor %s (%s) crashed", job.id, job.name)
                if self._closing or not self._may_restart(crashes, job, exc):
                    return
            finally:
                if entry.actor is actor:
                    entry.actor = None
                actor.retired.set()
            status = trio.TASK_STATUS_IGNORED
            entry.waking = trio.Event()  # requests wait for the restart instead of failing
            try:
                reloaded = await self._reload_after_crash(job.id, len(crashes))
            finally:
                waking, entry.waking = entry.waking, None
                waking.set()
            if reloaded is None:
                return
            job, runs = reloaded

    def _retire(self, entry: _Entry, actor: JobActor) -> None:
        """An actor ended cleanly: deleted, hibernating, or the service is stopping."""
        entry.actor = None
        if actor.deleted:
            self._entries.pop(entry.job_id, None)
        elif actor.hibernated and actor.job.enabled and actor.job.next_run_at is not None:
            self._push_timer(entry, actor.job.next_run_at)

    def _may_restart(self, crashes: deque[float], job: Job, exc: Exception) -> bool:
        now = trio.current_time()
        crashes.append(now)
        while crashes and crashes[0] < now - self._restart_window:
            crashes.popleft()
        if len(crashes) <= self._max_restarts:
            return True
        self.faulted[job.id] = f"its actor crashed {len(crashes)} times; last error: {exc}"
        logger.error("job %s is faulted and will not be restarted: %s", job.id, self.faulted[job.id])
        return False

    async def _reload_after_crash(self, job_id: str, crashes: int) -> tuple[Job, list[Run]] | None:
        """Back off, then reload the job and its runs (``None``: do not restart).

        Runs the crashed actor left running are ended as lost (their processes were
        killed when the actor's run tasks were torn down); storage errors are retried.
        """
        delay = min(30.0, 0.5 * 2 ** (crashes - 1))
        while True:
            with trio.move_on_after(delay):
                await self._closing_event.wait()  # shutdown does not wait out a backoff
            if self._closing:
                return None
            try:
                return await self._reload(job_id)
            except Exception:
                logger.exception("job %s: reloading after a crash failed; retrying", job_id)
                delay = min(60.0, delay * 2)

    async def _reload(self, job_id: str) -> tuple[Job, list[Run]] | None:
        job = await self._env.gateway.read(lambda conn: store.get_job(conn, job_id))
        if job is None:
            self._entries.pop(job_id, None)
            return None
        active = await self._env.gateway.read(lambda conn: store.active_runs(conn, job_id))
        await self._finish_lost([run for run in active if run.status is not RunStatus.QUEUED])
        runs = await self._env.gateway.read(lambda conn: store.active_runs(conn, job_id))
        return job, [run for run in runs if run.status is RunStatus.QUEUED]

    # ----------------------------------------------------------------- recovery

    async def _recover(self) -> None:
        """Finish runs that a previous process left claimed, running or cancelling."""
        interrupted = await self._env.gateway.read(
            lambda conn: [r for r in store.active_runs(conn) if r.status is not RunStatus.QUEUED]
        )
        self.recovered = await self._finish_lost(interrupted)
        if self.recovered:
            logger.warning(
                "recovered %d run(s) interrupted by the previous shutdown or crash", self.recovered
            )

    async def _finish_lost(self, interrupted: list[Run]) -> int:
        """End runs whose owner is gone: ``failed``/``worker_lost`` (retried per policy),
        or ``cancelled`` if a cancel was pending; kill what they left running."""
        if not interrupted:
            return 0
        lost_ids = [run.id for run in interrupted]
        for reap in self._env.reapers:
            await trio.to_thread.run_sync(reap, lost_ids)
        now = self._env.clock.now()
        job_ids = sorted({run.job_id for run in interrupted})
        jobs = {
            job.id: job for job in await self._env.gateway.read(lambda conn: store.get_jobs(conn, job_ids))
        }

        def recover(tx: WriteTx) -> int:
            for run in interrupted:
                outcome = _recovered_outcome(run)
                job = jobs.get(run.job_id)
                retry = plan_retry(job, run, outcome.status, now, self._env.rng) if job else None
                runops.finish_run(tx, run, outcome, now=now, retry=retry)
            return len(interrupted)

        return await self._env.gateway.write(recover)


def _recovered_outcome(run: Run) -> runops.Outcome:
    if run.status is RunStatus.CANCEL_REQUESTED:
        return runops.Outcome.keeping(run, RunStatus.CANCELLED, ExitReason.CANCELLED, INTERRUPTED_CANCEL)
    return runops.Outcome.keeping(run, RunStatus.FAILED, ExitReason.WORKER_LOST, LOST_MESSAGE)
