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

import math
from collections.abc import Callable

import trio

from termjobs.actors.wakeups import DeadlineQueue


class Alarms:
    """Callbacks by trio deadline, run by one task (see the module docstring)."""

    def __init__(self) -> None:
        self._queue: DeadlineQueue[object, float] = DeadlineQueue()
        self._wake: dict[object, Callable[[], None]] = {}
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    def set(self, key: object, deadline: float, wake: Callable[[], None]) -> None:
        """Call ``wake`` at ``deadline`` (trio time), replacing ``key``'s alarm."""
        self._wake[key] = wake
        if self._queue.set(key, deadline):
            self._changed.set()

    def discard(self, key: object) -> None:
        """Forget ``key``'s alarm (its actor ended)."""
        self._queue.discard(key)
        self._wake.pop(key, None)

    def next_deadline(self) -> float:
        """The earliest alarm (``inf`` without any)."""
        deadline = self._queue.next_due()
        return math.inf if deadline is None else deadline

    def ring_due(self, now: float) -> int:
        """Call every alarm due at ``now``; how many."""
        due = self._queue.pop_due(now)
        for key, _ in due:
            self._wake.pop(key)()
        return len(due)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Ring alarms as they come due, until cancelled."""
        task_status.started()
        while True:
            self.ring_due(trio.current_time())
            self._changed = trio.Event()
            with trio.move_on_at(self.next_deadline()):
                await self._changed.wait()
