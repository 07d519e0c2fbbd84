"""The RetentionActor: prunes old run history, once at start-up and then hourly.

It deletes terminal runs (with their events) that ended more than ``retention_days``
ago, and keeps at most ``max_runs_per_job`` terminal runs per job (the newest); then
the LLM sessions that no run refers to any more and that nobody continued within
``retention_days``. Active runs and their events are never touched. Deletes go in bounded batches, each
its own short write, so the API and the job actors never wait behind a long delete.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import trio

from termjobs.clock import Clock, sleep_until
from termjobs.storage import Storage
from termjobs.storage.base import RECEIPT_LIFETIME

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = dt.timedelta(hours=1)
BATCH = 500


@dataclass(frozen=True, slots=True)
class SweepStats:
    """What one sweep deleted."""

    expired: int
    over_cap: int
    batches: int
    sessions: int = 0


class RetentionActor:
    """Deletes old terminal runs (see the module docstring)."""

    def __init__(
        self,
        storage: Storage,
        clock: Clock,
        *,
        retention_days: int,
        max_runs_per_job: int,
        interval: dt.timedelta = SWEEP_INTERVAL,
        batch: int = BATCH,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._retention = dt.timedelta(days=retention_days)
        self._cap = max_runs_per_job
        self._interval = interval
        self._batch = batch
        self.last: SweepStats | None = None
        self._scope = trio.CancelScope()
        #: whether this server sweeps now (in a cluster, one server at a time does)
        self._active = active

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Sweep now, then every ``interval``; a failed sweep is retried next time."""
        task_status.started()
        with self._scope:
            while True:
                try:
                    if self._active():
                        await self.sweep()
                except Exception:
                    logger.exception("retention sweep failed; retrying at the next interval")
                await sleep_until(self._clock, self._clock.now() + self._interval)

    def stop(self) -> None:
        """End :meth:`run` (server shutdown); a delete in progress is rolled back."""
        self._scope.cancel()

    async def sweep(self) -> SweepStats:
        """Delete what is past retention; returns the counts (also logged)."""
        started = trio.current_time()
        await self._storage.delete_receipts(before=self._clock.now() - RECEIPT_LIFETIME)
        before = self._clock.now() - self._retention
        expired, batches = await self._drain(
            lambda: self._storage.expired_runs(before=before, limit=self._batch)
        )
        over_cap = 0
        for job_id in await self._storage.jobs_over_run_cap(cap=self._cap):
            deleted, more = await self._drain(
                partial(self._storage.runs_beyond_cap, job_id, cap=self._cap, limit=self._batch)
            )
            over_cap, batches = over_cap + deleted, batches + more
        sessions = await self._drain_sessions(before)
        self.last = SweepStats(expired=expired, over_cap=over_cap, batches=batches, sessions=sessions)
        if expired or over_cap or sessions:
            logger.info(
                "retention: deleted %d run(s) older than %d days, %d beyond %d per job "
                "and %d unreferenced LLM session(s) (%d batches, %.0f ms)",
                expired,
                self._retention.days,
                over_cap,
                self._cap,
                sessions,
                batches,
                (trio.current_time() - started) * 1000,
            )
        return self.last

    async def _drain_sessions(self, before: dt.datetime) -> int:
        deleted = 0
        while True:
            count = await self._storage.delete_orphan_sessions(before=before, limit=self._batch)
            deleted += count
            if count < self._batch:
                return deleted

    async def _drain(self, find: Callable[[], Awaitable[list[str]]]) -> tuple[int, int]:
        deleted = batches = 0
        while ids := await find():
            deleted += await self._storage.delete_terminal_runs(ids)
            batches += 1
            if len(ids) < self._batch:
                break
        return deleted, batches
