"""The wake-up queue of hibernating jobs (pure, synchronous)."""

from __future__ import annotations

import datetime as dt
import random

from termjobs.actors.wakeups import MAX_LEAD, WAKE_RATE, DeadlineQueue, WakeSchedule
from tests.helpers import EPOCH

PREWARM = dt.timedelta(seconds=5)
SECOND = dt.timedelta(seconds=1)


def test_jobs_come_due_prewarm_before_their_fire_in_time_order() -> None:
    wakeups = WakeSchedule(PREWARM)
    assert wakeups.set("b", EPOCH + 20 * SECOND) is True  # the first entry is the earliest
    assert wakeups.set("a", EPOCH + 10 * SECOND) is True
    assert wakeups.set("c", EPOCH + 300 * SECOND) is False  # far from a crowd: nothing moves
    assert wakeups.next_wake() == EPOCH + 5 * SECOND
    assert wakeups.pop_due(EPOCH + 4 * SECOND) == []
    assert wakeups.pop_due(EPOCH + 15 * SECOND) == [("a", EPOCH + 10 * SECOND), ("b", EPOCH + 20 * SECOND)]
    assert len(wakeups) == 1 and wakeups.get("c") == EPOCH + 300 * SECOND


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


def lead(ahead: int) -> dt.timedelta:
    """How much earlier than prewarm a job with ``ahead`` others before it is woken."""
    return dt.timedelta(seconds=ahead / WAKE_RATE)


def test_a_crowd_due_together_is_woken_early_enough_to_start_every_actor_before_its_fire() -> None:
    wakeups = WakeSchedule(PREWARM)
    fire = EPOCH + 600 * SECOND
    for i in range(50_000):
        wakeups.set(f"crowd-{i}", fire)
    wakeups.set("lone", EPOCH + 1200 * SECOND)
    # Starting 50,000 actors takes 50,000 / WAKE_RATE s: the crowd is woken that much earlier.
    assert SECOND < lead(49_999) < MAX_LEAD
    assert wakeups.next_wake() == fire - PREWARM - lead(49_999)
    assert wakeups.pop_due(fire - PREWARM - lead(49_999) - SECOND) == []
    woken = wakeups.pop_due(fire - PREWARM - lead(49_999))
    assert len(woken) == 50_000 and {at for _, at in woken} == {fire}
    # A job due alone is still woken prewarm before its fire.
    assert wakeups.next_wake() == EPOCH + 1195 * SECOND
    assert wakeups.pop_due(EPOCH + 1195 * SECOND) == [("lone", EPOCH + 1200 * SECOND)]


def test_a_job_due_just_before_a_crowd_is_woken_with_it_and_rescheduled_ones_leave_it() -> None:
    wakeups = WakeSchedule(PREWARM)
    fire = EPOCH + 600 * SECOND
    wakeups.set("early", fire)
    for i in range(40_000):
        wakeups.set(f"crowd-{i}", fire + SECOND)
    assert lead(40_000) > 2 * SECOND  # the crowd's wake-up comes before the early job's
    assert wakeups.next_wake() == fire + SECOND - PREWARM - lead(40_000)
    for i in range(20_000):  # half the crowd moves to the next hour: the rest need less lead
        wakeups.set(f"crowd-{2 * i}", EPOCH + 3600 * SECOND)
    assert wakeups.next_wake() == fire + SECOND - PREWARM - lead(20_000)
    assert wakeups.pop_due(fire + SECOND - PREWARM - lead(20_000) - SECOND) == []
    woken = wakeups.pop_due(fire + SECOND - PREWARM - lead(20_000))
    assert len(woken) == 20_001 and woken[0] == ("early", fire)
    assert wakeups.next_wake() == EPOCH + 3595 * SECOND - lead(19_999)


def test_a_crowd_is_never_woken_more_than_max_lead_before_prewarm() -> None:
    wakeups = WakeSchedule(PREWARM)
    fire = EPOCH + 600 * SECOND
    crowd = int(MAX_LEAD.total_seconds() * WAKE_RATE) + 1000
    for i in range(crowd):
        wakeups.set(f"crowd-{i}", fire)
    assert wakeups.next_wake() == fire - PREWARM - MAX_LEAD


def test_a_crowd_put_back_after_a_failed_wake_up_waits_for_the_hold() -> None:
    wakeups = WakeSchedule(PREWARM)
    now = EPOCH + 600 * SECOND
    for i in range(10_000):  # woken, failed (storage down), put back a second on
        wakeups.set(f"crowd-{i}", now + SECOND + PREWARM)
    again = wakeups.next_wake()
    assert again is not None and again < now  # due again at once...
    wakeups.hold_until(now + SECOND)
    assert wakeups.next_wake() == now + SECOND  # ...but not before the retry
    assert wakeups.pop_due(now + SECOND / 2) == []
    assert len(wakeups.pop_due(now + SECOND)) == 10_000
    wakeups.set("later", now + 100 * SECOND)
    assert wakeups.next_wake() == now + 95 * SECOND  # the hold is over


def test_a_job_a_second_into_the_window_still_moves_the_crowd_s_wake_up() -> None:
    wakeups = WakeSchedule(PREWARM)
    first = EPOCH + 600 * SECOND + dt.timedelta(milliseconds=900)
    assert wakeups.set("first", first) is True
    crowd_at = first + MAX_LEAD + dt.timedelta(milliseconds=50)  # in the window's last second
    assert wakeups.set("crowd-0", crowd_at) is True  # the waker must look again


def test_the_deadline_queue_agrees_with_a_plain_model_through_any_changes() -> None:
    """Keys sharing a time share one heap entry; moved, dropped and re-added keys,
    and the rebuilds of a heap of outdated times, never change what comes due."""
    rng = random.Random(7)
    queue: DeadlineQueue[str, float] = DeadlineQueue()
    model: dict[str, float] = {}
    order: dict[str, int] = {}  # when each key was last set to a new time
    now = 0.0
    for step in range(30_000):
        key = f"k{rng.randrange(300)}"
        action = rng.random()
        if action < 0.6:
            at = now + rng.choice([1.0, 2.0, 5.0, rng.uniform(0, 50)])
            earliest = min(model.values(), default=None)
            moved = queue.set(key, at)
            assert moved == (earliest is None or at < earliest) or model.get(key) == at
            if model.get(key) != at:
                model[key], order[key] = at, step
        elif action < 0.8:
            assert queue.discard(key) == model.pop(key, None)
        else:
            now += rng.uniform(0, 3)
            due = queue.pop_due(now)
            expected = sorted((at, order[k], k) for k, at in model.items() if at <= now)
            assert due == [(k, at) for at, _, k in expected]
            for k, _ in due:
                del model[k]
        assert len(queue) == len(model)
        assert queue.next_due() == min(model.values(), default=None)


def test_a_crowd_due_at_one_time_comes_due_at_once_in_the_order_it_was_set() -> None:
    queue: DeadlineQueue[int, float] = DeadlineQueue()
    for key in range(10_000):
        queue.set(key, 60.0)
    queue.set(5, 61.0)  # one moves away
    assert queue.pop_due(59.9) == []
    assert [key for key, _ in queue.pop_due(60.0)] == [k for k in range(10_000) if k != 5]
    assert queue.pop_due(100.0) == [(5, 61.0)] and queue.next_due() is None
