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
from collections.abc import Hashable
from typing import Generic, TypeVar

#: Outdated heap entries tolerated before a rebuild (and at least half of the heap).
_STALE_LIMIT = 1000

K = TypeVar("K", bound=Hashable)
T = TypeVar("T", float, dt.datetime)


class DeadlineQueue(Generic[K, T]):
    """Keys by the time they are due, one time per key: a heap whose replaced and
    removed entries are skipped when they come up and swept out when they outnumber
    the live ones. Used for hibernating jobs (:class:`WakeSchedule`) and for awake
    actors' alarms (``termjobs.actors.alarms``)."""

    def __init__(self) -> None:
        self._at: dict[K, T] = {}
        self._heap: list[tuple[T, int, K]] = []
        self._seq = itertools.count()
        self._stale = 0

    def __len__(self) -> int:
        return len(self._at)

    def get(self, key: K) -> T | None:
        """The time held for ``key``."""
        return self._at.get(key)

    def set(self, key: K, at: T) -> bool:
        """``key`` is due at ``at`` (replacing any earlier entry); whether the earliest
        time moved earlier (a waiting timer must look again)."""
        if key in self._at:
            self._stale += 1
        if self._stale > _STALE_LIMIT and self._stale > len(self._heap) // 2:
            self._rebuild()
        was_first = not self._heap or at < self._heap[0][0]
        self._at[key] = at
        heapq.heappush(self._heap, (at, next(self._seq), key))
        return was_first

    def discard(self, key: K) -> T | None:
        """Forget ``key``; the time it held."""
        at = self._at.pop(key, None)
        if at is not None:
            self._stale += 1
        return at

    def clear(self) -> None:
        """Forget every key."""
        self._at.clear()
        self._heap.clear()
        self._stale = 0

    def pop_due(self, horizon: T) -> list[tuple[K, T]]:
        """The keys due at ``horizon`` or before, with their times, removed."""
        due: list[tuple[K, T]] = []
        while self._heap and self._heap[0][0] <= horizon:
            at, _, key = heapq.heappop(self._heap)
            if self._at.get(key) == at:
                del self._at[key]
                due.append((key, at))
            else:
                self._stale -= 1
        return due

    def next_due(self) -> T | None:
        """The earliest time held."""
        while self._heap and self._at.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)
            self._stale -= 1
        return self._heap[0][0] if self._heap else None

    def _rebuild(self) -> None:
        self._heap = [entry for entry in self._heap if self._at.get(entry[2]) == entry[0]]
        heapq.heapify(self._heap)
        self._stale = 0


class WakeSchedule(DeadlineQueue[str, dt.datetime]):
    """Job ids by their next fire time; a job is due ``prewarm`` before it (see the
    module docstring)."""

    def __init__(self, prewarm: dt.timedelta) -> None:
        super().__init__()
        self.prewarm = prewarm

    def pop_due(self, horizon: dt.datetime) -> list[tuple[str, dt.datetime]]:
        """The jobs to wake at ``horizon`` (now) with their fire times, removed."""
        return super().pop_due(horizon + self.prewarm)

    def next_wake(self) -> dt.datetime | None:
        """When the next job must be woken (its fire time minus ``prewarm``)."""
        fire_at = self.next_due()
        return None if fire_at is None else fire_at - self.prewarm
