"""Starting job actors: at start-up, on a request for a hibernating job, ``PREWARM``
before a hibernating job's next fire (the waker), and again after a crash.

The :class:`~termjobs.actors.supervisor.Supervisor` routes requests and hands the
starting of actors to its :class:`Launcher`, which runs each actor in the supervisor's
nursery under :meth:`Launcher.supervise`: an actor that crashes is restarted after a
backoff, one that keeps crashing is marked faulted (``termjobs.actors.restarts``).
Jobs are loaded in batches; a start that fails (storage down) keeps the job's wake-up,
due again ``WAKE_RETRY`` later, so its next fire still comes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import trio

from termjobs.actors.alarms import Alarms
from termjobs.actors.job import JobActor
from termjobs.actors.registry import Entry, Registry
from termjobs.actors.restarts import CrashPolicy, reload_after_crash
from termjobs.actors.runs import RunEnv
from termjobs.clock import deadline_or_inf
from termjobs.jobdef import Job
from termjobs.model import Run
from termjobs.storage import ScheduleEntry

logger = logging.getLogger(__name__)

#: After a failed wake-up (storage down), the job's timer is due again this much later.
WAKE_RETRY = dt.timedelta(seconds=1)
_NONE: Mapping[str, dt.datetime] = MappingProxyType({})


class Launcher:
    """Starts and restarts the actors of a registry's jobs (see the module docstring)."""

    def __init__(
        self,
        env: RunEnv,
        registry: Registry,
        *,
        closing: trio.Event,
        hibernate: bool,
        max_restarts: int,
        restart_window: float,
    ) -> None:
        self._env = env
        self._registry = registry
        self._closing = closing
        self._hibernate = hibernate
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        #: jobs whose actor kept crashing, with why; they get no new actor
        self.faulted: dict[str, str] = {}
        #: jobs whose wake-up failed (storage down), with the fire it was for: their
        #: new actor judges that fire as of its time, not as a misfire
        self._late_fires: dict[str, dt.datetime] = {}
        #: actors running now
        self.awake = 0
        self._nursery: trio.Nursery | None = None
        self._waker_scope = trio.CancelScope()
        #: the timer of every awake actor (stopped with the waker: at shutdown actors
        #: stop waiting for fires)
        self.alarms = Alarms()
        self._alarms_scope = trio.CancelScope()

    def attach(self, nursery: trio.Nursery) -> None:
        """Run actors (and the waker) in ``nursery`` from now on."""
        self._nursery = nursery
        nursery.start_soon(self.waker)
        nursery.start_soon(self._ring_alarms)

    def stop_waking(self) -> None:
        """No more wake-ups (shutdown)."""
        self._waker_scope.cancel()
        self._alarms_scope.cancel()

    async def _ring_alarms(self) -> None:
        with self._alarms_scope:
            await self.alarms.run()

    async def register(self, index: Sequence[ScheduleEntry], *, busy: set[str]) -> list[str]:
        """Take on these jobs: actors for those with runs or a fire soon, a wake-up
        for the others; the ones awake."""
        awake = self._registry.register(
            index, busy=busy, now=self._env.clock.now(), hibernate=self._hibernate
        )
        await self.activate(awake)
        return awake

    def wake(self, entry: Entry) -> None:
        """Start the idle ``entry``'s actor in the background (a request waits on
        ``entry.waking``): a caller that gives up must not abort the start half-way."""
        entry.waking = trio.Event()
        assert self._nursery is not None
        self._nursery.start_soon(self.activate_claimed, [entry])

    async def start(self, job: Job) -> None:
        """Start a new job's actor; returns once it is running."""
        self._registry.add(job.id)
        assert self._nursery is not None
        await self._nursery.start(self.supervise, job, [])

    async def activate(self, job_ids: list[str], fire_times: Mapping[str, dt.datetime] | None = None) -> None:
        """Start actors for these jobs (loading them and their runs in batches);
        ``fire_times``: the wake-ups they were taken from (kept if the start fails)."""
        entries = [e for e in (self._registry.get(i) for i in job_ids) if e is not None and e.idle]
        for entry in entries:
            entry.waking = trio.Event()
        await self.activate_claimed(entries, fire_times or {})

    async def activate_claimed(
        self, entries: list[Entry], fire_times: Mapping[str, dt.datetime] = _NONE
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
            entry.job_id: self._registry.wakeups.discard(entry.job_id) or fire_times.get(entry.job_id)
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
                    self._registry.drop(entry.job_id)  # deleted meanwhile
            if not self._closing.is_set():
                await self._start_together([(job, by_job[job.id]) for job in jobs])
        except Exception:
            logger.exception(
                "could not start %d job actor(s); retrying in %gs", len(entries), WAKE_RETRY.total_seconds()
            )
        finally:
            now = self._env.clock.now()
            retry_at = now + WAKE_RETRY + self._registry.prewarm
            put_back = False
            for entry in entries:
                at = held[entry.job_id]
                kept = self._registry.get(entry.job_id) is entry and entry.actor is None
                if kept and at is not None and self._registry.wakeups.get(entry.job_id) is None:
                    self._registry.wake_at(entry.job_id, max(at, retry_at))
                    self._late_fires.setdefault(entry.job_id, at)
                    put_back = True
                waking, entry.waking = entry.waking, None
                if waking is not None:
                    waking.set()
            if put_back:  # as a crowd, they would be woken early again at once
                self._registry.wakeups.hold_until(now + WAKE_RETRY)

    async def _start_together(self, batch: Sequence[tuple[Job, list[Run]]]) -> None:
        """Start these actors side by side; returns once each has started (or ended).

        One ``nursery.start`` per actor would take two passes of the scheduler each:
        100,000 jobs woken for one minute took longer to start than the minute."""
        assert self._nursery is not None
        together = _Together(len(batch))
        for job, runs in batch:
            self._nursery.start_soon(self._supervise_one, job, runs, together.member())
        await together.done.wait()

    async def _supervise_one(self, job: Job, runs: list[Run], started: _Member) -> None:
        try:
            await self.supervise(job, runs, task_status=started)
        finally:
            started.started()  # ended before it started: the batch must not wait for it

    async def waker(self) -> None:
        """Start hibernating actors ``PREWARM`` before their next fire (earlier for a
        crowd of jobs due together: ``actors/wakeups.py``)."""
        with self._waker_scope:
            while True:
                due = self._registry.due(self._env.clock.now())
                if due:
                    await self.activate(list(due), due)  # failures keep their wake-up, retried later
                with trio.move_on_at(deadline_or_inf(self._env.clock, self._registry.wakeups.next_wake())):
                    await self._registry.changed.wait()
                self._registry.changed = trio.Event()

    # ---------------------------------------------------------- supervision

    async def supervise(
        self, job: Job, runs: list[Run], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        entry = self._registry.add(job.id)
        crashes = CrashPolicy(max_restarts=self._max_restarts, window=self._restart_window)
        status: trio.TaskStatus[None] = task_status
        while True:
            actor = JobActor(
                job,
                self._env,
                runs=runs,
                hibernate=self._hibernate,
                alarms=self.alarms,
                closing=self._closing.is_set,
                late_fire=self._late_fires.pop(job.id, None),
            )
            entry.actor, entry.retired = actor, trio.Event()
            retired = entry.retired
            self.awake += 1
            try:
                self._registry.retire(entry, await actor.run(task_status=status))
                return
            except Exception as exc:
                logger.exception("job actor %s (%s) crashed", job.id, job.spec.name)
                if self._closing.is_set():
                    return
                if not crashes.may_restart():
                    self.faulted[job.id] = f"its actor crashed {len(crashes)} times; last error: {exc}"
                    logger.error(
                        "job %s is faulted and will not be restarted: %s", job.id, self.faulted[job.id]
                    )
                    return
            finally:
                self.awake -= 1
                if entry.actor is actor:
                    entry.actor = None
                retired.set()
            status = trio.TASK_STATUS_IGNORED
            entry.waking = trio.Event()  # requests wait for the restart instead of failing
            try:
                reloaded = await reload_after_crash(self._env, job.id, crashes.backoff(), self._closing)
            finally:
                waking, entry.waking = entry.waking, None
                waking.set()
            if reloaded is None:
                if not self._closing.is_set():
                    self._registry.drop(job.id)  # deleted meanwhile
                return
            job, runs = reloaded


class _Together:
    """Counts the members of a batch of tasks started together (see
    :meth:`Launcher._start_together`)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.done = trio.Event()
        if size == 0:
            self.done.set()

    def member(self) -> _Member:
        return _Member(self)


class _Member:
    """One task's status in a :class:`_Together`: its first ``started()`` counts."""

    def __init__(self, together: _Together) -> None:
        self._together: _Together | None = together

    def started(self, value: None = None) -> None:
        together, self._together = self._together, None
        if together is not None:
            together.left -= 1
            if together.left == 0:
                together.done.set()
