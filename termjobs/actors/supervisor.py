"""The Supervisor: starts one JobActor per job, routes requests to them, restarts them.

At start-up it first recovers runs a previous process left unfinished (crash
recovery), then starts an actor for every job with the job's queued runs. An actor
that crashes is restarted one-for-one after a backoff; one that keeps crashing is
marked faulted and logged, and never takes the service down.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from typing import TypeVar

import trio

from termjobs import jobspec
from termjobs.actors import mailbox
from termjobs.actors.job import RUN_STOP_WAIT_S, CancelRun, DeleteJob, JobActor, JobMessage
from termjobs.actors.mailbox import Reply
from termjobs.actors.runs import RunEnv, plan_retry
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
LOST_MESSAGE = "worker lost before run could finish: the server stopped while the run was in progress"
INTERRUPTED_CANCEL = "cancelled: the server stopped before the cancellation completed"


class Supervisor:
    """Owns every JobActor (see the module docstring)."""

    def __init__(
        self,
        env: RunEnv,
        *,
        request_timeout: float = 10.0,
        max_restarts: int = 5,
        restart_window: float = 300.0,
    ) -> None:
        self._env = env
        self._request_timeout = request_timeout
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        self._actors: dict[str, JobActor] = {}
        self.faulted: dict[str, str] = {}
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._closed = trio.Event()
        self._restarting: set[str] = set()
        self.recovered = 0

    @property
    def job_count(self) -> int:
        return len(self._actors)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, start every job's actor, then run until :meth:`shutdown` is done."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._recover()
            jobs = await self._env.gateway.read(store.all_jobs)
            runs = await self._env.gateway.read(lambda conn: store.active_runs(conn))
            by_job: dict[str, list[Run]] = defaultdict(list)
            for run in runs:
                by_job[run.job_id].append(run)
            for job in jobs:
                await nursery.start(self._supervise, job, by_job.get(job.id, []))
            logger.info("started %d job actor(s); %d queued run(s) pending", len(jobs), len(runs))
            task_status.started()
            # Keep the nursery open for actors created later; shutdown() ends this wait.
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
        await self._nursery.start(self._supervise, job, [])
        return job

    async def ask(self, job_id: str, message: JobMessage, reply: Reply[T]) -> T:
        """Send ``message`` to the job's actor and return its answer."""
        actor = self._actors.get(job_id)
        if actor is None:
            return await self._without_actor(job_id, message, reply)
        # Deleting or cancelling may wait for runs to stop (up to their kill grace).
        slow = isinstance(message, DeleteJob | CancelRun)
        within = self._request_timeout + (RUN_STOP_WAIT_S if slow else 0.0)
        try:
            return await mailbox.ask(actor.mailbox, message, reply, within=within)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            if self._closing:
                raise Unavailable("the server is shutting down") from None
            if job_id in self._restarting:
                raise Unavailable("the job's actor is restarting; retry shortly") from None
            raise JobNotFound() from None

    async def _without_actor(self, job_id: str, message: JobMessage, reply: Reply[T]) -> T:
        if job_id in self._restarting:
            raise Unavailable("the job's actor is restarting; retry shortly")
        if job_id not in self.faulted:
            raise JobNotFound()
        if not isinstance(message, DeleteJob):
            raise Unavailable(
                f"job {job_id} is faulted ({self.faulted[job_id]}); delete it or restart the server"
            )
        # A faulted job has no actor to stop its runs: end them as lost, then delete.
        await self._finish_lost(await self._env.gateway.read(lambda conn: store.active_runs(conn, job_id)))
        await self._env.gateway.write(lambda tx: store.delete_job(tx, job_id))
        del self.faulted[job_id]
        message.reply.send(None)
        return await reply.wait()

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
        actors = list(self._actors.values())
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

    # -------------------------------------------------------------- supervision

    async def _supervise(
        self, job: Job, runs: list[Run], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        crashes: deque[float] = deque()
        status: trio.TaskStatus[None] = task_status
        while True:
            actor = JobActor(job, self._env, runs=runs)
            self._actors[job.id] = actor
            try:
                await actor.run(task_status=status)
                return
            except Exception as exc:
                logger.exception("job actor %s (%s) crashed", job.id, job.name)
                if self._closing or not self._may_restart(crashes, job, exc):
                    return
            finally:
                if self._actors.get(job.id) is actor:
                    del self._actors[job.id]
            status = trio.TASK_STATUS_IGNORED
            self._restarting.add(job.id)
            try:
                reloaded = await self._reload_after_crash(job.id, len(crashes))
            finally:
                self._restarting.discard(job.id)
            if reloaded is None:
                return
            job, runs = reloaded

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
            await trio.sleep(delay)
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
        jobs = {
            job.id: job
            for job in await self._env.gateway.read(store.all_jobs)
            if any(run.job_id == job.id for run in interrupted)
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
