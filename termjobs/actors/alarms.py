"""One timer for every awake actor.

An actor waits for its next message; when it must also act at a time (its next fire,
a fire retry, the end of an idle spell) it sets an alarm here, and :meth:`Alarms.run`,
a single task, puts a :class:`~termjobs.actors.protocol.Tick` in its mailbox when that
time comes. A cancel scope with a deadline per actor would do the same, but when many
actors are due at one instant (100,000 jobs at 02:00) trio delivers a ``Cancelled``
exception to each, which costs more than the fire itself; a tick costs a channel send.

A tick only tells the actor to look at the clock: a late or outdated tick is harmless,
and one that cannot be delivered (a full mailbox) is not needed, since an actor with
messages waiting looks at the clock before it waits again.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable

import trio

#: Outdated heap entries tolerated before a rebuild (and at least half of the heap).
_STALE_LIMIT = 1000


class Alarms:
    """Callbacks by trio deadline, run by one task (see the module docstring)."""

    def __init__(self) -> None:
        self._due: dict[object, tuple[float, int, Callable[[], None]]] = {}
        self._heap: list[tuple[float, int, object]] = []
        self._seq = itertools.count()
        self._stale = 0
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._due)

    def set(self, key: object, deadline: float, wake: Callable[[], None]) -> None:
        """Call ``wake`` at ``deadline`` (trio time), replacing ``key``'s alarm."""
        if key in self._due:
            self._stale += 1
            if self._stale > _STALE_LIMIT and self._stale > len(self._heap) // 2:
                self._rebuild()
        seq = next(self._seq)
        self._due[key] = (deadline, seq, wake)
        if not self._heap or deadline < self._heap[0][0]:
            self._changed.set()
        heapq.heappush(self._heap, (deadline, seq, key))

    def discard(self, key: object) -> None:
        """Forget ``key``'s alarm (its actor ended)."""
        if self._due.pop(key, None) is not None:
            self._stale += 1

    def next_deadline(self) -> float:
        """The earliest alarm (``inf`` without any)."""
        while self._heap:
            deadline, seq, key = self._heap[0]
            current = self._due.get(key)
            if current is not None and current[1] == seq:
                return deadline
            heapq.heappop(self._heap)
            self._stale = max(0, self._stale - 1)
        return math.inf

    def ring_due(self, now: float) -> int:
        """Call every alarm due at ``now``; how many."""
        rung = 0
        while self.next_deadline() <= now:
            _, _, key = heapq.heappop(self._heap)
            _, _, wake = self._due.pop(key)
            wake()
            rung += 1
        return rung

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ring alarms as they come due, until cancelled."""
        task_status.started()
        while True:
            self.ring_due(trio.current_time())
            self._changed = trio.Event()
            with trio.move_on_at(self.next_deadline()):
                await self._changed.wait()

    def _rebuild(self) -> None:
        self._heap = [(deadline, seq, key) for key, (deadline, seq, _) in self._due.items()]
        heapq.heapify(self._heap)
        self._stale = 0
