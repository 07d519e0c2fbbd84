"""One run's lifecycle, from ``queued`` to its final status.

A run task (owned by its job's actor, in the actor's run nursery):

1. waits until ``scheduled_for``, then for a slot of its job (the job's concurrency
   limit) and a global run slot (``--jobs-workers``), FIFO;
2. records ``claimed`` and ``running``, then executes the runner with a timeout;
3. decides the final status from the runner's result and why it was stopped, and
   writes it (plus any retry) in one transaction.

The final write is shielded from cancellation and time-limited, so a run can never be
left ``running`` by a cancelled task: if the run task itself is torn down (its actor
crashed), the run is recorded as ``failed`` / ``worker_lost``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import trio

from termjobs.clock import Clock, sleep_until
from termjobs.errors import Unavailable
from termjobs.model import EventType, ExitReason, Job, JSONValue, Run, RunnerType, RunStatus, RunTrigger
from termjobs.retry import format_duration, parse_retry_policy, retry_delay
from termjobs.runners.base import Emit, RunContext, Runner, RunResult, StopReason, StopSignal
from termjobs.storage import runops, store
from termjobs.storage.gateway import Gateway, WriteOp

logger = logging.getLogger(__name__)

_STOP_MESSAGES = {
    StopReason.CANCEL: "cancelled by request",
    StopReason.SHUTDOWN: "cancelled: the server shut down before the run finished",
    StopReason.DELETE: "cancelled: the job was deleted",
    StopReason.REPLACE: "cancelled: replaced by a newer run (concurrency_policy replace)",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnv:
    """What every run task needs from the service."""

    gateway: Gateway
    clock: Clock
    runners: Mapping[RunnerType, Runner]
    slots: trio.CapacityLimiter
    worker_id: str
    rng: random.Random = field(default_factory=random.Random)
    finalize_timeout: float = 30.0
    #: after a stop request, how long past the kill grace a runner may take to return
    stop_backstop: float = 15.0
    #: clean up processes left behind by runs of a server that died (crash recovery)
    reapers: tuple[Callable[[Sequence[str]], int], ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a due run must not start, as recorded on its ``skipped`` event."""

    message: str
    data: dict[str, Any]


#: Decides, when a retry comes due, whether it may start (``None``) or is skipped.
Admit = Callable[["RunHandle"], Refusal | None]


@dataclass(eq=False)
class RunHandle:
    """The owner's grip on one active run."""

    run: Run
    stop: StopSignal = field(default_factory=StopSignal)
    wait_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    started: bool = False
    final: Run | None = None
    done: trio.Event = field(default_factory=trio.Event)

    def cancel(self, reason: StopReason) -> None:
        """Stop the run: a waiting run leaves the queue, a running one is stopped."""
        self.stop.request(reason)
        if not self.started:
            self.wait_scope.cancel()


