"""The one timer of every awake actor (virtual time)."""

from __future__ import annotations

import trio
import trio.testing

from termjobs.actors.alarms import Alarms


def test_due_alarms_ring_in_time_order_and_only_their_latest_setting() -> None:
    alarms = Alarms()
    rung: list[str] = []
    alarms.set("a", 10.0, lambda: rung.append("a"))
    alarms.set("b", 5.0, lambda: rung.append("b"))
    alarms.set("c", 7.0, lambda: rung.append("c"))
    alarms.set("a", 6.0, lambda: rung.append("a again"))  # replaces a's alarm
    alarms.discard("c")
    assert alarms.next_deadline() == 5.0 and len(alarms) == 2
    assert alarms.ring_due(5.5) == 1 and rung == ["b"]
    assert alarms.ring_due(100.0) == 1 and rung == ["b", "a again"]
    assert len(alarms) == 0 and alarms.next_deadline() == float("inf")


def test_outdated_entries_are_swept_when_they_pile_up() -> None:
    alarms = Alarms()
    for round_ in range(3000):
        alarms.set("actor", 1000.0 + round_, lambda: None)  # an actor re-arming at every message
    assert len(alarms) == 1 and len(alarms._queue._heap) < 2100
    assert alarms.next_deadline() == 3999.0


async def test_the_task_rings_each_alarm_at_its_deadline(autojump_clock: trio.testing.MockClock) -> None:
    alarms = Alarms()
    rung: list[tuple[str, float]] = []
    start = trio.current_time()

    def ring(name: str) -> None:
        rung.append((name, trio.current_time() - start))

    async with trio.open_nursery() as nursery:
        await nursery.start(alarms.run)
        alarms.set("late", start + 30, lambda: ring("late"))
        await trio.sleep(1)
        alarms.set("early", start + 10, lambda: ring("early"))  # earlier than the one waited for
        alarms.set("gone", start + 20, lambda: ring("gone"))
        alarms.discard("gone")
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    assert rung == [("early", 10.0), ("late", 30.0)]
