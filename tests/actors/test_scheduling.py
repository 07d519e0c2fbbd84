"""Job actors firing cron and once jobs under the virtual clock (exact times)."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing
from sqlalchemy.engine import URL

from termjobs.errors import Conflict
from termjobs.model import RunStatus, RunTrigger
from tests.helpers import EPOCH, at, cron_body, harness, job_body

DAY = 86400


async def test_cron_job_fires_daily_at_its_local_time_for_a_month_across_dst(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("daily", "0 3 * * *", "America/New_York"))
        assert job.next_run_at == at("2026-03-02T08:00:00Z")
        await trio.sleep(30 * DAY)
        runs = await h.runs(job.id)
        assert len(runs) == 30
        fired = [run.scheduled_for for run in runs]
        # 03:00 EST is 08:00Z until the March 8 spring-forward, then 03:00 EDT = 07:00Z
        assert fired[:6] == [at(f"2026-03-0{d}T08:00:00Z") for d in range(2, 8)]
        assert fired[5] == at("2026-03-07T08:00:00Z")
        assert fired[6] == at("2026-03-08T07:00:00Z")
        assert fired[-1] == at("2026-03-31T07:00:00Z")
        for run in runs:
            assert run.trigger is RunTrigger.SCHEDULE and run.status is RunStatus.SUCCEEDED
            assert run.started_at == run.scheduled_for  # no lag in virtual time
            assert run.finished_at == run.scheduled_for + dt.timedelta(seconds=1)
        current = await h.job(job.id)
        assert current is not None and current.next_run_at == at("2026-04-01T07:00:00Z")


async def test_scheduled_run_timeline(sqlite_url: URL, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("tick", "*/5 * * * *"))
        await trio.sleep(5 * 60 + 30)
        (run,) = await h.runs(job.id)
        events = await h.events(run.id)
        assert [e.event_type.value for e in events] == ["queued", "claimed", "running", "succeeded"]
        assert events[0].message == "scheduled run queued"
        assert events[0].data == {"trigger": "schedule", "attempt": 1}
        assert [e.created_at for e in events] == [at("2026-03-01T12:05:00Z")] * 3 + [
            at("2026-03-01T12:05:01Z")
        ]
        assert events[-1].data == {
            "status": "succeeded",
            "attempt": 1,
            "session_id": "",
            "exit_code": 0,
            "error": "",
            "exit_reason": "natural_completion",
            "truncated": False,
            "turn_count": 0,
            "input_tokens": 0,
            "output_tokens": 0,
        }


async def test_once_job_fires_at_run_at_then_disables_itself(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        body = job_body(
            "one-off", trigger_type="once", trigger_config={"run_at": "2026-03-01T14:30:00+01:00"}
        )
        job = await h.create(body)
        assert job.next_run_at == at("2026-03-01T13:30:00Z")
        await trio.sleep(DAY)
        (run,) = await h.runs(job.id)
        assert run.scheduled_for == at("2026-03-01T13:30:00Z") and run.started_at == run.scheduled_for
        assert run.status is RunStatus.SUCCEEDED
        fired = await h.job(job.id)
        assert fired is not None and not fired.spec.enabled and fired.next_run_at is None
        # resuming does not re-arm a once job that already fired...
        resumed = await h.update(job.id, {"enabled": True})
        assert resumed.spec.enabled and resumed.next_run_at is None
        await trio.sleep(DAY)
        assert len(await h.runs(job.id)) == 1
        # ...but giving it a new run_at does
        rearmed = await h.update(job.id, {"trigger_config": {"run_at": "2026-03-03T09:00:00Z"}})
        assert rearmed.next_run_at == at("2026-03-03T09:00:00Z")
        await trio.sleep(DAY)
        assert [r.scheduled_for for r in await h.runs(job.id)][-1] == at("2026-03-03T09:00:00Z")


async def test_once_job_with_a_run_at_in_the_past_fires_at_once_within_grace(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(
            job_body("late", trigger_type="once", trigger_config={"run_at": "2026-03-01T11:59:30Z"})
        )
        await trio.sleep(10)
        (run,) = await h.runs(job.id)
        assert run.status is RunStatus.SUCCEEDED and run.started_at == EPOCH


async def test_disabled_jobs_do_not_fire_and_resume_computes_from_now(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("paused", "0 * * * *", enabled=False))
        assert job.next_run_at is None
        await trio.sleep(5 * 3600)
        assert await h.runs(job.id) == []
        with pytest.raises(Conflict, match="job is disabled; resume it"):
            await h.trigger(job.id)
        resumed = await h.update(job.id, {"enabled": True})
        assert resumed.next_run_at == at("2026-03-01T18:00:00Z")  # no catch-up of paused fires
        paused = await h.update(job.id, {"enabled": False})
        assert paused.next_run_at is None


async def test_edits_recompute_next_run_only_when_the_schedule_changes(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("edit", "0 0 * * *"))
        await trio.sleep(3600)
        renamed = await h.update(job.id, {"name": "edited", "timeout_seconds": 60})
        assert renamed.next_run_at == job.next_run_at and renamed.spec.name == "edited"
        moved = await h.update(job.id, {"trigger_config": {"expression": "30 13 * * *"}})
        assert moved.next_run_at == at("2026-03-01T13:30:00Z")
        zoned = await h.update(job.id, {"schedule_timezone": "Asia/Tokyo"})
        assert zoned.next_run_at == at("2026-03-02T04:30:00Z")


async def test_a_long_run_under_forbid_records_the_slots_it_blocked(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("slow", "* * * * *", runner_config={"command": "x", "seconds": 150}))
        await trio.sleep(5 * 60 + 1)
        runs = await h.runs(job.id)
        summary = [(r.scheduled_for.strftime("%H:%M"), r.status.value) for r in runs]
        assert summary == [
            ("12:01", "succeeded"),
            ("12:02", "skipped"),
            ("12:03", "skipped"),
            ("12:04", "running"),
            ("12:05", "skipped"),
        ]
        skipped = await h.events(runs[1].id)
        assert [e.event_type.value for e in skipped] == ["skipped"]
        assert skipped[0].data == {"reason": "concurrency", "policy": "forbid", "active_runs": 1}
        assert "job already has an active run" in (skipped[0].message or "")


async def test_missed_fires_after_downtime_are_recorded_by_the_skip_policy(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("hourly", "0 * * * *"))
    # the server is down from 12:00 to 15:20; on restart the fires of 13:00-15:00 are late
    async with harness(sqlite_url, epoch=at("2026-03-01T15:20:00Z")) as h:
        await trio.sleep(1)
        (run,) = await h.runs(job.id)
        assert run.status is RunStatus.SKIPPED and run.scheduled_for == at("2026-03-01T13:00:00Z")
        (event,) = await h.events(run.id)
        assert event.data == {
            "reason": "misfire",
            "missed": 3,
            "missed_capped": False,
            "first_missed": "2026-03-01T13:00:00Z",
            "last_missed": "2026-03-01T15:00:00Z",
        }
        current = await h.job(job.id)
        assert current is not None and current.next_run_at == at("2026-03-01T16:00:00Z")


async def test_missed_fires_collapse_into_one_catch_up_run_under_the_run_policy(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("catchup", "0 * * * *", misfire_policy="run"))
    async with harness(sqlite_url, epoch=at("2026-03-01T15:20:00Z")) as h:
        await trio.sleep(3600)
        runs = await h.runs(job.id)
        assert [(r.scheduled_for, r.status) for r in runs] == [
            (at("2026-03-01T13:00:00Z"), RunStatus.SUCCEEDED),
            (at("2026-03-01T16:00:00Z"), RunStatus.SUCCEEDED),
        ]
        assert runs[0].started_at == at("2026-03-01T15:20:00Z")
        queued = (await h.events(runs[0].id))[0]
        assert (
            isinstance(queued.data, dict) and queued.data["catch_up"] is True and queued.data["missed"] == 3
        )
