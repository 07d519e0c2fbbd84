"""Concurrency, retry and misfire policies under the virtual clock (exact times)."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import pytest
import trio
import trio.testing
from sqlalchemy.engine import URL

from termjobs.errors import Conflict
from termjobs.model import ExitReason, RunStatus, RunTrigger
from tests.helpers import EPOCH, at, cron_body, harness, job_body

SECOND = dt.timedelta(seconds=1)


def slow(seconds: float, **config: object) -> dict[str, Any]:
    return {"command": "x", "seconds": seconds, **config}


class FixedJitter(random.Random):
    """A random source whose ``uniform`` always picks one end of the range."""

    def __init__(self, end: str) -> None:
        super().__init__(0)
        self.end = end

    def uniform(self, a: float, b: float) -> float:
        return a if self.end == "low" else b


# ---------------------------------------------------------------------- concurrency


async def test_replace_stops_the_oldest_run_and_starts_the_new_one_when_it_has_stopped(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("r", runner_config=slow(1000), concurrency_policy="replace"))
        old = await h.trigger(job.id)
        await trio.sleep(10)
        new = await h.trigger(job.id)
        replaced = await h.wait_final(old.id)
        assert replaced.status is RunStatus.CANCELLED and replaced.exit_reason is ExitReason.CANCELLED
        assert replaced.error == "cancelled: replaced by a newer run (concurrency_policy replace)"
        assert replaced.finished_at == EPOCH + 10 * SECOND
        await trio.sleep(1)
        current = await h.run(new.id)
        assert current.status is RunStatus.RUNNING and current.started_at == EPOCH + 10 * SECOND


async def test_replace_also_applies_to_scheduled_fires(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(
            cron_body(
                "cr",
                "*/10 * * * *",
                runner_config=slow(1000),
                concurrency_policy="replace",
                timeout_seconds=3600,
            )
        )
        await trio.sleep(35 * 60)
        runs = await h.runs(job.id)
        assert [(r.scheduled_for.strftime("%H:%M"), r.status.value) for r in runs] == [
            ("12:10", "cancelled"),
            ("12:20", "cancelled"),
            ("12:30", "running"),
        ]


async def test_queue_runs_every_trigger_in_order_one_at_a_time(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("q", runner_config=slow(60), concurrency_policy="queue"))
        runs = [await h.trigger(job.id) for _ in range(4)]
        await trio.sleep(300)
        finals = [await h.run(r.id) for r in runs]
        assert [f.status for f in finals] == [RunStatus.SUCCEEDED] * 4
        assert [f.started_at for f in finals] == [EPOCH + i * 60 * SECOND for i in range(4)]


async def test_queue_with_two_slots(sqlite_url: URL, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(sqlite_url) as h:
        body = job_body("q2", runner_config=slow(60), concurrency_policy="queue", max_concurrent_runs=2)
        job = await h.create(body)
        runs = [await h.trigger(job.id) for _ in range(5)]
        await trio.sleep(400)
        starts = [(await h.run(r.id)).started_at for r in runs]
        assert starts == [EPOCH, EPOCH, EPOCH + 60 * SECOND, EPOCH + 60 * SECOND, EPOCH + 120 * SECOND]


async def test_lowering_the_limit_applies_to_runs_not_yet_started(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(
            job_body("l", runner_config=slow(60), concurrency_policy="queue", max_concurrent_runs=3)
        )
        first = await h.trigger(job.id)
        await h.update(job.id, {"max_concurrent_runs": 1})
        second = await h.trigger(job.id)
        await trio.sleep(200)
        assert (await h.run(second.id)).started_at == (await h.run(first.id)).finished_at


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("backoff", "starts"),
    [
        ("fixed", [0, 11, 22, 33]),  # each attempt runs 1 s, then waits 10 s
        ("linear", [0, 11, 32, 63]),  # 10, 20, 30
        ("exponential", [0, 11, 32, 73]),  # 10, 20, 40
    ],
)
async def test_each_backoff_schedules_retries_at_exact_times(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, backoff: str, starts: list[int]
) -> None:
    policy = {"max_attempts": 4, "backoff": backoff, "initial_delay": "10s", "max_delay": "1m"}
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("b", runner_config=slow(1, error="nope"), retry_policy=policy))
        await h.trigger(job.id)
        await trio.sleep(600)
        runs = await h.runs(job.id)
        assert [r.started_at for r in runs] == [EPOCH + s * SECOND for s in starts]
        assert [r.attempt for r in runs] == [1, 2, 3, 4]


@pytest.mark.parametrize(("end", "delay"), [("low", 80), ("high", 120)])
async def test_jitter_moves_the_delay_within_its_percentage(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, end: str, delay: int
) -> None:
    policy = {"max_attempts": 2, "initial_delay": "100s", "jitter_pct": 20}
    async with harness(sqlite_url, rng=FixedJitter(end)) as h:
        job = await h.create(job_body("j", runner_config=slow(1, error="nope"), retry_policy=policy))
        first = await h.trigger(job.id)
        await trio.sleep(600)
        retry = (await h.runs(job.id))[1]
        finished = (await h.run(first.id)).finished_at
        assert finished is not None and retry.scheduled_for == finished + delay * SECOND


async def test_timed_out_runs_retry_but_cancelled_ones_do_not(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    policy = {"max_attempts": 3, "initial_delay": "5s"}
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("t", runner_config=slow(100), timeout_seconds=10, retry_policy=policy))
        await h.trigger(job.id)
        await trio.sleep(12)
        runs = await h.runs(job.id)
        assert [(r.status, r.trigger) for r in runs] == [
            (RunStatus.TIMED_OUT, RunTrigger.MANUAL),
            (RunStatus.QUEUED, RunTrigger.RETRY),
        ]
        await trio.sleep(5)
        await h.cancel(runs[1].id)
        await trio.sleep(100)
        assert [r.status for r in await h.runs(job.id)] == [RunStatus.TIMED_OUT, RunStatus.CANCELLED]


async def test_a_retry_due_while_the_job_is_paused_is_skipped(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    policy = {"max_attempts": 2, "initial_delay": "1m"}
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("p", runner_config=slow(1, error="nope"), retry_policy=policy))
        await h.trigger(job.id)
        await trio.sleep(5)
        await h.update(job.id, {"enabled": False})
        await trio.sleep(120)
        retry = (await h.runs(job.id))[1]
        assert retry.status is RunStatus.SKIPPED and retry.error == "skipped: the job is paused"
        assert retry.finished_at == EPOCH + 61 * SECOND
        (event,) = [e for e in await h.events(retry.id) if e.event_type.value == "skipped"]
        assert event.data == {"reason": "paused"}
        assert h.runner.starts[-1][0] != retry.id


async def test_a_retry_due_while_another_run_is_active_obeys_forbid(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    policy = {"max_attempts": 2, "initial_delay": "30s"}
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("f", runner_config=slow(1, error="nope"), retry_policy=policy))
        await h.trigger(job.id)
        await trio.sleep(2)
        # a longer-running manual run holds the only slot when the retry comes due
        await h.update(job.id, {"runner_config": slow(100)})
        with pytest.raises(Conflict):  # the queued retry already counts as active
            await h.trigger(job.id)
        await trio.sleep(200)
        statuses = [r.status for r in await h.runs(job.id)]
        assert statuses == [RunStatus.FAILED, RunStatus.SUCCEEDED]


# --------------------------------------------------------------------------- misfire


async def test_a_wall_clock_jump_is_treated_as_a_misfire(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url, max_sleep=30) as h:
        job = await h.create(cron_body("hourly", "0 * * * *"))
        await trio.sleep(600)
        h.clock.jump(dt.timedelta(hours=3))  # 12:10 -> 15:10 without time passing
        await trio.sleep(31)
        (run,) = await h.runs(job.id)
        assert run.status is RunStatus.SKIPPED and run.scheduled_for == at("2026-03-01T13:00:00Z")
        (event,) = await h.events(run.id)
        assert (
            isinstance(event.data, dict) and event.data["missed"] == 3 and event.data["reason"] == "misfire"
        )
        current = await h.job(job.id)
        assert current is not None and current.next_run_at == at("2026-03-01T16:00:00Z")
        await trio.sleep(3600)
        assert [r.status for r in await h.runs(job.id)] == [RunStatus.SKIPPED, RunStatus.SUCCEEDED]


async def test_a_fire_late_by_less_than_the_grace_runs_normally(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url, max_sleep=30) as h:
        job = await h.create(cron_body("grace", "0 13 * * *", misfire_grace_seconds=300))
        await trio.sleep(50 * 60)
        h.clock.jump(dt.timedelta(minutes=12))  # 12:50 -> 13:02: 2 minutes late
        await trio.sleep(40)
        (run,) = await h.runs(job.id)
        assert run.status is RunStatus.SUCCEEDED and run.scheduled_for == at("2026-03-01T13:00:00Z")


async def test_a_once_job_missed_beyond_its_grace_is_skipped_and_disabled(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        body = job_body("o", trigger_type="once", trigger_config={"run_at": "2026-03-01T13:00:00Z"})
        job = await h.create(body)
    async with harness(sqlite_url, epoch=at("2026-03-01T18:00:00Z")) as h:
        await trio.sleep(1)
        (run,) = await h.runs(job.id)
        assert run.status is RunStatus.SKIPPED and run.scheduled_for == at("2026-03-01T13:00:00Z")
        current = await h.job(job.id)
        assert current is not None and not current.spec.enabled and current.next_run_at is None
