"""Which jobs a server runs: one entry per job, its actor while it is awake, and the
wake-ups of the hibernating ones.

A synchronous bookkeeping unit of the :class:`~termjobs.actors.supervisor.Supervisor`
(which starts, restarts and routes to the actors): it decides nothing that needs I/O,
so the rules of who is awake, who is due and who is leaving are plain method calls.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from termjobs.actors.job import JobActor
from termjobs.actors.protocol import ActorExit
from termjobs.actors.wakeups import WakeSchedule
from termjobs.storage import ScheduleEntry


@dataclass(eq=False, slots=True)
class Entry:
    """The registry's view of one job."""

    job_id: str
    actor: JobActor | None = None
    #: set once the registry no longer routes to the current actor
    retired: trio.Event = field(default_factory=trio.Event)
    #: set while an actor is being started (or restarted) for this job
    waking: trio.Event | None = None

    @property
    def idle(self) -> bool:
        """Hibernating: no actor, and none being started."""
        return self.actor is None and self.waking is None


class Registry:
    """Entries by job id, and when to wake the hibernating ones (see the module docstring)."""

    def __init__(self, prewarm: dt.timedelta) -> None:
        self.prewarm = prewarm
        self._entries: dict[str, Entry] = {}
        self.wakeups = WakeSchedule(prewarm)
        #: set when the earliest wake-up moved earlier (the waker must look again)
        self.changed = trio.Event()
        #: jobs handed over to another server whose new owner is not recorded yet
        self.leaving: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._entries

    def get(self, job_id: str) -> Entry | None:
        return self._entries.get(job_id)

    def add(self, job_id: str) -> Entry:
        """The job's entry, created if it has none."""
        return self._entries.setdefault(job_id, Entry(job_id))

    def drop(self, job_id: str) -> None:
        """Forget the job (deleted, handed over, lost)."""
        self._entries.pop(job_id, None)
        self.wakeups.discard(job_id)

    def drop_entry(self, entry: Entry) -> None:
        """Forget the job if ``entry`` is still its entry."""
        if self._entries.get(entry.job_id) is entry:
            self.drop(entry.job_id)

    def clear(self) -> list[Entry]:
        """Forget every job; their entries."""
        entries = list(self._entries.values())
        self._entries.clear()
        self.wakeups.clear()
        self.leaving.clear()
        return entries

    def job_ids(self) -> set[str]:
        return set(self._entries)

    def actors(self) -> list[JobActor]:
        return [entry.actor for entry in self._entries.values() if entry.actor is not None]

    def runs_job(self, job_id: str) -> bool:
        """Whether the job is here and not being handed over."""
        return job_id in self._entries and job_id not in self.leaving

    # --------------------------------------------------------------- wake-ups

    def register(
        self, index: Sequence[ScheduleEntry], *, busy: set[str], now: dt.datetime, hibernate: bool
    ) -> list[str]:
        """Add these jobs: the ones that must be awake now (runs in ``busy``, a fire
        within ``prewarm``, or no hibernation); the others get a wake-up."""
        awake: list[str] = []
        for row in index:
            self._entries[row.job_id] = Entry(row.job_id)
            due_soon = row.enabled and row.next_run_at is not None and row.next_run_at - self.prewarm <= now
            if row.job_id in busy or due_soon or not hibernate:
                awake.append(row.job_id)
            elif row.enabled and row.next_run_at is not None:
                self.wake_at(row.job_id, row.next_run_at)
        return awake

    def wake_at(self, job_id: str, fire_at: dt.datetime) -> None:
        if self.wakeups.set(job_id, fire_at):
            self.changed.set()

    def due(self, now: dt.datetime) -> dict[str, dt.datetime]:
        """The hibernating jobs whose wake-up has come, with the fire each is for."""
        return {
            job_id: fire_at
            for job_id, fire_at in self.wakeups.pop_due(now)
            if (entry := self._entries.get(job_id)) is not None and entry.idle
        }

    def retire(self, entry: Entry, ended: ActorExit) -> None:
        """An actor ended cleanly: deleted, hibernating, handed to another server or
        lost to it, or the service is stopping."""
        entry.actor = None
        if ended.reason in ("deleted", "released", "lost"):
            self.drop_entry(entry)
        elif ended.reason == "hibernated" and ended.job.spec.enabled and ended.job.next_run_at is not None:
            self.wake_at(entry.job_id, ended.job.next_run_at)

    def lose(self, job_id: str) -> bool:
        """Another server owns the job now: stop its actor (whose exit drops the
        entry) or forget it at once; whether the job was here."""
        entry = self._entries.get(job_id)
        if entry is None:
            return False
        if entry.actor is not None:
            entry.actor.lose()
        elif entry.waking is None:
            self.drop(job_id)
        return True
