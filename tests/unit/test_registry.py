"""The supervisor's registry of jobs and its crash policy (synchronous units)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import trio
import trio.testing

from termjobs.actors.protocol import ActorExit
from termjobs.actors.registry import Registry
from termjobs.actors.restarts import CrashPolicy
from termjobs.storage import ScheduleEntry
from tests.helpers import EPOCH, make_job

PREWARM = dt.timedelta(seconds=5)
SECOND = dt.timedelta(seconds=1)


def index() -> list[ScheduleEntry]:
    return [
        ScheduleEntry("busy", True, EPOCH + 3600 * SECOND),
        ScheduleEntry("soon", True, EPOCH + 4 * SECOND),
        ScheduleEntry("later", True, EPOCH + 60 * SECOND),
        ScheduleEntry("paused", False, EPOCH + 2 * SECOND),
        ScheduleEntry("manual", True, None),
    ]


def test_jobs_with_runs_or_a_fire_within_prewarm_are_awake_the_others_wait_for_their_fire() -> None:
    registry = Registry(PREWARM)
    awake = registry.register(index(), busy={"busy"}, now=EPOCH, hibernate=True)
    assert awake == ["busy", "soon"]
    assert len(registry) == 5 and registry.job_ids() == {"busy", "soon", "later", "paused", "manual"}
    assert registry.wakeups.get("later") == EPOCH + 60 * SECOND
    assert registry.wakeups.get("paused") is None and registry.wakeups.get("manual") is None
    assert registry.changed.is_set()  # a waker must look at the new earliest wake-up
    assert registry.due(EPOCH + 54 * SECOND) == {}
    assert registry.due(EPOCH + 55 * SECOND) == {"later": EPOCH + 60 * SECOND}


def test_without_hibernation_every_job_is_awake() -> None:
    registry = Registry(PREWARM)
    awake = registry.register(index(), busy=set(), now=EPOCH, hibernate=False)
    assert awake == ["busy", "soon", "later", "paused", "manual"]
    assert len(registry.wakeups) == 0


def test_a_job_being_woken_is_not_due_twice() -> None:
    registry = Registry(PREWARM)
    registry.register(index(), busy=set(), now=EPOCH, hibernate=True)
    entry = registry.get("later")
    assert entry is not None and entry.idle
    entry.waking = trio.Event()
    assert registry.due(EPOCH + 3600 * SECOND) == {"busy": EPOCH + 3600 * SECOND}


def test_a_hibernating_actor_leaves_a_wake_up_a_deleted_one_leaves_nothing() -> None:
    registry = Registry(PREWARM)
    job = dataclasses.replace(make_job("j"), next_run_at=EPOCH + 30 * SECOND)
    entry = registry.add(job.id)
    registry.retire(entry, ActorExit("hibernated", job))
    assert job.id in registry and registry.wakeups.get(job.id) == EPOCH + 30 * SECOND
    registry.retire(entry, ActorExit("deleted", job))
    assert job.id not in registry and registry.wakeups.get(job.id) is None


def test_a_paused_job_hibernates_without_a_wake_up() -> None:
    registry = Registry(PREWARM)
    job = dataclasses.replace(make_job("j", enabled=False), next_run_at=EPOCH + 30 * SECOND)
    registry.retire(registry.add(job.id), ActorExit("hibernated", job))
    assert job.id in registry and registry.wakeups.get(job.id) is None


def test_a_lost_idle_job_is_forgotten_at_once_and_a_leaving_job_is_not_run_here() -> None:
    registry = Registry(PREWARM)
    registry.register(index(), busy=set(), now=EPOCH, hibernate=True)
    assert registry.lose("later") is True
    assert "later" not in registry and registry.wakeups.get("later") is None
    assert registry.lose("unknown") is False
    registry.leaving.add("manual")
    assert "manual" in registry and not registry.runs_job("manual") and registry.runs_job("soon")
    assert {entry.job_id for entry in registry.clear()} == {"busy", "soon", "paused", "manual"}
    assert len(registry) == 0 and not registry.leaving


async def test_crashes_back_off_doubling_and_too_many_in_the_window_fault_the_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = CrashPolicy(max_restarts=3, window=60.0)
    delays = []
    for _ in range(3):
        assert policy.may_restart()
        delays.append(policy.backoff())
    assert delays == [0.5, 1.0, 2.0]
    assert not policy.may_restart()  # a fourth crash within a minute
    await trio.sleep(61)
    assert policy.may_restart() and len(policy) == 1 and policy.backoff() == 0.5
