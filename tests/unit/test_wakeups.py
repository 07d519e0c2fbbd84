"""The wake-up queue of hibernating jobs (pure, synchronous)."""

from __future__ import annotations

import datetime as dt

from termjobs.actors.wakeups import WakeSchedule
from tests.helpers import EPOCH

PREWARM = dt.timedelta(seconds=5)
SECOND = dt.timedelta(seconds=1)


def test_jobs_come_due_prewarm_before_their_fire_in_time_order() -> None:
    wakeups = WakeSchedule(PREWARM)
    assert wakeups.set("b", EPOCH + 20 * SECOND) is True  # the first entry is the earliest
    assert wakeups.set("a", EPOCH + 10 * SECOND) is True
    assert wakeups.set("c", EPOCH + 30 * SECOND) is False
    assert wakeups.next_wake() == EPOCH + 5 * SECOND
    assert wakeups.pop_due(EPOCH + 4 * SECOND) == []
    assert wakeups.pop_due(EPOCH + 15 * SECOND) == [("a", EPOCH + 10 * SECOND), ("b", EPOCH + 20 * SECOND)]
    assert len(wakeups) == 1 and wakeups.get("c") == EPOCH + 30 * SECOND


def test_replaced_and_discarded_entries_never_come_due() -> None:
    wakeups = WakeSchedule(PREWARM)
    wakeups.set("a", EPOCH + 10 * SECOND)
    wakeups.set("a", EPOCH + 100 * SECOND)  # rescheduled
    wakeups.set("b", EPOCH + 10 * SECOND)
    assert wakeups.discard("b") == EPOCH + 10 * SECOND
    assert wakeups.discard("b") is None
    assert wakeups.next_wake() == EPOCH + 95 * SECOND
    assert wakeups.pop_due(EPOCH + 60 * SECOND) == []
    assert wakeups.pop_due(EPOCH + 95 * SECOND) == [("a", EPOCH + 100 * SECOND)]
    assert wakeups.next_wake() is None and len(wakeups) == 0


def test_many_reschedules_keep_the_heap_small() -> None:
    wakeups = WakeSchedule(PREWARM)
    for i in range(5000):
        wakeups.set("busy", EPOCH + i * SECOND)
    assert len(wakeups._heap) < 3000  # outdated entries are swept, not kept forever
    assert wakeups.pop_due(EPOCH + 10_000 * SECOND) == [("busy", EPOCH + 4999 * SECOND)]
