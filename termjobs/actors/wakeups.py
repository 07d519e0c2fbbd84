"""When hibernating jobs must be woken: a small synchronous timer queue.

The supervisor keeps one entry per hibernating job that has a next fire time, and
starts the job's actor ``prewarm`` before that time. Entries are replaced or removed
lazily: the heap may hold outdated entries, which are skipped when they come up and
swept out when they outnumber the live ones.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools

#: Outdated heap entries tolerated before a rebuild (and at least half of the heap).
_STALE_LIMIT = 1000


class WakeSchedule:
    """Job ids by the time their actor must be started (see the module docstring)."""

    def __init__(self, prewarm: dt.timedelta) -> None:
        self.prewarm = prewarm
        self._at: dict[str, dt.datetime] = {}
        self._heap: list[tuple[dt.datetime, int, str]] = []
        self._seq = itertools.count()
        self._stale = 0

    def __len__(self) -> int:
        return len(self._at)

    def get(self, job_id: str) -> dt.datetime | None:
        """The fire time held for ``job_id``."""
        return self._at.get(job_id)

    def set(self, job_id: str, fire_at: dt.datetime) -> bool:
        """Wake ``job_id`` ``prewarm`` before ``fire_at`` (replacing any earlier entry);
        whether the earliest wake-up moved earlier (a waiting waker must look again)."""
        if job_id in self._at:
            self._stale += 1
        if self._stale > _STALE_LIMIT and self._stale > len(self._heap) // 2:
            self._rebuild()
        was_first = not self._heap or fire_at < self._heap[0][0]
        self._at[job_id] = fire_at
        heapq.heappush(self._heap, (fire_at, next(self._seq), job_id))
        return was_first

    def discard(self, job_id: str) -> dt.datetime | None:
        """Forget ``job_id`` (woken or deleted); the fire time it held."""
        fire_at = self._at.pop(job_id, None)
        if fire_at is not None:
            self._stale += 1
        return fire_at

    def clear(self) -> None:
        """Forget every job."""
        self._at.clear()
        self._heap.clear()
        self._stale = 0

    def pop_due(self, now: dt.datetime) -> list[tuple[str, dt.datetime]]:
        """The jobs to wake at ``now`` with their fire times, removed from the queue."""
        horizon = now + self.prewarm
        due: list[tuple[str, dt.datetime]] = []
        while self._heap and self._heap[0][0] <= horizon:
            fire_at, _, job_id = heapq.heappop(self._heap)
            if self._at.get(job_id) == fire_at:
                del self._at[job_id]
                due.append((job_id, fire_at))
            else:
                self._stale -= 1
        return due

    def next_wake(self) -> dt.datetime | None:
        """When the next job must be woken (its fire time minus ``prewarm``)."""
        while self._heap and self._at.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
            self._stale -= 1
        return self._heap[0][0] - self.prewarm if self._heap else None

    def _rebuild(self) -> None:
        self._heap = [entry for entry in self._heap if self._at.get(entry[2]) == entry[0]]
        heapq.heapify(self._heap)
        self._stale = 0
