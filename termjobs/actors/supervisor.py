"""The Supervisor: owns one JobActor per job and routes requests to them.

Its public methods are the API of the actor layer (``create_job``, ``trigger``,
``update``, ``pause``, ``resume``, ``delete``, ``cancel_run``, ``shutdown``): callers
never build a message or hold a reply. At start-up it first recovers runs a previous
process left unfinished (``termjobs.actors.recovery``). Every job then has an entry in
the registry (``termjobs.actors.registry``); its actor runs while the job has
something to do. An idle actor *hibernates* (see ``JobActor``): the registry then
keeps only the job's next fire time and the launcher (``termjobs.actors.launcher``)
starts a new actor ``PREWARM`` before that time, or as soon as a request for the job
arrives. So 100,000 mostly idle jobs cost a timer each, not a task each.

An actor that crashes is restarted one-for-one after a backoff; one that keeps
crashing is marked faulted and logged, and never takes the service down
(``termjobs.actors.restarts``). In a cluster, the supervisor also takes jobs on and
gives them up as ownership moves (:meth:`Supervisor.adopt`, :meth:`Supervisor.release`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, TypeVar

import trio

from termjobs import wire
from termjobs.actors import mailbox
from termjobs.actors.job import RUN_STOP_WAIT_S, JobActor
from termjobs.actors.launcher import Launcher
from termjobs.actors.mailbox import Reply
from termjobs.actors.protocol import (
    ActorGone,
    CancelRun,
    DeleteJob,
    Idempotency,
    Release,
    Request,
    TriggerNow,
    UpdateJob,
)
from termjobs.actors.recovery import finish_lost, recover_interrupted
from termjobs.actors.registry import Registry
from termjobs.actors.runs import RunEnv
from termjobs.errors import AlreadyAnswered, Conflict, JobNotFound, RunNotFound, TermjobsError, Unavailable
from termjobs.jobdef import Job, JobDefinition
from termjobs.jobspec import JobPatch
from termjobs.model import JSONObject, Run, RunStatus, new_job_id
from termjobs.runners.base import StopReason, check_runnable
from termjobs.schedule import initial_next_run
from termjobs.storage import DuplicateReceipt, NameTaken, NotOwner, Receipt

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: After shutdown has asked the remaining runs to stop, how long it waits for them.
SHUTDOWN_DEADLINE_S = 60.0
#: A hibernating job's actor is started this long before its next fire.
PREWARM = dt.timedelta(seconds=5)
#: Jobs taken on in one go when a cluster gives this server many (takeover).
ADOPT_BATCH = 500


class Membership(Protocol):
    """A cluster as the supervisor sees it (``termjobs.cluster.node``)."""

    def owner_for(self, job_id: str) -> str:
        """The live server a new job goes to."""
        ...

    async def owns(self, job_id: str) -> bool:
        """Whether this server owns the job, with a fresh lease."""
        ...

    def job_lost(self, job_id: str) -> None:
        """A write found that another server owns the job now."""
        ...


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
        self.registry = Registry(PREWARM)
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._closing_event = trio.Event()
        self._closed = trio.Event()
        self.recovered = 0
        self._started = False
        self.started_at = env.clock.now()

        #: in a cluster (set before :meth:`run`): which jobs this server owns
        self.membership: Membership | None = None
        self._env = replace(env, lost_job=self.job_lost)
        self._launcher = Launcher(
            self._env,
            self.registry,
            closing=self._closing_event,
            hibernate=hibernate,
            max_restarts=max_restarts,
            restart_window=restart_window,
        )
        #: jobs whose actor kept crashing, with why (they are not restarted)
        self.faulted = self._launcher.faulted

    @property
    def started(self) -> bool:
        """Whether start-up (recovery, first actors) is over and shutdown has not begun."""
        return self._started and not self._closing

    def clock_now(self) -> dt.datetime:
        """The service clock's time."""
        return self._env.clock.now()

    @property
    def worker_id(self) -> str:
        """This server's id (its runs' ``worker_id``; its id in a cluster)."""
        return self._env.worker_id

    @property
    def job_count(self) -> int:
        """Jobs known to the supervisor (awake or hibernating)."""
        return len(self.registry)

    def run_counts(self) -> tuple[int, int]:
        """Runs of this server's actors: (waiting, executing)."""
        counts = self._env.counts
        return counts.waiting, counts.executing

    @property
    def awake_count(self) -> int:
        """Job actors running now."""
        return self._launcher.awake

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Recover, start the actors that have work, then run until :meth:`shutdown`."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._launcher.attach(nursery)
            if self.membership is None:
                # In a cluster, jobs (and their lost runs) come with ownership: adopt().
                self.recovered = await recover_interrupted(self._env)
                index = await self._env.storage.schedule_index()
                runs = await self._env.storage.active_runs()
                awake = await self._launcher.register(index, busy={run.job_id for run in runs})
                logger.info(
                    "%d job(s): %d actor(s) awake, %d queued run(s) pending",
                    len(index),
                    len(awake),
                    len(runs),
                )
            self.started_at = self._env.clock.now()
            self._started = True
            task_status.started()
            # Keep the nursery open for actors started later; shutdown() ends this wait.
            await self._closed.wait()

    # ------------------------------------------------------------- cluster

    def owned(self) -> set[str]:
        """The jobs this server runs (awake or hibernating)."""
        return self.registry.job_ids()

    def runs_job(self, job_id: str) -> bool:
        """Whether this server runs the job now (its writes still prove ownership)."""
        return self.registry.runs_job(job_id)

    async def adopt(self, job_ids: Sequence[str]) -> None:
        """Start running these jobs (a cluster gave them to this server). Runs a
        previous owner left ``claimed``, ``running`` or ``cancel_requested`` are ended as
        lost first (retried per policy); queued ones run here; fires missed meanwhile
        follow the misfire policy when the job's actor starts."""
        new = [job_id for job_id in dict.fromkeys(job_ids) if job_id not in self.registry]
        for start in range(0, len(new), ADOPT_BATCH):
            chunk = new[start : start + ADOPT_BATCH]
            if self._closing or self._nursery is None:
                return
            self.registry.leaving.difference_update(chunk)
            active = await self._env.storage.active_runs(chunk)
            lost = [run for run in active if run.status is not RunStatus.QUEUED]
            if lost:
                await finish_lost(self._env, lost)
                logger.warning("ended %d run(s) a previous owner of these jobs left unfinished", len(lost))
            index = await self._env.storage.schedule_index(chunk)
            fresh = [row for row in index if row.job_id not in self.registry]
            await self._launcher.register(fresh, busy={run.job_id for run in active})

    async def release(self, job_ids: Sequence[str]) -> list[str]:
        """Stop running those of these jobs that are idle (a cluster hands them to
        another server); the ones let go. Until :meth:`handed_over`, requests for them
        are told to ask the new owner."""
        released: list[str] = []
        for job_id in job_ids:
            entry = self.registry.get(job_id)
            if entry is None or entry.waking is not None or self._closing:
                continue
            if entry.actor is not None:
                message = Release()
                try:
                    idle = await mailbox.ask(entry.actor.mailbox, message, message.reply, within=5.0)
                except (trio.BrokenResourceError, trio.ClosedResourceError, ActorGone, TermjobsError):
                    continue
                if not idle:
                    continue
                await entry.retired.wait()
            self.registry.leaving.add(job_id)
            self.registry.drop(job_id)
            released.append(job_id)
        return released

    def handed_over(self, job_ids: Sequence[str]) -> None:
        """The released jobs have their new owner recorded."""
        self.registry.leaving.difference_update(job_ids)

    def job_lost(self, job_id: str) -> None:
        """A write found that this server no longer owns the job: stop it now."""
        if self.registry.lose(job_id) and self.membership is not None:
            self.membership.job_lost(job_id)

    async def abandon(self, reason: str) -> None:
        """Stop every job at once (this server's cluster lease lapsed: others may be
        running its jobs already): running runs are stopped and end ``failed`` /
        ``worker_lost``; queued runs stay for the new owners."""
        entries = self.registry.clear()
        awake = [entry for entry in entries if entry.actor is not None]
        for entry in awake:
            assert entry.actor is not None
            entry.actor.lose()
        with trio.move_on_after(RUN_STOP_WAIT_S):
            for entry in awake:
                await entry.retired.wait()
        logger.warning("stopped %d job(s): %s", len(entries), reason)

    # ------------------------------------------------------------ the API

    async def create_job(self, spec: JobDefinition, *, idempotency: Idempotency | None = None) -> Job:
        """Store a new job and start its actor; the stored job. With ``idempotency`` the
        answer is recorded with the job (:class:`AlreadyAnswered` if the key was used).

        The work runs in the supervisor's nursery, not in the caller's task: once
        stored, the job is registered and its actor started even if the client gives
        up, or storage confirms only after this call has timed out (a stored job
        nobody routes to would be unusable)."""
        if self._closing or self._nursery is None:
            raise Unavailable("the server is shutting down")
        check_runnable(self._env.runners, spec)
        now = self._env.clock.now()
        job = Job(
            id=new_job_id(),
            spec=spec,
            next_run_at=initial_next_run(
                spec.parsed.trigger, enabled=spec.enabled, now=now, last_fire_at=None
            ),
            last_fire_at=None,
            created_at=now,
            updated_at=now,
        )
        receipt = idempotency.receipt(201, wire.dumps(wire.job_json(job)), now) if idempotency else None
        done: Reply[Job] = Reply()
        self._nursery.start_soon(self._create, job, receipt, done)
        with trio.move_on_after(self._request_timeout):
            return await done.wait()
        raise Unavailable(
            f"storage did not confirm the new job within {self._request_timeout:g}s; it may still be "
            "created: list the jobs before sending it again"
        )

    async def _create(self, job: Job, receipt: Receipt | None, done: Reply[Job]) -> None:
        owner = self.membership.owner_for(job.id) if self.membership is not None else None
        try:
            await self._env.storage.create_job(job, receipt=receipt, owner=owner)
        except NameTaken as exc:
            done.fail(Conflict(str(exc)))
            return
        except DuplicateReceipt:
            done.fail(AlreadyAnswered())
            return
        except Exception as exc:
            done.fail(exc)
            return
        if owner is not None and owner != self._env.worker_id:
            done.send(job)  # another server runs it: told by NOTIFY, it adopts it
            return
        try:
            await self._launcher.start(job)
        except Exception as exc:
            logger.exception("job %s: stored, but its actor did not start", job.id)
            done.fail(exc)
            return
        done.send(job)

    async def trigger(
        self, ref: str, *, overrides: JSONObject | None = None, idempotency: Idempotency | None = None
    ) -> Run:
        """Queue a manual run of the job ``ref`` (id or name), with this run's
        ``overrides``; with ``idempotency`` the answer is recorded with the run."""
        message = TriggerNow(overrides=overrides, idempotency=idempotency)
        return await self._ask(await self._job_id(ref), message, message.reply)

    async def update(self, ref: str, patch: JobPatch) -> Job:
        """Apply ``patch`` to the job; the updated job."""
        message = UpdateJob(patch=patch)
        return await self._ask(await self._job_id(ref), message, message.reply)

    async def pause(self, ref: str) -> Job:
        return await self.update(ref, JobPatch.enabled(False))

    async def resume(self, ref: str) -> Job:
        return await self.update(ref, JobPatch.enabled(True))

    async def delete(self, ref: str, *, cancel_active: bool) -> str:
        """Delete the job and its history; its id."""
        job_id = await self._job_id(ref)
        message = DeleteJob(cancel_active=cancel_active)
        await self._ask(job_id, message, message.reply)
        return job_id

    async def cancel_run(self, run_id: str) -> Run:
        """Cancel a run through the actor of its job; the run as it is then."""
        run = await self._env.storage.get_run(run_id, full=False)
        if run is None:
            raise RunNotFound()
        if run.status.terminal:
            full = await self._env.storage.get_run(run_id)
            assert full is not None
            return full
        message = CancelRun(run_id=run_id)
        return await self._ask(run.job_id, message, message.reply)

    async def _job_id(self, ref: str) -> str:
        if ref in self.registry:
            return ref  # an id the registry knows needs no lookup (triggers are hot)
        job = await self._env.storage.resolve_job(ref)
        if job is None:
            raise JobNotFound()
        return job.id

    async def _ask(self, job_id: str, message: Request, reply: Reply[T]) -> T:
        """Send ``message`` to the job's actor (waking it if needed); its answer."""
        # Deleting or cancelling may wait for runs to stop (up to their kill grace).
        slow = isinstance(message, DeleteJob | CancelRun)
        within = self._request_timeout + (RUN_STOP_WAIT_S if slow else 0.0)
        with trio.move_on_after(within):
            while True:
                awake = await self._awake_actor(job_id, message)
                if awake is None:  # answered without an actor (a faulted job's delete)
                    return await reply.wait()
                actor, retired = awake
                try:
                    return await mailbox.ask(actor.mailbox, message, reply, within=within)
                except (trio.BrokenResourceError, trio.ClosedResourceError, ActorGone):
                    # The actor stopped (hibernated, crashed, deleted) as we sent: once
                    # the registry no longer points at it, look again.
                    await retired.wait()
                    reply.rearm()
        raise Unavailable(f"the server did not answer within {within:g}s; try again")

    async def _awake_actor(self, job_id: str, message: Request) -> tuple[JobActor, trio.Event] | None:
        failures = 0
        while True:
            if self._closing:
                raise Unavailable("the server is shutting down")
            entry = self.registry.get(job_id)
            if entry is None:
                await self._adopt_on_demand(job_id)
                continue
            if entry.actor is not None:
                return entry.actor, entry.retired
            if entry.waking is not None:
                await entry.waking.wait()
                if entry.actor is None and self.registry.get(job_id) is entry:
                    failures += 1  # the activation failed (storage?): back off, then retry
                    await trio.sleep(min(1.0, 0.05 * 2**failures))
            elif job_id in self.faulted:
                await self._without_actor(job_id, message)
                return None
            else:
                self._launcher.wake(entry)

    async def _adopt_on_demand(self, job_id: str) -> None:
        """A request for a job this server does not run: :class:`JobNotFound`, or in a
        cluster, take it on if it was given to this server (the notice may not have
        arrived yet), else :class:`NotOwner` (the caller asks the owner)."""
        if self.membership is None:
            raise JobNotFound()
        if job_id in self.registry.leaving or not await self.membership.owns(job_id):
            raise NotOwner(job_id)
        await self.adopt([job_id])
        if job_id not in self.registry:
            raise NotOwner(job_id)

    async def _without_actor(self, job_id: str, message: Request) -> None:
        if not isinstance(message, DeleteJob):
            raise Unavailable(
                f"job {job_id} is faulted ({self.faulted[job_id]}); delete it or restart the server"
            )
        # A faulted job has no actor to stop its runs: end them as lost, then delete.
        await finish_lost(self._env, await self._env.storage.active_runs([job_id]))
        await self._env.storage.delete_job(job_id)
        del self.faulted[job_id]
        self.registry.drop(job_id)
        message.reply.send(None)

    # ------------------------------------------------------------- shutdown

    async def shutdown(self, grace: float) -> None:
        """Stop firing, give running runs ``grace`` seconds, then stop them."""
        self._closing = True
        self._closing_event.set()
        self._env.stopping.set()
        self._launcher.stop_waking()
        actors = self.registry.actors()
        for actor in actors:
            actor.stop_firing()
        running = [handle for actor in actors for handle in actor.running()]
        if running:
            logger.info("waiting up to %gs for %d running run(s) to finish", grace, len(running))
        with trio.move_on_after(grace):
            for handle in running:
                await handle.done.wait()
        left = [actor for actor in actors if actor.active()]
        if left:
            count = sum(len(actor.active()) for actor in left)
            logger.info("stopping %d run(s) that did not finish within the grace period", count)
        for actor in left:
            actor.stop_runs(StopReason.SHUTDOWN)
        self._closed.set()
        if self._nursery is not None:
            # Runs now have their kill grace to stop; past this, actors are torn down
            # and their runs recorded as lost rather than holding the shutdown forever.
            self._nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_DEADLINE_S
