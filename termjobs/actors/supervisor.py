"""The Supervisor: owns one JobActor per job, routes requests to them, restarts them.

Its public methods are the API of the actor layer (``create_job``, ``trigger``,
``update``, ``pause``, ``resume``, ``delete``, ``cancel_run``, ``shutdown``): callers
never build a message or hold a reply. At start-up it first recovers runs a previous
process left unfinished (``termjobs.actors.recovery``). Every job then has an entry in
the registry; its actor runs while the job has something to do. An idle actor
*hibernates* (see ``JobActor``): the supervisor then keeps only the job's next fire
time (``termjobs.actors.wakeups``) and starts a new actor ``PREWARM`` before that time,
or as soon as a request for the job arrives. So 100,000 mostly idle jobs cost a timer
each, not a task each.

An actor that crashes is restarted one-for-one after a backoff; one that keeps
crashing is marked faulted and logged, and never takes the service down.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Protocol, TypeVar

import trio

from termjobs import wire
from termjobs.actors import mailbox
from termjobs.actors.job import RUN_STOP_WAIT_S, JobActor
from termjobs.actors.mailbox import Reply
from termjobs.actors.protocol import (
    ActorExit,
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
from termjobs.actors.runs import RunEnv
from termjobs.actors.wakeups import WakeSchedule
from termjobs.clock import deadline_or_inf
from termjobs.errors import AlreadyAnswered, Conflict, JobNotFound, RunNotFound, TermjobsError, Unavailable
from termjobs.jobdef import Job, JobDefinition
from termjobs.jobspec import JobPatch
from termjobs.model import JSONObject, Run, RunStatus, new_job_id
from termjobs.runners.base import StopReason, check_runnable
from termjobs.schedule import initial_next_run
from termjobs.storage import DuplicateReceipt, NameTaken, NotOwner, Receipt, ScheduleEntry

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: After shutdown has asked the remaining runs to stop, how long it waits for them.
SHUTDOWN_DEADLINE_S = 60.0
#: A hibernating job's actor is started this long before its next fire.
PREWARM = dt.timedelta(seconds=5)
#: After a failed wake-up (storage down), the job's timer is due again this much later.
WAKE_RETRY = dt.timedelta(seconds=1)
#: Jobs taken on in one go when a cluster gives this server many (takeover).
ADOPT_BATCH = 500
_NONE: Mapping[str, dt.datetime] = MappingProxyType({})


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


@dataclass(eq=False, slots=True)
class _Entry:
    """The registry's view of one job."""

    job_id: str
    actor: JobActor | None = None
    #: set once the registry no longer routes to the current actor
    retired: trio.Event = field(default_factory=trio.Event)
    #: set while an actor is being started (or restarted) for this job
    waking: trio.Event | None = None


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
        self._wakeups = WakeSchedule(PREWARM)
        self._wakeups_changed = trio.Event()
        self.faulted: dict[str, str] = {}
        #: jobs whose wake-up failed (storage down), with the fire it was for: their
        #: new actor judges that fire as of its time, not as a misfire
        self._late_fires: dict[str, dt.datetime] = {}
        self._nursery: trio.Nursery | None = None
        self._waker_scope = trio.CancelScope()
        self._closing = False
        self._closing_event = trio.Event()
        self._closed = trio.Event()
        self.recovered = 0
        self._started = False
        self.started_at = env.clock.now()

        #: in a cluster (set before :meth:`run`): which jobs this server owns
        self.membership: Membership | None = None
        #: jobs handed over to another server whose new owner is not recorded yet
        self._leaving: set[str] = set()
        self._env = replace(env, lost_job=self.job_lost)

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
        return len(self._entries)

    def run_counts(self) -> tuple[int, int]:
        """Runs of this server's actors: (waiting, executing)."""
        waiting = executing = 0
        for actor in self._actors():
            for handle in actor.active():
                if handle.started:
                    executing += 1
                else:
                    waiting += 1
        return waiting, executing

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
            if self.membership is None:
                # In a cluster, jobs (and their lost runs) come with ownership: adopt().
                self.recovered = await recover_interrupted(self._env)
                index = await self._env.storage.schedule_index()
                runs = await self._env.storage.active_runs()
                awake = await self._register(index, busy={run.job_id for run in runs})
                logger.info(
                    "%d job(s): %d actor(s) awake, %d queued run(s) pending",
                    len(index),
                    len(awake),
                    len(runs),
                )
            nursery.start_soon(self._waker)
            self.started_at = self._env.clock.now()
            self._started = True
            task_status.started()
            # Keep the nursery open for actors started later; shutdown() ends this wait.
            await self._closed.wait()

    async def _register(self, index: Sequence[ScheduleEntry], *, busy: set[str]) -> list[str]:
        """Take on these jobs: actors for those with runs or a fire soon, a wake-up
        for the others; the ones awake."""
        now = self._env.clock.now()
        awake: list[str] = []
        for row in index:
            self._entries[row.job_id] = _Entry(row.job_id)
            due_soon = row.enabled and row.next_run_at is not None and row.next_run_at - PREWARM <= now
            if row.job_id in busy or due_soon or not self._hibernate:
                awake.append(row.job_id)
            elif row.enabled and row.next_run_at is not None:
                self._wake_at(row.job_id, row.next_run_at)
        await self._activate(awake)
        return awake

    # ------------------------------------------------------------- cluster

    def owned(self) -> set[str]:
        """The jobs this server runs (awake or hibernating)."""
        return set(self._entries)

    def runs_job(self, job_id: str) -> bool:
        """Whether this server runs the job now (its writes still prove ownership)."""
        return job_id in self._entries and job_id not in self._leaving

    async def adopt(self, job_ids: Sequence[str]) -> None:
        """Start running these jobs (a cluster gave them to this server). Runs a
        previous owner left ``claimed``, ``running`` or ``cancel_requested`` are ended as
        lost first (retried per policy); queued ones run here; fires missed meanwhile
        follow the misfire policy when the job's actor starts."""
        new = [job_id for job_id in dict.fromkeys(job_ids) if job_id not in self._entries]
        for start in range(0, len(new), ADOPT_BATCH):
            chunk = new[start : start + ADOPT_BATCH]
            if self._closing or self._nursery is None:
                return
            self._leaving.difference_update(chunk)
            active = await self._env.storage.active_runs(chunk)
            lost = [run for run in active if run.status is not RunStatus.QUEUED]
            if lost:
                await finish_lost(self._env, lost)
                logger.warning("ended %d run(s) a previous owner of these jobs left unfinished", len(lost))
            index = await self._env.storage.schedule_index(chunk)
            fresh = [row for row in index if row.job_id not in self._entries]
            await self._register(fresh, busy={run.job_id for run in active})

    async def release(self, job_ids: Sequence[str]) -> list[str]:
        """Stop running those of these jobs that are idle (a cluster hands them to
        another server); the ones let go. Until :meth:`handed_over`, requests for them
        are told to ask the new owner."""
        released: list[str] = []
        for job_id in job_ids:
            entry = self._entries.get(job_id)
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
            self._leaving.add(job_id)
            self._entries.pop(job_id, None)
            self._wakeups.discard(job_id)
            released.append(job_id)
        return released

    def handed_over(self, job_ids: Sequence[str]) -> None:
        """The released jobs have their new owner recorded."""
        self._leaving.difference_update(job_ids)

    def job_lost(self, job_id: str) -> None:
        """A write found that this server no longer owns the job: stop it now."""
        entry = self._entries.get(job_id)
        if entry is None:
            return
        if entry.actor is not None:
            entry.actor.lose()  # its exit removes the entry
        elif entry.waking is None:
            self._entries.pop(job_id, None)
            self._wakeups.discard(job_id)
        if self.membership is not None:
            self.membership.job_lost(job_id)

    async def abandon(self, reason: str) -> None:
        """Stop every job at once (this server's cluster lease lapsed: others may be
        running its jobs already): running runs are stopped and end ``failed`` /
        ``worker_lost``; queued runs stay for the new owners."""
        entries = list(self._entries.values())
        awake = [entry for entry in entries if entry.actor is not None]
        for entry in awake:
            assert entry.actor is not None
            entry.actor.lose()
        self._entries.clear()
        self._wakeups.clear()
        self._leaving.clear()
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
        self._entries[job.id] = _Entry(job.id)
        try:
            assert self._nursery is not None
            await self._nursery.start(self._supervise, job, [])
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
        if ref in self._entries:
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
            entry = self._entries.get(job_id)
            if entry is None:
                await self._adopt_on_demand(job_id)
                continue
            if entry.actor is not None:
                return entry.actor, entry.retired
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

    async def _adopt_on_demand(self, job_id: str) -> None:
        """A request for a job this server does not run: :class:`JobNotFound`, or in a
        cluster, take it on if it was given to this server (the notice may not have
        arrived yet), else :class:`NotOwner` (the caller asks the owner)."""
        if self.membership is None:
            raise JobNotFound()
        if job_id in self._leaving or not await self.membership.owns(job_id):
            raise NotOwner(job_id)
        await self.adopt([job_id])
        if job_id not in self._entries:
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
        self._entries.pop(job_id, None)
        message.reply.send(None)

    # ------------------------------------------------------------- shutdown

    async def shutdown(self, grace: float) -> None:
        """Stop firing, give running runs ``grace`` seconds, then stop them."""
        self._closing = True
        self._closing_event.set()
        self._env.stopping.set()
        self._waker_scope.cancel()
        actors = self._actors()
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

    # ----------------------------------------------------------- activation

    async def _activate(
        self, job_ids: list[str], fire_times: Mapping[str, dt.datetime] | None = None
    ) -> None:
        """Start actors for these jobs (loading them and their runs in batches);
        ``fire_times``: the wake-ups they were taken from (kept if the start fails)."""
        entries = [
            e for e in (self._entries.get(i) for i in job_ids) if e and e.actor is None and not e.waking
        ]
        for entry in entries:
            entry.waking = trio.Event()
        await self._activate_claimed(entries, fire_times or {})

    async def _activate_claimed(
        self, entries: list[_Entry], fire_times: Mapping[str, dt.datetime] = _NONE
    ) -> None:
        """Start actors for entries whose ``waking`` event the caller has set up.

        Whatever happens, ``waking`` is set at the end; an entry that did not get an
        actor (storage failed, shutdown) keeps its wake-up so its next fire still comes,
        due again ``WAKE_RETRY`` from now at the earliest (no busy loop while storage
        is down).
        """
        if not entries or self._nursery is None:
            return
        held = {
            entry.job_id: self._wakeups.discard(entry.job_id) or fire_times.get(entry.job_id)
            for entry in entries
        }
        ids = [entry.job_id for entry in entries]
        try:
            jobs = await self._env.storage.get_jobs(ids)
            by_job: dict[str, list[Run]] = defaultdict(list)
            for run in await self._env.storage.active_runs(ids):
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
                at = held[entry.job_id]
                kept = self._entries.get(entry.job_id) is entry and entry.actor is None
                if kept and at is not None and self._wakeups.get(entry.job_id) is None:
                    self._wake_at(entry.job_id, max(at, retry_at))
                    self._late_fires.setdefault(entry.job_id, at)
                waking, entry.waking = entry.waking, None
                if waking is not None:
                    waking.set()

    def _wake_at(self, job_id: str, fire_at: dt.datetime) -> None:
        if self._wakeups.set(job_id, fire_at):
            self._wakeups_changed.set()

    async def _waker(self) -> None:
        """Start hibernating actors ``PREWARM`` before their next fire."""
        with self._waker_scope:
            while True:
                due = {
                    job_id: fire_at
                    for job_id, fire_at in self._wakeups.pop_due(self._env.clock.now())
                    if (entry := self._entries.get(job_id)) and entry.actor is None and entry.waking is None
                }
                if due:
                    await self._activate(list(due), due)  # failures keep their wake-up, retried later
                with trio.move_on_at(deadline_or_inf(self._env.clock, self._wakeups.next_wake())):
                    await self._wakeups_changed.wait()
                self._wakeups_changed = trio.Event()

    # ---------------------------------------------------------- supervision

    async def _supervise(
        self, job: Job, runs: list[Run], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        entry = self._entries.setdefault(job.id, _Entry(job.id))
        crashes: deque[float] = deque()
        status: trio.TaskStatus[None] = task_status
        while True:
            actor = JobActor(
                job,
                self._env,
                runs=runs,
                hibernate=self._hibernate,
                closing=lambda: self._closing,
                late_fire=self._late_fires.pop(job.id, None),
            )
            entry.actor, entry.retired = actor, trio.Event()
            retired = entry.retired
            try:
                self._retire(entry, await actor.run(task_status=status))
                return
            except Exception as exc:
                logger.exception("job actor %s (%s) crashed", job.id, job.spec.name)
                if self._closing or not self._may_restart(crashes, job, exc):
                    return
            finally:
                if entry.actor is actor:
                    entry.actor = None
                retired.set()
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

    def _retire(self, entry: _Entry, ended: ActorExit) -> None:
        """An actor ended cleanly: deleted, hibernating, handed to another server or
        lost to it, or the service is stopping."""
        entry.actor = None
        if ended.reason in ("deleted", "released", "lost"):
            if self._entries.get(entry.job_id) is entry:
                del self._entries[entry.job_id]
            self._wakeups.discard(entry.job_id)
        elif ended.reason == "hibernated" and ended.job.spec.enabled and ended.job.next_run_at is not None:
            self._wake_at(entry.job_id, ended.job.next_run_at)

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
        job = await self._env.storage.get_job(job_id)
        if job is None:
            self._entries.pop(job_id, None)
            return None
        active = await self._env.storage.active_runs([job_id])
        await finish_lost(self._env, [run for run in active if run.status is not RunStatus.QUEUED])
        runs = await self._env.storage.active_runs([job_id])
        return job, [run for run in runs if run.status is RunStatus.QUEUED]
