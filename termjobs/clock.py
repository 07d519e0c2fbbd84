"""Wall-clock time, injected.

Nothing outside this module reads the wall clock. Components take a :class:`Clock` and
ask it for ``now()`` and for the trio deadline that corresponds to a wall-clock instant.

``VirtualClock`` derives wall time from ``trio.current_time()``: under trio's
``MockClock(autojump_threshold=0)`` a test that waits for a cron fire thirty days away
runs in milliseconds and observes exact timestamps.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Protocol

import trio

UTC = dt.UTC


class Clock(Protocol):
    """Source of wall-clock time for the whole service."""

    def now(self) -> dt.datetime:
        """The current instant, timezone-aware in UTC."""
        ...

    def deadline_for(self, when: dt.datetime) -> float:
        """The trio deadline (``trio.current_time()`` scale) at which ``when`` is reached.

        Sleeping until this deadline must be followed by a check of ``now()``: a real
        wall clock can jump, so callers treat the deadline as a hint and loop.
        """
        ...


class SystemClock:
    """The real wall clock.

    Deadlines are capped at ``max_sleep`` seconds in the future so that a wall-clock
    jump (NTP step, suspend/resume, manual change) is noticed within that bound.
    """

    def __init__(self, *, max_sleep: float = 30.0) -> None:
        self._max_sleep = max_sleep

    def now(self) -> dt.datetime:
        return dt.datetime.now(UTC)

    def deadline_for(self, when: dt.datetime) -> float:
        delay = (when - self.now()).total_seconds()
        return trio.current_time() + max(0.0, min(delay, self._max_sleep))


class VirtualClock:
    """Wall time that advances exactly with trio's clock.

    ``now() == epoch + (trio.current_time() - t0)``, where ``t0`` is trio's time when
    the clock is first used. Must be used inside ``trio.run``.
    """

    def __init__(self, epoch: dt.datetime, *, max_sleep: float = math.inf) -> None:
        if epoch.tzinfo is None:
            raise ValueError("VirtualClock epoch must be timezone-aware")
        self._epoch = epoch.astimezone(UTC)
        self._t0: float | None = None
        self._max_sleep = max_sleep

    def jump(self, delta: dt.timedelta) -> None:
        """Step the wall clock by ``delta`` without trio time passing (an NTP step,
        a suspended laptop waking up). Use ``max_sleep`` to model how soon the
        service notices, as :class:`SystemClock` does."""
        self._epoch += delta

    def _origin(self) -> float:
        if self._t0 is None:
            self._t0 = trio.current_time()
        return self._t0

    def now(self) -> dt.datetime:
        elapsed = trio.current_time() - self._origin()
        return self._epoch + dt.timedelta(seconds=elapsed)

    def deadline_for(self, when: dt.datetime) -> float:
        offset = (when - self._epoch).total_seconds()
        deadline = self._origin() + offset
        return min(deadline, trio.current_time() + self._max_sleep)


def deadline_or_inf(clock: Clock, when: dt.datetime | None) -> float:
    """``clock.deadline_for(when)``, or ``math.inf`` when there is nothing to wait for."""
    return math.inf if when is None else clock.deadline_for(when)


async def sleep_until(clock: Clock, when: dt.datetime) -> None:
    """Sleep until the wall clock reads ``when`` or later."""
    while clock.now() < when:
        deadline = clock.deadline_for(when)
        if deadline <= trio.current_time():
            return  # reached, up to float rounding of the virtual clock
        await trio.sleep_until(deadline)