class RunTask:
    """Drives one :class:`RunHandle` to a final status."""

    def __init__(
        self,
        handle: RunHandle,
        env: RunEnv,
        *,
        current_job: Callable[[], Job],
        job_slot: trio.CapacityLimiter,
        on_retry: Callable[[Run], None],
        admit: Admit | None = None,
    ) -> None:
        self.handle = handle
        self.env = env
        self._current_job = current_job
        self._job_slot = job_slot
        self._on_retry = on_retry
        self._admit = admit

    async def __call__(self) -> None:
        run = self.handle.run
        held: list[trio.CapacityLimiter] = []
        try:
            with self.handle.wait_scope:
                await sleep_until(self.env.clock, run.scheduled_for)
                if run.trigger is RunTrigger.RETRY and await self._refused():
                    return
                for limiter in (self._job_slot, self.env.slots):
                    await limiter.acquire_on_behalf_of(run.id)
                    held.append(limiter)
            if self.handle.stop.requested:
                await self._never_started()
                return
            self.handle.started = True
            await self._execute()
        except Exception:
            # A run task must never take its actor down; the run is recorded as lost.
            logger.exception("run %s failed inside termjobs", run.id)
        finally:
            for limiter in held:
                limiter.release_on_behalf_of(run.id)
            try:
                if self.handle.started and self.handle.final is None:
                    await self._record_lost()
            finally:
                self.handle.done.set()

    async def _write_final(
        self, op: WriteOp[Run | None], *, fallback: WriteOp[Run | None] | None = None
    ) -> Run | None:
        """Write a final state even while being cancelled: shielded, and retried with
        backoff for up to ``finalize_timeout`` while storage fails. A write that storage
        refuses for good (not a transient error) is replaced by ``fallback`` (the same
        final state without its output). If nothing succeeds the run stays non-terminal
        in storage and the next start's crash recovery ends it."""
        deadline = trio.current_time() + self.env.finalize_timeout
        delay = 0.1
        with trio.CancelScope(shield=True):
            while True:
                try:
                    with trio.fail_after(max(0.0, deadline - trio.current_time())):
                        return await self.env.gateway.write(op)
                except (trio.TooSlowError, Unavailable):
                    break
                except sa.exc.DBAPIError as exc:
                    transient = isinstance(exc, sa.exc.OperationalError)
                    logger.error("run %s: could not record its final state: %s", self.handle.run.id, exc)
                    if not transient and fallback is not None:
                        op, fallback = fallback, None
                        continue
                except Exception:
                    logger.exception("run %s: could not record its final state", self.handle.run.id)
                if trio.current_time() + delay > deadline:
                    break
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)
        logger.error(
            "run %s: final state not recorded; it will be recovered at the next start", self.handle.run.id
        )
        return None

    async def _refused(self) -> bool:
        """Apply the job's pause state and concurrency policy to a retry that came due."""
        refusal = self._admit(self.handle) if self._admit else None
        if refusal is None:
            return False
        now, run = self.env.clock.now(), self.handle.run
        self.handle.final = await self._write_final(
            lambda tx: runops.skip_queued(tx, run, now=now, message=refusal.message, data=refusal.data)
        )
        return True

    async def _never_started(self) -> None:
        reason = self.handle.stop.reason
        if reason in (None, StopReason.SHUTDOWN):
            return  # stays queued; it runs after the next start
        message = "run cancelled before start"
        if reason is not StopReason.CANCEL:
            message = f"run {_STOP_MESSAGES[reason]} before start"
        now = self.env.clock.now()
        run = self.handle.run
        self.handle.final = await self._write_final(
            lambda tx: runops.cancel_queued(tx, run, now=now, message=message)
        )

    async def _execute(self) -> None:
        job = self._current_job()
        now = self.env.clock.now()
        queued = self.handle.run
        running = await self.env.gateway.write(
            lambda tx: runops.start_run(tx, queued, worker_id=self.env.worker_id, now=now)
        )
        if running is None:  # cancelled between our check and the write
            self.handle.final = await self.env.gateway.read(lambda conn: store.get_run(conn, queued.id))
            return
        self.handle.run = running
        # A stop that arrived while the start was being written wins: do not spawn.
        result = RunResult() if self.handle.stop.requested else await self._invoke(job, running)
        await self._finish(job, running, result)

    async def _invoke(self, job: Job, run: Run) -> RunResult:
        runner = self.env.runners.get(job.runner_type)
        if runner is None:
            return RunResult(error=f"unknown runner type: {job.runner_type}")
        ctx = RunContext(job=job, run=run, stop=self.handle.stop, emit=self._emitter(run))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._timeout_watch, job.timeout_seconds)
            with trio.CancelScope() as runner_scope:
                nursery.start_soon(self._backstop, runner_scope, _kill_grace(job))
                try:
                    result = await runner.run(ctx)
                except Exception as exc:
                    logger.exception("runner failed for run %s", run.id)
                    result = RunResult(error=f"runner failed: {exc}", exit_reason=ExitReason.EXCEPTION)
            if runner_scope.cancelled_caught:
                result = RunResult(error="the runner did not stop in time and was abandoned")
            nursery.cancel_scope.cancel()
        return result

    async def _timeout_watch(self, seconds: int) -> None:
        await trio.sleep(seconds)
        self.handle.stop.request(StopReason.TIMEOUT)

    async def _backstop(self, scope: trio.CancelScope, kill_grace: float) -> None:
        await self.handle.stop.wait()
        await trio.sleep(kill_grace + self.env.stop_backstop)
        scope.cancel()

    def _emitter(self, run: Run) -> Emit:
        async def emit(event_type: EventType, message: str | None, data: JSONValue | None) -> None:
            # Queued, not awaited: a run's live events keep their order (one writer)
            # and are committed before its final state, which is written after them.
            now = self.env.clock.now()
            await self.env.gateway.submit(
                lambda tx: store.insert_event(
                    tx, run=run, event_type=event_type, message=message, now=now, data=data
                )
            )

        return emit

    async def _finish(self, job: Job, run: Run, result: RunResult) -> None:
        outcome = decide(job, result, self.handle.stop.reason)
        now = self.env.clock.now()
        retry = plan_retry(self._current_job(), run, outcome.status, now, self.env.rng)
        final = await self._write_final(
            lambda tx: runops.finish_run(tx, run, outcome, now=now, retry=retry),
            fallback=lambda tx: runops.finish_run(tx, run, _without_output(outcome), now=now, retry=retry),
        )
        self.handle.final = final or run
        if final is not None and retry is not None and final.status is not RunStatus.CANCELLED:
            self._on_retry(retry.run)

    async def _record_lost(self) -> None:
        """The run task was torn down mid-run (its actor crashed): record that."""
        run = self.handle.run
        outcome = runops.Outcome(
            status=RunStatus.FAILED,
            exit_reason=ExitReason.WORKER_LOST,
            error="run interrupted: its job actor stopped unexpectedly",
        )
        now = self.env.clock.now()
        self.handle.final = await self._write_final(lambda tx: runops.finish_run(tx, run, outcome, now=now))


