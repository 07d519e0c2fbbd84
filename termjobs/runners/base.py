"""The runner protocol: what the run owner gives a runner and what it gets back.

A runner never decides a run's status. It executes, reports live events through
``RunContext.emit``, watches ``RunContext.stop`` (set on timeout, cancel, shutdown,
delete or replace) and returns a :class:`RunResult` describing what happened; the run
owner (``termjobs.actors.runs``) turns that into the final status.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import trio

from termjobs.errors import InvalidRequest
from termjobs.jobdef import Job, JobDefinition
from termjobs.model import EventType, ExitReason, JSONValue, Run, RunnerType, RunOutput

Emit = Callable[[EventType, str | None, "JSONValue"], Awaitable[None]]


class StopReason(enum.Enum):
    """Why a run is being stopped before it finished on its own."""

    TIMEOUT = "timeout"
    CANCEL = "cancel"
    SHUTDOWN = "shutdown"
    DELETE = "delete"
    REPLACE = "replace"
    #: in a cluster: this server lost its lease on the job (another takes it over)
    LEASE_LOST = "lease_lost"


class StopSignal:
    """A one-shot request to stop, with the first reason given.

    Reaching :attr:`deadline` (trio time; the run owner sets it from the job's timeout
    when the runner starts) is a request too, with reason ``TIMEOUT``. It takes no task
    to notice: :meth:`wait` returns then, a scope given to :meth:`cancels` has it as
    its deadline, and :attr:`requested` and :attr:`reason` look at the clock.
    """

    def __init__(self) -> None:
        self._event = trio.Event()
        self._reason: StopReason | None = None
        self.deadline = math.inf
        self._hooks: list[Callable[[], None]] = []

    def request(self, reason: StopReason) -> None:
        if self._reason is None:
            self._reason = reason
        if self._event.is_set():
            return
        self._event.set()
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()

    def expire_at(self, deadline: float) -> None:
        """Request a stop (``TIMEOUT``) at ``deadline`` (trio time) unless one comes first."""
        self.deadline = deadline

    def on_request(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once a stop is requested (now, if it has been); not at the
        deadline, which the caller can turn into a cancel scope's own."""
        if self.requested:
            hook()
        else:
            self._hooks.append(hook)

    def cancels(self, scope: trio.CancelScope) -> None:
        """Cancel ``scope`` when a stop is requested or the deadline comes."""
        scope.deadline = min(scope.deadline, self.deadline)
        self.on_request(scope.cancel)

    def _expire(self) -> None:
        if self.deadline != math.inf and not self._event.is_set() and trio.current_time() >= self.deadline:
            self.request(StopReason.TIMEOUT)

    @property
    def requested(self) -> bool:
        self._expire()
        return self._event.is_set()

    @property
    def reason(self) -> StopReason | None:
        self._expire()
        return self._reason

    async def wait(self) -> None:
        with trio.move_on_at(self.deadline):
            await self._event.wait()
        self._expire()


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

    def local_runs(self) -> set[str]:
        """The runs that have something running on this host now."""
        ...


@runtime_checkable
class JobChecker(Protocol):
    """A runner that knows, from the server's configuration, jobs it could never run
    (an ``llm`` job naming an agent the server does not have)."""

    def check_job(self, spec: JobDefinition) -> str | None:
        """Why ``spec`` cannot run on this server, or ``None``."""
        ...


def check_runnable(runners: Mapping[RunnerType, object], spec: JobDefinition) -> None:
    """Raise :class:`~termjobs.errors.InvalidRequest` if the runner of ``spec`` says
    it could never run it (applied on create, and on updates of the runner config)."""
    runner = runners.get(spec.runner_type)
    if isinstance(runner, JobChecker):
        problem = runner.check_job(spec)
        if problem is not None:
            raise InvalidRequest(problem)
