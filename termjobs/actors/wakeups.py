"""When hibernating jobs must be woken: a small synchronous timer queue.

The supervisor keeps one entry per hibernating job that has a next fire time, and
starts the job's actor ``prewarm`` before that time. Entries are replaced or removed
lazily: the heap may hold outdated entries, which are skipped when they come up and
swept out when they outnumber the live ones.

Starting an actor takes time (about ``1 / WAKE_RATE`` s, loading its job included), so
a crowd of jobs due close together is woken earlier still: a job with ``n`` others due
before it or in its second (counted from the first job due, at most ``MAX_LEAD``
before it) is woken ``n / WAKE_RATE`` s sooner (at most ``MAX_LEAD``), and 100,000
jobs due at one minute are awake by their fire instead of being started while they
should be firing. The crowd is counted per second of fire time, so finding the next
wake-up reads a few dozen counters, not the heap.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import Counter
from collections.abc import Hashable
from typing import Generic, TypeVar

#: Job actors the supervisor starts a second, loading their jobs included (measured:
#: 100,000 took 25-30 s on two cores while other jobs ran).
WAKE_RATE = 4_000.0
#: The most a crowd is woken ahead of ``prewarm``, and how far ahead of its first job a
#: crowd is counted. With ``prewarm`` it stays under the minute within which an awake
#: actor with a fire coming does not hibernate (``HIBERNATE_HORIZON_S``).
MAX_LEAD = dt.timedelta(seconds=30)
_LEAD_SECONDS = int(MAX_LEAD.total_seconds())

#: Heap entries tolerated before a rebuild, if most are outdated.
_STALE_LIMIT = 1000

K = TypeVar("K", bound=Hashable)
T = TypeVar("T", float, dt.datetime)


class DeadlineQueue(Generic[K, T]):
    """Keys by the time they are due, one time per key. Keys due at the same time share
    one entry of a heap of times (100,000 jobs due at one minute are one entry, popped
    at once: a heap entry per key cost 10% of the event loop while they fired); a time
    whose keys all moved away stays in the heap until it comes up, or until such
    entries outnumber the live ones and the heap is rebuilt. Used for hibernating jobs
    (:class:`WakeSchedule`) and for awake actors' alarms (``termjobs.actors.alarms``)."""

    def __init__(self) -> None:
        self._at: dict[K, T] = {}
        self._keys: dict[T, dict[K, None]] = {}  # per time held, its keys in order
        self._heap: list[T] = []  # the times held (and some no longer held)

    def __len__(self) -> int:
        return len(self._at)

    def get(self, key: K) -> T | None:
        """The time held for ``key``."""
        return self._at.get(key)

    def set(self, key: K, at: T) -> bool:
        """``key`` is due at ``at`` (replacing any earlier entry); whether the earliest
        time moved earlier (a waiting timer must look again)."""
        old = self._at.get(key)
        if old == at:
            return False
        first = self.next_due()
        if old is not None:
            self._remove(key, old)
        self._at[key] = at
        keys = self._keys.get(at)
        if keys is None:
            keys = self._keys[at] = {}
            if len(self._heap) > _STALE_LIMIT and len(self._heap) > 2 * len(self._keys):
                self._heap = list(self._keys)
                heapq.heapify(self._heap)
            else:
                heapq.heappush(self._heap, at)
        keys[key] = None
        return first is None or at < first

    def discard(self, key: K) -> T | None:
        """Forget ``key``; the time it held."""
        at = self._at.pop(key, None)
        if at is not None:
            self._remove(key, at, held=False)
        return at

    def _remove(self, key: K, at: T, *, held: bool = True) -> None:
        keys = self._keys[at]
        del keys[key]
        if held:
            del self._at[key]
        if not keys:
            del self._keys[at]  # its heap entry is skipped when it comes up

    def clear(self) -> None:
        """Forget every key."""
        self._at.clear()
        self._keys.clear()
        self._heap.clear()

    def pop_due(self, horizon: T) -> list[tuple[K, T]]:
        """The keys due at ``horizon`` or before, with their times (earliest first,
        then in the order they were set), removed."""
        due: list[tuple[K, T]] = []
        while self._heap and self._heap[0] <= horizon:
            at = heapq.heappop(self._heap)
            for key in self._keys.pop(at, ()):
                del self._at[key]
                due.append((key, at))
        return due

    def next_due(self) -> T | None:
        """The earliest time held."""
        while self._heap and self._heap[0] not in self._keys:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else None


