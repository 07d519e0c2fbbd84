"""Idle job actors hibernate and come back when their fire is near or a request arrives."""

from __future__ import annotations

import trio
import trio.testing
from sqlalchemy.engine import URL

from termjobs.actors.job import HIBERNATE_IDLE_S
from termjobs.model import RunStatus
from tests.helpers import EPOCH, at, cron_body, harness, job_body


async def test_idle_actors_hibernate_and_wake_before_their_fire(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        sup = h.services.supervisor
        hourly = await h.create(cron_body("hourly", "0 * * * *"))
        manual = await h.create(job_body("manual"))
        assert sup.awake_count == 2
        await trio.sleep(HIBERNATE_IDLE_S + 1)
        assert (sup.job_count, sup.awake_count) == (2, 0)
        await trio.sleep(3600 - HIBERNATE_IDLE_S)  # 12:59:59: woken by now, ahead of 13:00
        assert sup.awake_count == 1
        await trio.sleep(2)
        (run,) = await h.runs(hourly.id)
        assert run.started_at == at("2026-03-01T13:00:00Z")  # exactly on time
        await trio.sleep(HIBERNATE_IDLE_S + 5)
        assert sup.awake_count == 0
        # a request wakes a hibernating actor
        triggered = await h.trigger(manual.id)
        assert (await h.wait_final(triggered.id)).status is RunStatus.SUCCEEDED


async def test_scheduled_jobs_hibernate_under_a_clock_that_caps_its_sleeps(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    # The real clock wakes sleepers at least every 30 s (to notice clock jumps).
    async with harness(sqlite_url, max_sleep=30) as h:
        job = await h.create(cron_body("daily", "0 3 * * *"))
        await trio.sleep(HIBERNATE_IDLE_S + 31)
        assert h.services.supervisor.awake_count == 0
        await trio.sleep(15 * 3600)  # past 03:00 the next day
        (run,) = await h.runs(job.id)
        assert run.started_at == at("2026-03-02T03:00:00Z")


async def test_requests_racing_with_hibernation_are_never_lost(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("racy"))
        names = []
        for i in range(6):
            # arrive right at the moment the actor decides to hibernate, and around it
            await trio.sleep(HIBERNATE_IDLE_S - 0.001 * i)
            names.append((await h.update(job.id, {"name": f"racy-{i}"})).spec.name)
        assert names == [f"racy-{i}" for i in range(6)]
        current = await h.job(job.id)
        assert current is not None and current.spec.name == "racy-5"


async def test_a_job_with_a_running_run_stays_awake(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("long", runner_config={"command": "x", "seconds": 200}))
        run = await h.trigger(job.id)
        await trio.sleep(150)
        assert h.services.supervisor.awake_count == 1
        await trio.sleep(HIBERNATE_IDLE_S + 60)
        assert (await h.run(run.id)).finished_at == EPOCH.replace(minute=3, second=20)
        assert h.services.supervisor.awake_count == 0


async def test_hibernated_jobs_are_not_loaded_at_start_up(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        for i in range(20):
            await h.create(cron_body(f"daily-{i}", f"{i} 3 * * *"))
        await h.create(cron_body("soon", "1 12 * * *"))
    async with harness(sqlite_url) as h:
        sup = h.services.supervisor
        assert (sup.job_count, sup.awake_count) == (21, 0)
        await trio.sleep(57)  # 12:00:57: "soon" (12:01) is within its prewarm
        assert sup.awake_count == 1
        await trio.sleep(10)
        runs = await h.runs()
        assert [r.scheduled_for for r in runs] == [at("2026-03-01T12:01:00Z")]
