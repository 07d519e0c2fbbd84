"""The runner protocol: what the run owner gives a runner and what it gets back.

A runner never decides a run's status. It executes, reports live events through
``RunContext.emit``, watches ``RunContext.stop`` (set on timeout, cancel, shutdown,
delete or replace) and returns a :class:`RunResult` describing what happened; the run
owner (``termjobs.actors.runs``) turns that into the final status.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import trio

from termjobs.jobdef import Job
from termjobs.model import EventType, ExitReason, JSONValue, Run, RunOutput

Emit = Callable[[EventType, str | None, "JSONValue"], Awaitable[None]]


class StopReason(enum.Enum):
    """Why a run is being stopped before it finished on its own."""

    TIMEOUT = "timeout"
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    DELETE = "delete"
    REPLACE = "replace"


class StopSignal:
    """A one-shot request to stop, with the first reason given."""

    def __init__(self) -> None:
        self._event = trio.Event()
        self.reason: StopReason | None = None

    def request(self, reason: StopReason) -> None:
        if self.reason is None:
            self.reason = reason
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass(frozen=True, slots=True)
class RunContext:
    """Everything a runner may use for one run."""

    job: Job
    run: Run
    stop: StopSignal
    emit: Emit


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a runner observed. ``error`` set means the run failed."""

    output: RunOutput = field(default_factory=RunOutput)
    error: str | None = None
    exit_reason: ExitReason | None = None


class Runner(Protocol):
    """Executes runs of one runner type."""

    async def run(self, ctx: RunContext) -> RunResult:
        """Execute ``ctx.run`` and return what happened; must return within
        :meth:`stop_grace` of ``ctx.stop`` being requested."""
        ...

    def stop_grace(self, job: Job) -> float:
        """Seconds a run of ``job`` may take to wind down after a stop request (the
        program runner's ``kill_grace_seconds``)."""
        ...


@runtime_checkable
class BackgroundService(Protocol):
    """A runner with background work of its own, started with the service."""

    async def serve(self, *, task_status: trio.TaskStatus[None] = ...) -> None:
        """Run until cancelled; call ``task_status.started()`` once ready."""
        ...


@runtime_checkable
class OrphanReaper(Protocol):
    """A runner that can clean up after runs of a server that died mid-run."""

    def reap_orphans(self, run_ids: Iterable[str]) -> int:
        """Stop whatever those runs left running; how many things were stopped."""
        ...


class UnconfiguredLLMRunner:
    """Stands in for the LLM runner when the server has no LLM executor configured."""

    def stop_grace(self, job: Job) -> float:
        return 0.0

    async def run(self, ctx: RunContext) -> RunResult:
        await trio.lowlevel.checkpoint()
        return RunResult(
            error="llm runner is not configured on this server",
            exit_reason=ExitReason.EXCEPTION,
        )
