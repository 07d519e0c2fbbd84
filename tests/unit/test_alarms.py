"""The one timer of every awake actor (virtual time)."""

from __future__ import annotations

import gc

import trio
import trio.testing

from termjobs.actors.alarms import HOLD_PER_ALARM_S, Alarms


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


async def test_a_crowd_holds_the_garbage_collector_off_while_it_fires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    assert gc.isenabled()
    alarms = Alarms(crowd=1000)
    start = trio.current_time()
    seen: list[tuple[float, bool]] = []

    def look() -> None:
        seen.append((round(trio.current_time() - start, 3), gc.isenabled()))

    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(alarms.run)
            for i in range(999):  # not a crowd
                alarms.set(("small", i), start + 10, lambda: None)
            for i in range(1000):  # a crowd: the collector is held off for `hold` seconds
                alarms.set(("crowd", i), start + 20, lambda: None)
            hold = 1000 * HOLD_PER_ALARM_S
            for at in (5, 10.001, 20.001, 20 + hold - 0.001, 20 + hold + 0.001, 25):
                alarms.set(("look", at), start + at, look)
            await trio.sleep(30)
            alarms.set(("crowd again", 0), start + 40, lambda: None)
            for i in range(1, 1000):
                alarms.set(("crowd again", i), start + 40, lambda: None)
            alarms.set("look again", start + 40 + hold / 4, look)
            await trio.sleep_until(start + 40 + hold / 2)
            assert not gc.isenabled()
            nursery.cancel_scope.cancel()  # while the second crowd holds the collector off
        assert seen == [
            (5, True),
            (10.001, True),
            (20.001, False),
            (round(20 + hold - 0.001, 3), False),
            (round(20 + hold + 0.001, 3), True),
            (25, True),
            (round(40 + hold / 4, 3), False),
        ]
        assert gc.isenabled()  # the task ended: the hold with it
    finally:
        gc.enable()


async def test_a_collector_disabled_by_someone_else_stays_disabled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    alarms = Alarms(crowd=10)
    gc.disable()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(alarms.run)
            for i in range(10):
                alarms.set(i, trio.current_time() + 1, lambda: None)
            await trio.sleep(60)
            nursery.cancel_scope.cancel()
        assert not gc.isenabled()
    finally:
        gc.enable()