def _without_output(outcome: runops.Outcome) -> runops.Outcome:
    note = "the run's output could not be stored"
    return dataclasses.replace(
        outcome,
        stdout=None,
        stderr=None,
        thinking=None,
        response=None,
        error=f"{outcome.error}; {note}" if outcome.error else note,
    )


def _kill_grace(job: Job) -> float:
    config = job.runner_config if isinstance(job.runner_config, dict) else {}
    grace = config.get("kill_grace_seconds", 5)
    return float(grace) if isinstance(grace, int | float) else 5.0


def decide(job: Job, result: RunResult, stopped: StopReason | None) -> runops.Outcome:
    """The final status of a run from what its runner reported and why it was stopped."""
    common: dict[str, Any] = {
        "exit_code": result.exit_code,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "thinking": result.thinking,
        "response": result.response,
        "session_id": result.session_id,
        "truncated": result.truncated,
        "turn_count": result.turn_count,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
    }
    if stopped is StopReason.TIMEOUT or (stopped is None and result.exit_reason is ExitReason.TIMEOUT):
        error = f"run timed out after {job.timeout_seconds}s (timeout_seconds)"
        return runops.Outcome(RunStatus.TIMED_OUT, ExitReason.TIMEOUT, error, **common)
    if stopped is not None:
        return runops.Outcome(RunStatus.CANCELLED, ExitReason.CANCELLED, _STOP_MESSAGES[stopped], **common)
    if result.exit_reason is ExitReason.CANCELLED:
        return runops.Outcome(
            RunStatus.CANCELLED, ExitReason.CANCELLED, result.error or "cancelled", **common
        )
    if result.error:
        return runops.Outcome(
            RunStatus.FAILED, result.exit_reason or ExitReason.EXCEPTION, result.error, **common
        )
    return runops.Outcome(RunStatus.SUCCEEDED, result.exit_reason or ExitReason.NATURAL_COMPLETION, **common)


def plan_retry(
    job: Job, run: Run, status: RunStatus, now: dt.datetime, rng: random.Random
) -> runops.Retry | None:
    """The retry run to create if ``run`` ends with ``status``, per the job's policy."""
    if status not in (RunStatus.FAILED, RunStatus.TIMED_OUT):
        return None
    try:
        policy = parse_retry_policy(job.retry_policy)
    except ValueError:
        return None
    if run.attempt >= policy.max_attempts:
        return None
    delay = retry_delay(policy, run.attempt, uniform=rng.uniform)
    retry = runops.new_run(
        job,
        trigger=RunTrigger.RETRY,
        scheduled_for=now + delay,
        now=now,
        attempt=run.attempt + 1,
        retry_of=run.id,
    )
    return runops.Retry(run=retry, delay=format_duration(delay))
