"""Failure handling: storage outages, actor crashes, races with fires (virtual clock)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
import trio
import trio.testing
from sqlalchemy.engine import URL

from termjobs.actors.job import HIBERNATE_IDLE_S, JobActor
from termjobs.jobspec import JobPatch
from termjobs.model import ExitReason, RunStatus
from termjobs.storage import StorageUnavailable
from termjobs.storage.gateway import Gateway
from tests.helpers import Harness, at, cron_body, harness, job_body

Write = Callable[..., Any]


def slow_storage(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every write (gathered or not) takes ``seconds`` (of virtual time) after it commits."""
    for name in ("write", "write_bulk"):
        original: Write = getattr(Gateway, name)

        async def write(self: Gateway, *args: Any, original: Write = original) -> Any:
            result = await original(self, *args)
            await trio.sleep(seconds)
            return result

        monkeypatch.setattr(Gateway, name, write)


class Outage:
    """Makes every storage call fail while ``down`` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        for name in ("read", "write", "write_bulk"):
            original = getattr(Gateway, name)
            monkeypatch.setattr(Gateway, name, self._wrap(original))

    def _wrap(self, original: Write) -> Write:
        async def call(gateway: Gateway, *args: Any, **options: Any) -> Any:
            if self.down:
                await trio.sleep(0.1)
                raise StorageUnavailable()
            return await original(gateway, *args, **options)

        return call


async def test_a_pause_arriving_just_before_a_fire_is_answered_and_kept(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_storage(monkeypatch, 0.01)
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("tick", "* * * * *"))
        assert job.next_run_at is not None
        await trio.sleep_until(h.clock.deadline_for(job.next_run_at) - 0.005)
        paused = await h.update(job.id, {"enabled": False})
        assert not paused.spec.enabled
        await trio.sleep(180)
        current = await h.job(job.id)
        assert current is not None and not current.spec.enabled
        assert len(await h.runs(job.id)) <= 1  # at most the fire that was already due


async def test_a_trigger_just_before_a_fire_starts_its_run(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_storage(monkeypatch, 0.01)
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("t", "* * * * *", concurrency_policy="allow", max_concurrent_runs=5))
        assert job.next_run_at is not None
        await trio.sleep_until(h.clock.deadline_for(job.next_run_at) - 0.005)
        run = await h.trigger(job.id)
        final = await h.wait_final(run.id)
        assert final.status is RunStatus.SUCCEEDED


async def test_requests_are_served_while_scheduled_fires_cannot_be_recorded(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from termjobs.storage.sql import jobs

    failing = {"on": True}
    original = jobs.advance  # the last statement of recording fires

    def advance(*args: Any, **kwargs: Any) -> Any:
        if failing["on"]:
            raise sa.exc.OperationalError("UPDATE", {}, Exception("disk I/O error"))
        return original(*args, **kwargs)

    monkeypatch.setattr(jobs, "advance", advance)
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("hourly", "0 * * * *"))
        await trio.sleep(3600 + 30)  # the 13:00 fire keeps failing, with backoff
        renamed = await h.update(job.id, {"name": "still-served"})
        assert renamed.spec.name == "still-served"
        failing["on"] = False
        await trio.sleep(120)
        (run,) = await h.runs(job.id)
        assert run.scheduled_for == at("2026-03-01T13:00:00Z") and run.status is RunStatus.SUCCEEDED


async def test_a_storage_outage_while_runs_finish_does_not_take_the_service_down(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(monkeypatch)
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("j", runner_config={"command": "x", "seconds": 5}))
        brief = await h.trigger(job.id)
        await trio.sleep(2)
        outage.down = True
        await trio.sleep(20)  # the run ends at 12:00:05, storage is back at 12:00:22
        outage.down = False
        await trio.sleep(10)
        # its final write was retried until storage came back
        assert (await h.run(brief.id)).status is RunStatus.SUCCEEDED
        run = await h.trigger(job.id)
        await trio.sleep(2)
        outage.down = True
        await trio.sleep(600)  # a long outage: the final write keeps being retried
        outage.down = False
        await trio.sleep(10)
        assert h.services.supervisor.job_count == 1 and not h.services.supervisor.faulted
        assert (await h.run(run.id)).status is RunStatus.SUCCEEDED


async def test_a_shutdown_during_an_outage_leaves_unwritten_final_states_to_recovery(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(monkeypatch)
    async with harness(sqlite_url, grace=30) as h:
        job = await h.create(job_body("j", runner_config={"command": "x", "seconds": 5}))
        run = await h.trigger(job.id)
        await trio.sleep(2)
        outage.down = True
        stopping = trio.current_time()
    # The run ended at 12:00:05; its final state was retried for the grace period, then
    # given up for at most finalize_timeout more: shutdown stays bounded.
    assert trio.current_time() - stopping < 30 + 30 + 5
    outage.down = False
    async with harness(sqlite_url, epoch=at("2026-03-01T13:00:00Z")) as h:
        recovered = await h.run(run.id)
        assert recovered.status is RunStatus.FAILED and recovered.exit_reason is ExitReason.WORKER_LOST


async def test_a_retry_that_comes_due_during_an_outage_runs_when_storage_is_back(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(monkeypatch)
    async with harness(sqlite_url) as h:
        job = await h.create(
            job_body(
                "flaky",
                runner_config={"command": "x", "seconds": 1, "fail_attempts": 1},
                retry_policy={"max_attempts": 3, "backoff": "fixed", "initial_delay": "10s"},
            )
        )
        first = await h.trigger(job.id)
        await trio.sleep(5)  # failed at 12:00:01; the retry is due at 12:00:11
        outage.down = True
        await trio.sleep(30)
        outage.down = False
        await trio.sleep(30)
        runs = sorted(await h.runs(job.id), key=lambda r: r.attempt)
        assert [(r.attempt, r.status) for r in runs] == [(1, RunStatus.FAILED), (2, RunStatus.SUCCEEDED)]
        assert runs[1].retry_of == first.id
        assert runs[1].started_at is not None and runs[1].started_at >= at("2026-03-01T12:00:35Z")


async def test_a_fire_that_comes_due_during_an_outage_runs_when_storage_is_back(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(monkeypatch)
    async with harness(sqlite_url) as h:
        job = await h.create(cron_body("minutely", "* * * * *"))
        await trio.sleep(50)
        outage.down = True
        await trio.sleep(160)  # down from 12:00:50 to 12:03:30: longer than the misfire grace
        outage.down = False
        await trio.sleep(60)
        runs = {r.scheduled_for: r for r in await h.runs(job.id)}
        # The 12:01 fire came due while storage was down: it waited, then ran.
        assert runs[at("2026-03-01T12:01:00Z")].status is RunStatus.SUCCEEDED
        assert runs[at("2026-03-01T12:04:00Z")].status is RunStatus.SUCCEEDED


async def test_a_hibernating_job_whose_fire_comes_due_during_an_outage_runs_when_storage_is_back(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(monkeypatch)
    async with harness(sqlite_url) as h:
        job_id = await _hibernated_hourly(h)  # next fire 13:00
        await trio.sleep_until(h.clock.deadline_for(at("2026-03-01T12:59:00Z")))
        outage.down = True
        await trio.sleep_until(h.clock.deadline_for(at("2026-03-01T13:04:00Z")))
        outage.down = False
        await trio.sleep(30)
        (run,) = await h.runs(job_id)
    assert run.scheduled_for == at("2026-03-01T13:00:00Z") and run.status is RunStatus.SUCCEEDED


async def test_a_crashed_actor_restarts_and_its_lost_runs_are_recorded(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = JobActor._fire_due
    crashes = {"left": 1}

    async def fire_due(self: JobActor) -> None:
        if crashes["left"]:
            crashes["left"] -= 1
            raise RuntimeError("simulated bug")
        await original(self)

    monkeypatch.setattr(JobActor, "_fire_due", fire_due)
    async with harness(sqlite_url) as h:
        job = await h.create(
            cron_body(
                "c",
                "*/5 * * * *",
                runner_config={"command": "x", "seconds": 1000},
                concurrency_policy="allow",
                max_concurrent_runs=3,
                timeout_seconds=3600,
            )
        )
        manual = await h.trigger(job.id)
        await trio.sleep(301)  # the 12:05 fire crashes the actor while the manual run is running
        lost = await h.run(manual.id)
        assert lost.status is RunStatus.FAILED and lost.exit_reason is ExitReason.WORKER_LOST
        assert lost.error == "run interrupted: its job actor stopped unexpectedly"
        await trio.sleep(600)
        fired = [r for r in await h.runs(job.id) if r.id != manual.id]
        # the crash happened before 12:05 was recorded, so the restarted actor fires it
        assert [r.scheduled_for for r in fired] == [at(f"2026-03-01T12:{m}:00Z") for m in ("05", "10", "15")]
        assert fired[0].started_at == at("2026-03-01T12:05:00.5Z")  # after the restart backoff
        assert h.services.supervisor.job_count == 1


async def test_shutdown_completes_even_if_an_actor_just_crashed(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fire_due(self: JobActor) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(JobActor, "_fire_due", fire_due)
    with trio.fail_after(600):
        async with harness(sqlite_url) as h:
            await h.create(cron_body("tick", "* * * * *"))
            await trio.sleep(60.2)  # crashed; its restart is pending


async def _hibernated_hourly(h: Harness) -> str:
    job = await h.create(cron_body("hourly", "0 * * * *"))
    await trio.sleep(HIBERNATE_IDLE_S + 1)
    assert h.services.supervisor.awake_count == 0
    return job.id


async def test_a_request_given_up_while_waking_a_job_does_not_lose_its_schedule(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job_id = await _hibernated_hourly(h)
        with trio.move_on_after(0):  # the client went away during the wake-up
            await h.update(job_id, {"labels": {"a": "b"}})
        await trio.sleep(3 * 3600)
        assert len(await h.runs(job_id)) == 3


async def test_a_storage_error_while_waking_a_job_does_not_lose_its_schedule(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(sqlite_url) as h:
        job_id = await _hibernated_hourly(h)
        original = Gateway.read
        failures = {"left": 1}

        async def read(self: Gateway, op: Any, **options: Any) -> Any:
            if failures["left"]:
                failures["left"] -= 1
                raise sa.exc.OperationalError("SELECT", {}, Exception("disk I/O error"))
            return await original(self, op, **options)

        monkeypatch.setattr(Gateway, "read", read)
        updated = await h.update(job_id, {"labels": {"a": "b"}})  # the wake-up is retried
        assert updated.spec.labels == {"a": "b"}
        await trio.sleep(3 * 3600)
        assert len(await h.runs(job_id)) == 3


async def test_requests_waiting_at_a_crash_are_answered_by_the_restarted_actor(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("m"))
        entry = h.services.supervisor.registry.get(job.id)
        actor = entry.actor if entry is not None else None
        assert actor is not None and actor._nursery is not None
        original = JobActor._update

        async def slow_update(self: JobActor, patch: JobPatch) -> Any:
            await trio.sleep(1)
            return await original(self, patch)

        async def crash() -> None:
            await trio.sleep(0.5)
            raise RuntimeError("a bug in the actor")

        monkeypatch.setattr(JobActor, "_update", slow_update)
        answers: list[object] = []

        async def update(i: int) -> None:
            try:
                answers.append((await h.update(job.id, {"labels": {"i": i}})).spec.labels)
            except Exception as exc:
                answers.append(exc)

        async with trio.open_nursery() as nursery:
            actor._nursery.start_soon(crash)
            for i in range(3):
                nursery.start_soon(update, i)
        # the one being handled when the crash hit fails; the queued ones are re-sent
        assert sum(isinstance(a, dict) for a in answers) >= 2, answers
        assert not h.services.supervisor.faulted


async def test_shutdown_does_not_wait_out_a_restart_backoff(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fire_due(self: JobActor) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(JobActor, "_fire_due", fire_due)
    async with harness(sqlite_url) as h:
        await h.create(cron_body("tick", "* * * * *"))
        await trio.sleep(4 * 60 + 1)  # four crashes: the next backoff is 4 s
        stopping = trio.current_time()
    assert trio.current_time() - stopping < 1


async def test_a_storage_outage_at_wake_up_time_is_retried_with_backoff_and_the_fire_still_comes(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(sqlite_url) as h:
        job_id = await _hibernated_hourly(h)  # next fire 13:00
        original = Gateway.read
        attempts = {"failed": 0}

        async def read(self: Gateway, op: Any, **options: Any) -> Any:
            # Down from 12:59 to 13:00:30 (or for 1,000 reads: a busy loop would never
            # let virtual time reach 13:00:30).
            down = at("2026-03-01T12:59:00Z") < h.clock.now() < at("2026-03-01T13:00:30Z")
            if down and attempts["failed"] < 1000:
                attempts["failed"] += 1
                raise sa.exc.OperationalError("SELECT", {}, Exception("disk I/O error"))
            return await original(self, op, **options)

        monkeypatch.setattr(Gateway, "read", read)
        await trio.sleep_until(h.clock.deadline_for(at("2026-03-01T13:02:00Z")))
        monkeypatch.setattr(Gateway, "read", original)
        (run,) = await h.runs(job_id)
    assert run.scheduled_for == at("2026-03-01T13:00:00Z") and run.status is RunStatus.SUCCEEDED
    assert attempts["failed"] <= 60  # about one attempt a second while storage fails, not a busy loop


async def test_a_request_that_storage_cannot_serve_is_unavailable_not_an_internal_error(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("j"))
        outage = Outage(monkeypatch)
        outage.down = True
        with pytest.raises(StorageUnavailable):  # a 503 with Retry-After, not a 500
            await h.trigger(job.id)
        with pytest.raises(StorageUnavailable):
            await h.update(job.id, {"labels": {"a": 1}})
        outage.down = False
        assert (await h.wait_final((await h.trigger(job.id)).id)).status is RunStatus.SUCCEEDED


async def test_a_final_state_whose_answer_was_lost_still_starts_its_retry(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from termjobs.storage.database import SqlStorage

    original = SqlStorage.finish_runs
    lost = {"answers": 1}

    async def finish_runs(self: SqlStorage, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        if lost["answers"]:
            lost["answers"] -= 1  # committed, but the connection dropped before the answer
            raise StorageUnavailable()
        return result

    monkeypatch.setattr(SqlStorage, "finish_runs", finish_runs)
    async with harness(sqlite_url) as h:
        job = await h.create(
            job_body(
                "flaky",
                runner_config={"command": "x", "seconds": 1, "fail_attempts": 1},
                retry_policy={"max_attempts": 2, "backoff": "fixed", "initial_delay": "5s"},
            )
        )
        await h.trigger(job.id)
        await trio.sleep(30)
        runs = sorted(await h.runs(job.id), key=lambda r: r.attempt)
        assert [(r.attempt, r.status) for r in runs] == [(1, RunStatus.FAILED), (2, RunStatus.SUCCEEDED)]
