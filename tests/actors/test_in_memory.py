"""The actor layer on the in-memory storage fake: no database, no service, exact times."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
import trio.testing

from termjobs.actors.runs import RunEnv
from termjobs.actors.supervisor import Supervisor
from termjobs.clock import VirtualClock
from termjobs.jobdef import Job
from termjobs.jobspec import definition_for_create
from termjobs.model import EventType, Run, RunnerType, RunStatus, RunTrigger
from termjobs.rundomain import Ending
from termjobs.runners.base import RunContext, Runner, RunResult
from termjobs.storage import RunFilters
from termjobs.storage.memory import MemoryStorage
from tests.helpers import EPOCH, FakeRunner, at, cron_body, job_body

MINUTE = dt.timedelta(minutes=1)


@dataclass
class Actors:
    supervisor: Supervisor
    storage: MemoryStorage
    runner: FakeRunner


@asynccontextmanager
async def actors(
    storage: MemoryStorage | None = None, *, workers: int = 2, runner: Runner | None = None
) -> AsyncIterator[Actors]:
    """A supervisor with a scripted runner (or ``runner``) on in-memory storage, at EPOCH."""
    clock = VirtualClock(EPOCH)
    storage = storage or MemoryStorage()
    fake = FakeRunner(clock)
    env = RunEnv(
        storage=storage,
        clock=clock,
        runners={RunnerType.PROGRAM: runner or fake},
        slots=trio.CapacityLimiter(workers),
        worker_id="worker_test",
    )
    supervisor = Supervisor(env)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        yield Actors(supervisor, storage, fake)
        await supervisor.shutdown(grace=5)


async def test_a_cron_job_fires_at_exact_times_on_the_fake(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3 * 3600):  # virtual time
        async with actors() as a:
            job = await a.supervisor.create_job(definition_for_create(cron_body("every5", "*/5 * * * *")))
            await trio.sleep(16 * 60)
            page = await a.storage.runs_page(limit=10, offset=0, filters=RunFilters(job_ref=job.id))
    fired = sorted(run.scheduled_for for run in page.items)
    assert fired == [at("2026-03-01T12:05:00Z"), at("2026-03-01T12:10:00Z"), at("2026-03-01T12:15:00Z")]
    assert all(run.status is RunStatus.SUCCEEDED for run in page.items)
    assert a.runner.starts[0][1] == at("2026-03-01T12:05:00Z")


async def test_a_failed_run_is_retried_and_refusals_come_from_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    policy = {"max_attempts": 2, "initial_delay": "1m"}
    config = {"command": "x", "seconds": 10, "error": "boom"}
    with trio.fail_after(3 * 3600):  # virtual time
        async with actors() as a:
            job = await a.supervisor.create_job(
                definition_for_create(job_body("flaky", runner_config=config, retry_policy=policy))
            )
            first = await a.supervisor.trigger("flaky")  # by name
            await trio.sleep(10 + 60 + 10 + 1)
            runs = (await a.storage.runs_page(limit=10, offset=0, filters=RunFilters(job_ref=job.id))).items
            events = await a.storage.events_after(0, run_id=first.id)
    retry, failed = runs
    assert (failed.id, failed.status, failed.finished_at) == (first.id, RunStatus.FAILED, EPOCH + 10 * SECOND)
    assert retry.trigger is RunTrigger.RETRY and retry.retry_of == first.id and retry.attempt == 2
    assert retry.started_at == EPOCH + 10 * SECOND + MINUTE and retry.status is RunStatus.FAILED
    assert [e.event_type for e in events][-2:] == [EventType.FAILED, EventType.RETRY_SCHEDULED]


SECOND = dt.timedelta(seconds=1)


class SlowFinishes(MemoryStorage):
    """Final states take 20 s each to be recorded."""

    async def finish_runs(self, endings: Sequence[Ending], *, now: dt.datetime) -> list[Run | None]:
        await trio.sleep(20)
        return await super().finish_runs(endings, now=now)


async def test_a_run_gives_its_worker_back_once_its_program_has_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # --jobs-workers 1: the second run starts when the first run's program has ended,
    # not 20 s later when its final state is recorded.
    with trio.fail_after(3600):  # virtual time
        async with actors(SlowFinishes(), workers=1) as a:
            for name in ("first", "second"):
                await a.supervisor.create_job(
                    definition_for_create(job_body(name, runner_config={"command": "x", "seconds": 10}))
                )
                await a.supervisor.trigger(name)
            await trio.sleep(21)
            started = [when for _, when in a.runner.starts]
            first = (await a.storage.runs_page(limit=10, offset=0, filters=RunFilters(job_ref="first"))).items
            await trio.sleep(30)
            second = (
                await a.storage.runs_page(limit=10, offset=0, filters=RunFilters(job_ref="second"))
            ).items
    assert started == [EPOCH, EPOCH + 10 * SECOND]
    assert first[0].status is RunStatus.RUNNING  # its final state is still being written
    assert second[0].status is RunStatus.SUCCEEDED


class Stubborn:
    """A runner that ignores stop requests."""

    def stop_grace(self, job: Job) -> float:
        return 5.0

    async def run(self, ctx: RunContext) -> RunResult:
        await trio.sleep(3600)
        return RunResult()


async def test_a_runner_that_ignores_a_stop_is_abandoned_after_its_grace_and_the_backstop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # stop grace 5 s, backstop 15 s (RunEnv's default): abandoned 20 s after the stop,
    # the timeout's (10 s) or a cancel's (at 2 s)
    with trio.fail_after(3 * 3600):  # virtual time
        async with actors(runner=Stubborn()) as a:
            for name in ("times-out", "cancelled"):
                await a.supervisor.create_job(
                    definition_for_create(job_body(name, runner_config={"command": "x"}, timeout_seconds=10))
                )
            timed_out = await a.supervisor.trigger("times-out")
            cancelled = await a.supervisor.trigger("cancelled")
            await trio.sleep(2)
            await a.supervisor.cancel_run(cancelled.id)
            await trio.sleep(60)
            ended = {run.id: run for run in (await a.storage.runs_page(limit=10, offset=0)).items}
    first, second = ended[timed_out.id], ended[cancelled.id]
    assert (first.status, first.finished_at) == (RunStatus.TIMED_OUT, EPOCH + 30 * SECOND)
    assert (second.status, second.finished_at) == (RunStatus.CANCELLED, EPOCH + 22 * SECOND)
    assert second.error == "cancelled by request"
