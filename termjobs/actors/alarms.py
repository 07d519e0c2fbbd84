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

A crowd (at least ``CROWD`` alarms at once) holds Python's cyclic garbage collector off
while it fires: 100,000 actors firing allocate millions of objects, and the collections
they set off (each walking every object allocated since the last) took 6 of the 14
seconds it took them to fire (benchmarks/RESULTS.md). The collector runs again
``HOLD_PER_ALARM_S`` per alarm later (at most ``HOLD_MAX_S``), once, over what is left.
"""

from __future__ import annotations

import gc
import logging
import math
from collections.abc import Callable

import trio

from termjobs.actors.wakeups import DeadlineQueue

logger = logging.getLogger(__name__)

#: This many alarms rung at once are a crowd (see the module docstring).
CROWD = 10_000
#: How long a crowd holds the garbage collector off, per alarm rung...
HOLD_PER_ALARM_S = 200e-6
#: ...and at most (100,000 jobs firing take about 5-8 s on two cores).
HOLD_MAX_S = 30.0


class Alarms:
    """Callbacks by trio deadline, run by one task (see the module docstring)."""

    def __init__(self, *, crowd: int = CROWD) -> None:
        self._queue: DeadlineQueue[object, float] = DeadlineQueue()
        self._wake: dict[object, Callable[[], None]] = {}
        self._changed = trio.Event()
        self._crowd = crowd
        self._collector = CollectorHold()

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
        try:
            while True:
                now = trio.current_time()
                self._collector.release_due(now)
                rung = self.ring_due(now)
                if rung >= self._crowd:
                    hold = min(HOLD_MAX_S, rung * HOLD_PER_ALARM_S)
                    if self._collector.hold(now + hold):
                        logger.info("%d alarms at once: garbage collection held off for %.1fs", rung, hold)
                self._changed = trio.Event()
                with trio.move_on_at(min(self.next_deadline(), self._collector.until)):
                    await self._changed.wait()
        finally:
            self._collector.release()


class CollectorHold:
    """Keeps Python's cyclic garbage collector disabled until a deadline (trio time).

    It only undoes its own doing: a collector that was disabled already (by an
    embedding application, a test) is left disabled.
    """

    def __init__(self) -> None:
        #: when the collector is enabled again (``inf`` when not held)
        self.until = math.inf

    @property
    def held(self) -> bool:
        return self.until < math.inf

    def hold(self, until: float) -> bool:
        """Hold the collector off until ``until`` at least; whether it is held now."""
        if not self.held:
            if not gc.isenabled():
                return False
            gc.disable()
            self.until = until
        else:
            self.until = max(self.until, until)
        return True

    def release_due(self, now: float) -> None:
        if now >= self.until:
            self.release()

    def release(self) -> None:
        if self.held:
            self.until = math.inf
            gc.enable()
