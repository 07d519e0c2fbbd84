"""Run lifecycles through the actors, under the virtual clock (exact times)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import trio
import trio.testing
from sqlalchemy.engine import URL

from termjobs.errors import Conflict, JobNotFound, RunNotFound
from termjobs.model import ExitReason, RunStatus, RunTrigger
from termjobs.rundomain import new_run
from termjobs.storage.database import open_storage
from tests.helpers import EPOCH, at, harness, job_body

SECOND = dt.timedelta(seconds=1)


def slow(seconds: float, **config: object) -> dict[str, Any]:
    return {"command": "x", "seconds": seconds, **config}


async def test_manual_trigger_runs_to_success(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("m", runner_config=slow(2, output="hello\n")))
        run = await h.trigger(job.id)
        assert (run.status, run.trigger, run.attempt, run.scheduled_for) == (
            RunStatus.QUEUED,
            RunTrigger.MANUAL,
            1,
            EPOCH,
        )
        final = await h.wait_final(run.id)
        assert final.status is RunStatus.SUCCEEDED and final.exit_reason is ExitReason.NATURAL_COMPLETION
        assert final.output.stdout == "hello\n" and final.output.exit_code == 0
        assert (final.started_at, final.finished_at) == (EPOCH, EPOCH + 2 * SECOND)
        assert await h.event_types(run.id) == ["queued", "claimed", "running", "succeeded"]


async def test_forbid_refuses_a_second_trigger_and_50_concurrent_triggers_make_one_run(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("f", runner_config=slow(60)))
        outcomes: list[str] = []

        async def fire() -> None:
            try:
                await h.trigger(job.id)
                outcomes.append("queued")
            except Conflict as exc:
                outcomes.append(exc.message)

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(fire)
        assert outcomes.count("queued") == 1
        assert outcomes.count("job already has an active run (concurrency_policy forbid)") == 49
        assert len(await h.runs(job.id)) == 1


async def test_allow_admits_up_to_max_concurrent_runs(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(
            job_body("a", runner_config=slow(60), concurrency_policy="allow", max_concurrent_runs=3)
        )
        results = []
        for _ in range(5):
            try:
                results.append((await h.trigger(job.id)).status.value)
            except Conflict as exc:
                results.append(exc.message)
        assert results == ["queued"] * 3 + ["job already has 3 active runs (max 3)"] * 2
        await trio.sleep(61)
        assert (await h.trigger(job.id)).status is RunStatus.QUEUED  # slots freed


async def test_global_run_slots_queue_runs_in_order(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url, workers=2) as h:
        sup = h.services.supervisor
        jobs = [await h.create(job_body(f"j{i}", runner_config=slow(10))) for i in range(3)]
        runs = [await h.trigger(job.id) for job in jobs]
        await trio.sleep(1)
        # the gauges of /metrics: waiting, executing; actors running
        assert (sup.run_counts(), sup.awake_count) == ((1, 2), 3)
        finals = [await h.wait_final(run.id) for run in runs]
        assert sup.run_counts() == (0, 0)
        assert [f.started_at for f in finals] == [EPOCH, EPOCH, EPOCH + 10 * SECOND]
        events = await h.events(runs[2].id)
        assert [(e.event_type.value, e.created_at) for e in events][:2] == [
            ("queued", EPOCH),
            ("claimed", EPOCH + 10 * SECOND),
        ]


async def test_cancel_a_queued_run(sqlite_url: URL, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(sqlite_url, workers=1) as h:
        busy = await h.create(job_body("busy", runner_config=slow(100)))
        waiting = await h.create(job_body("waiting"))
        await h.trigger(busy.id)
        queued = await h.trigger(waiting.id)
        await trio.sleep(5)
        cancelled = await h.cancel(queued.id)
        assert cancelled.status is RunStatus.CANCELLED and cancelled.finished_at == EPOCH + 5 * SECOND
        assert cancelled.output.exit_code is None and cancelled.exit_reason is None
        events = await h.events(queued.id)
        assert [(e.event_type.value, e.message) for e in events] == [
            ("queued", "manual run queued"),
            ("cancelled", "run cancelled before start"),
        ]
        assert h.runner.starts == [(h.runner.starts[0][0], EPOCH)]  # the cancelled run never started


async def test_cancel_a_queued_run_that_no_task_owns(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    # A queued run whose task died with an earlier actor: the actor answers the cancel
    # from storage, ends the run, and tells the observers like any other final state.
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("orphan"))
        orphan = await h.services.storage.create_run(
            new_run(job.id, trigger=RunTrigger.MANUAL, scheduled_for=EPOCH, now=EPOCH)
        )
        await trio.sleep(5)
        assert (await h.run(orphan.id)).status is RunStatus.QUEUED  # no task picked it up
        cancelled = await h.cancel(orphan.id)
        assert cancelled.status is RunStatus.CANCELLED and cancelled.finished_at == EPOCH + 5 * SECOND
        assert [(e.event_type.value, e.message) for e in await h.events(orphan.id)] == [
            ("queued", "manual run queued"),
            ("cancelled", "run cancelled before start"),
        ]
        finished = h.services.metrics.registry.get_sample_value(
            "termjobs_runs_finished_total", {"runner": "program", "status": "cancelled"}
        )
        assert finished == 1.0
        assert h.runner.starts == []  # it never started
        assert (await h.cancel(orphan.id)).status is RunStatus.CANCELLED  # cancelling again is a no-op


async def test_cancel_a_running_run(sqlite_url: URL, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("c", runner_config=slow(1000)))
        run = await h.trigger(job.id)
        await trio.sleep(30)
        answer = await h.cancel(run.id)
        assert answer.status is RunStatus.CANCEL_REQUESTED
        final = await h.wait_final(run.id)
        assert final.status is RunStatus.CANCELLED and final.exit_reason is ExitReason.CANCELLED
        assert final.error == "cancelled by request" and final.output.exit_code == 143
        assert final.finished_at == EPOCH + 30 * SECOND
        assert await h.event_types(run.id) == [
            "queued",
            "claimed",
            "running",
            "cancel_requested",
            "cancelled",
        ]
        again = await h.cancel(run.id)  # cancelling a finished run changes nothing
        assert again.status is RunStatus.CANCELLED and again.updated_at == final.updated_at
        with pytest.raises(RunNotFound):
            await h.cancel("run_missing")


async def test_timeout(sqlite_url: URL, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("t", runner_config=slow(1000), timeout_seconds=90))
        run = await h.trigger(job.id)
        final = await h.wait_final(run.id)
        assert final.status is RunStatus.TIMED_OUT and final.exit_reason is ExitReason.TIMEOUT
        assert final.error == "run timed out after 90s (timeout_seconds)"
        assert final.finished_at == EPOCH + 90 * SECOND


async def test_failure_retries_with_backoff(sqlite_url: URL, autojump_clock: trio.testing.MockClock) -> None:
    async with harness(sqlite_url) as h:
        policy = {"max_attempts": 3, "backoff": "exponential", "initial_delay": "30s"}
        job = await h.create(
            job_body("r", runner_config=slow(1, error="disk full", exit_code=2), retry_policy=policy)
        )
        first = await h.trigger(job.id)
        await trio.sleep(600)
        runs = await h.runs(job.id)
        assert [(r.attempt, r.trigger, r.status, r.output.exit_code) for r in runs] == [
            (1, RunTrigger.MANUAL, RunStatus.FAILED, 2),
            (2, RunTrigger.RETRY, RunStatus.FAILED, 2),
            (3, RunTrigger.RETRY, RunStatus.FAILED, 2),
        ]
        assert runs[0].id == first.id and runs[1].retry_of == first.id and runs[2].retry_of == runs[1].id
        assert [r.scheduled_for for r in runs] == [EPOCH, EPOCH + 31 * SECOND, EPOCH + 92 * SECOND]
        events = await h.events(first.id)
        assert [e.event_type.value for e in events][-2:] == ["failed", "retry_scheduled"]
        assert events[-1].data == {"retry_run_id": runs[1].id, "next_attempt": 2, "delay": "30s"}
        assert (await h.events(runs[1].id))[0].message == "retry run queued"


async def test_delete_refuses_active_runs_unless_asked_to_cancel_them(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        job = await h.create(job_body("d", runner_config=slow(1000)))
        run = await h.trigger(job.id)
        await trio.sleep(1)
        with pytest.raises(Conflict, match="job has 1 active run"):
            await h.delete(job.id)
        assert (await h.run(run.id)).status is RunStatus.RUNNING
        await h.delete(job.id, cancel_active=True)
        assert h.runner.ends[0][1] == EPOCH + SECOND  # stopped at once
        assert await h.job(job.id) is None
        assert await h.services.storage.get_run(run.id) is None
        with pytest.raises(JobNotFound):
            await h.trigger(job.id)


async def test_shutdown_lets_short_runs_finish_and_stops_long_ones(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url, workers=2, grace=10) as h:
        short = await h.trigger((await h.create(job_body("short", runner_config=slow(5)))).id)
        long = await h.trigger((await h.create(job_body("long", runner_config=slow(500)))).id)
        queued = await h.trigger((await h.create(job_body("queued", runner_config=slow(5)))).id)
        await trio.sleep(1)
    # Inline: under the autojump clock a read in a thread would let virtual time race
    # past the read timeout.
    async with open_storage(sqlite_url, inline=True) as storage:
        final = {r.id: r for r in (await storage.runs_page(limit=10, offset=0)).items}
    assert final[short.id].status is RunStatus.SUCCEEDED
    assert final[long.id].status is RunStatus.CANCELLED
    assert final[long.id].error == "cancelled: the server shut down before the run finished"
    assert final[long.id].finished_at == EPOCH + 11 * SECOND  # 1 s in + 10 s grace
    assert final[queued.id].status is RunStatus.QUEUED  # runs after the next start
    async with harness(sqlite_url, epoch=at("2026-03-01T13:00:00Z")) as h:
        again = await h.wait_final(queued.id)
        assert again.status is RunStatus.SUCCEEDED and again.started_at == at("2026-03-01T13:00:00Z")


async def test_crash_recovery_marks_lost_runs_and_retries_them(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with harness(sqlite_url) as h:
        retrying = await h.create(
            job_body("retrying", retry_policy={"max_attempts": 2, "initial_delay": "5s"})
        )
        plain = await h.create(job_body("plain", concurrency_policy="allow", max_concurrent_runs=3))
    # Simulate a server killed mid-run: rows left running / cancel_requested / queued.
    async with open_storage(sqlite_url) as storage:
        rows = {}
        for name, job in (("running", retrying), ("cancelling", plain), ("queued", plain)):
            rows[name] = new_run(job.id, trigger=RunTrigger.MANUAL, scheduled_for=EPOCH, now=EPOCH)
            await storage.create_run(rows[name])
        for name in ("running", "cancelling"):
            await storage.start_run(rows[name], worker_id="worker_dead", now=EPOCH)
        await storage.request_cancel(rows["cancelling"], now=EPOCH, message="cancellation requested")
    restart = at("2026-03-01T12:30:00Z")
    async with harness(sqlite_url, epoch=restart) as h:
        lost = await h.run(rows["running"].id)
        assert lost.status is RunStatus.FAILED and lost.exit_reason is ExitReason.WORKER_LOST
        assert lost.error is not None and lost.error.startswith("worker lost before run could finish")
        assert lost.finished_at == restart
        assert (await h.event_types(lost.id))[-2:] == ["failed", "retry_scheduled"]
        cancelled = await h.run(rows["cancelling"].id)
        assert cancelled.status is RunStatus.CANCELLED and cancelled.exit_reason is ExitReason.CANCELLED
        queued = await h.wait_final(rows["queued"].id)
        assert queued.status is RunStatus.SUCCEEDED
        await trio.sleep(10)
        retry = [r for r in await h.runs(retrying.id) if r.trigger is RunTrigger.RETRY]
        assert len(retry) == 1 and retry[0].status is RunStatus.SUCCEEDED
        assert retry[0].started_at == restart + 5 * SECOND and retry[0].retry_of == lost.id


async def test_the_outbox_is_read_after_a_run_that_queued_webhooks_only(
    sqlite_url: URL, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with harness(sqlite_url) as h:
        storage = h.services.storage
        reads: list[float] = []
        pending = storage.pending_notifications

        async def counted(**kwargs: Any) -> Any:
            reads.append(trio.current_time())
            return await pending(**kwargs)

        monkeypatch.setattr(storage, "pending_notifications", counted)
        quiet = await h.create(job_body("quiet", runner_config=slow(1)))
        await trio.sleep(1)
        before = len(reads)
        await h.wait_final((await h.trigger(quiet.id)).id)
        await trio.sleep(1)
        assert len(reads) == before  # nothing queued: the notifier did not look
        hooked = await h.create(
            job_body("hooked", runner_config=slow(1), notify=[{"url": "http://127.0.0.1:9/hook"}])
        )
        await h.wait_final((await h.trigger(hooked.id)).id)
        await trio.sleep(1)
        assert len(reads) > before  # its webhook was queued: the notifier looked at once
