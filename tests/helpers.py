"""Test helpers: a scripted runner, job bodies and a service under a virtual clock."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from sqlalchemy.engine import URL

from termjobs.clock import VirtualClock
from termjobs.config import Settings
from termjobs.jobdef import Job
from termjobs.jobspec import definition_for_create, parse_patch
from termjobs.model import JSONObject, Run, RunEvent, RunnerType, RunOutput, RunTrigger
from termjobs.rundomain import new_run
from termjobs.runners.base import RunContext, RunResult
from termjobs.service import open_services
from termjobs.services import Services
from termjobs.storage import RunFilters

EPOCH = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def at(text: str) -> dt.datetime:
    """An aware UTC datetime from ISO text (``Z`` allowed)."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


@dataclass
class FakeRunner:
    """Runs "programs" in virtual time, scripted by their ``runner_config``:

    ``seconds`` (how long the run takes, default 1), ``error`` (fail with this text),
    ``exit_code`` (default 0, or 1 with ``error``), ``output`` (stdout text),
    ``fail_attempts`` (attempts up to this one fail).
    Records the virtual wall time at which each run started and stopped.
    """

    clock: VirtualClock
    starts: list[tuple[str, dt.datetime]] = field(default_factory=list)
    ends: list[tuple[str, dt.datetime]] = field(default_factory=list)

    def stop_grace(self, job: Job) -> float:
        return 5.0

    async def run(self, ctx: RunContext) -> RunResult:
        config: dict[str, Any] = ctx.job.spec.runner_config  # type: ignore[assignment]
        self.starts.append((ctx.run.id, self.clock.now()))
        with trio.move_on_after(float(config.get("seconds", 1))):
            await ctx.stop.wait()
        self.ends.append((ctx.run.id, self.clock.now()))
        if ctx.stop.requested:
            return RunResult(RunOutput(exit_code=143))
        error = config.get("error")
        if ctx.run.attempt <= int(config.get("fail_attempts", 0)):
            error = error or f"attempt {ctx.run.attempt} failed"
        if error:
            return RunResult(RunOutput(exit_code=int(config.get("exit_code", 1))), error=str(error))
        return RunResult(RunOutput(exit_code=int(config.get("exit_code", 0)), stdout=config.get("output")))


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def gone(pid: int, within: float = 5) -> bool:
    """Whether ``pid`` is gone within ``within`` seconds (a killed process needs CPU time
    to die, which a busy machine may be slow to give)."""
    with trio.move_on_after(within):
        while True:
            if not alive(pid):
                return True
            await trio.sleep(0.01)
    return False


def job_body(name: str = "job", **fields: Any) -> dict[str, Any]:
    """A valid manual program job body, with overrides."""
    body: dict[str, Any] = {
        "name": name,
        "runner_type": "program",
        "runner_config": {"command": "true"},
        "trigger_type": "manual",
    }
    body.update(fields)
    return body


def cron_body(name: str, expression: str, timezone: str = "UTC", **fields: Any) -> dict[str, Any]:
    """A cron program job body."""
    return job_body(
        name, trigger_type="cron", trigger_config={"expression": expression, "timezone": timezone}, **fields
    )


def make_job(name: str, *, created: dt.datetime = EPOCH, **fields: object) -> Job:
    spec = definition_for_create(job_body(name, **fields))
    return Job(
        id=f"job_{name}",
        spec=spec,
        next_run_at=None,
        last_fire_at=None,
        created_at=created,
        updated_at=created,
    )


def make_run(job: Job, *, created: dt.datetime = EPOCH, trigger: RunTrigger = RunTrigger.MANUAL) -> Run:
    return new_run(job.id, trigger=trigger, scheduled_for=created, now=created)


@dataclass
class Harness:
    """A running service under a virtual clock with a :class:`FakeRunner`."""

    services: Services
    clock: VirtualClock
    runner: FakeRunner

    async def create(self, body: JSONObject) -> Job:
        return await self.services.supervisor.create_job(definition_for_create(body))

    async def trigger(self, job_id: str) -> Run:
        return await self.services.supervisor.trigger(job_id)

    async def update(self, job_id: str, body: JSONObject) -> Job:
        return await self.services.supervisor.update(job_id, parse_patch(body))

    async def delete(self, job_id: str, *, cancel_active: bool = False) -> None:
        await self.services.supervisor.delete(job_id, cancel_active=cancel_active)

    async def cancel(self, run_id: str) -> Run:
        return await self.services.supervisor.cancel_run(run_id)

    async def job(self, job_id: str) -> Job | None:
        return await self.services.storage.get_job(job_id)

    async def runs(self, job_id: str | None = None) -> list[Run]:
        """All runs (oldest first)."""
        page = await self.services.storage.runs_page(
            limit=10_000, offset=0, filters=RunFilters(job_ref=job_id)
        )
        return list(reversed(page.items))

    async def run(self, run_id: str) -> Run:
        run = await self.services.storage.get_run(run_id)
        assert run is not None
        return run

    async def events(self, run_id: str) -> list[RunEvent]:
        page = await self.services.storage.events_page(run_id, since_id=0, limit=10_000, offset=0)
        assert page is not None
        return page.items

    async def event_types(self, run_id: str) -> list[str]:
        return [event.event_type.value for event in await self.events(run_id)]

    async def wait_final(self, run_id: str) -> Run:
        """Wait (in virtual time) until the run reaches a terminal status."""
        while True:
            run = await self.run(run_id)
            if run.status.terminal:
                return run
            await trio.sleep(0.5)


@asynccontextmanager
async def harness(
    url: URL,
    *,
    epoch: dt.datetime = EPOCH,
    workers: int = 4,
    grace: float = 10.0,
    max_sleep: float = math.inf,
    rng: random.Random | None = None,
    retention_days: int = 30,
    max_runs_per_job: int = 1000,
) -> AsyncIterator[Harness]:
    """Start the service with a virtual clock at ``epoch`` and inline storage.

    Use with trio's ``autojump_clock`` fixture so virtual time advances instantly.
    """
    clock = VirtualClock(epoch, max_sleep=max_sleep)
    runner = FakeRunner(clock)
    settings = Settings(
        db_url=url,
        jobs_workers=workers,
        shutdown_grace=grace,
        retention_days=retention_days,
        max_runs_per_job=max_runs_per_job,
    )
    async with open_services(
        settings, clock=clock, runners={RunnerType.PROGRAM: runner}, inline_db=True, rng=rng
    ) as services:
        yield Harness(services=services, clock=clock, runner=runner)