class WakeSchedule(DeadlineQueue[str, dt.datetime]):
    """Job ids by their next fire time; a job is due ``prewarm`` before it, earlier
    in a crowd (see the module docstring)."""

    def __init__(self, prewarm: dt.timedelta) -> None:
        super().__init__()
        self.prewarm = prewarm
        self._per_second: Counter[int] = Counter()  # live entries by second of fire time
        self._held_until: dt.datetime | None = None

    def set(self, key: str, at: dt.datetime) -> bool:
        """``key`` fires at ``at``; whether the next wake-up may have moved earlier."""
        self._uncount(self._at.get(key))
        first = self.next_due()
        self._per_second[_second(at)] += 1
        was_first = super().set(key, at)
        return was_first or (first is not None and _second(at) - _second(first) <= _LEAD_SECONDS)

    def hold_until(self, at: dt.datetime) -> None:
        """Wake nothing before ``at`` (waking failed: a crowd put back, woken early
        again at once, would make a busy loop while storage is down)."""
        self._held_until = at if self._held_until is None else max(self._held_until, at)

    def discard(self, key: str) -> dt.datetime | None:
        at = super().discard(key)
        self._uncount(at)
        return at

    def clear(self) -> None:
        super().clear()
        self._per_second.clear()

    def pop_due(self, horizon: dt.datetime) -> list[tuple[str, dt.datetime]]:
        """The jobs to wake at ``horizon`` (now) with their fire times, removed."""
        if self._held_until is not None:
            if horizon < self._held_until:
                return []
            self._held_until = None
        limit = horizon + self.prewarm
        crowd = self._last_woken_second(horizon)
        if crowd is not None:  # the whole of that second's crowd, and everything before it
            limit = max(limit, _EPOCH + (crowd + 1) * _SECOND - _TICK)
        due = super().pop_due(limit)
        for _, at in due:
            self._uncount(at)
        return due

    def next_wake(self) -> dt.datetime | None:
        """When the next job must be woken (see the module docstring)."""
        wakes = [wake for _, wake in self._crowd_wakes()]
        if self._held_until is not None:
            wakes = [max(wake, self._held_until) for wake in wakes]
        return min(wakes, default=None)

    def _last_woken_second(self, now: dt.datetime) -> int | None:
        """The latest second of fire time whose jobs must be awake by ``now``."""
        woken = [second for second, wake in self._crowd_wakes() if wake <= now]
        return max(woken) if woken else None

    def _crowd_wakes(self) -> list[tuple[int, dt.datetime]]:
        """When to wake each second of fire time within ``MAX_LEAD`` of the first."""
        first = self.next_due()
        if first is None:
            return []
        start = _second(first)
        wakes: list[tuple[int, dt.datetime]] = []
        ahead = 0  # the jobs due in the window, up to this second
        for second in range(start, start + _LEAD_SECONDS + 1):
            count = self._per_second.get(second, 0)
            if not count:
                continue
            ahead += count
            fire_at = first if second == start else _EPOCH + second * _SECOND
            lead = min(dt.timedelta(seconds=(ahead - 1) / WAKE_RATE), MAX_LEAD)
            wakes.append((second, fire_at - self.prewarm - lead))
        return wakes

    def _uncount(self, at: dt.datetime | None) -> None:
        if at is None:
            return
        second = _second(at)
        self._per_second[second] -= 1
        if self._per_second[second] <= 0:
            del self._per_second[second]


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TICK = dt.timedelta(microseconds=1)
_SECOND = dt.timedelta(seconds=1)


def _second(at: dt.datetime) -> int:
    """The whole second (since the epoch) that ``at`` falls in."""
    return (at - _EPOCH) // _SECOND
