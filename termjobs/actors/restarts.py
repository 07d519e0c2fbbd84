"""When a crashed job actor is started again, and with what.

A crashed actor is restarted one-for-one after a backoff that doubles per crash; one
that crashes more than ``max_restarts`` times within ``window`` seconds is *faulted*:
logged, left stopped, and never a reason for the service to go down.
"""

from __future__ import annotations

import logging
from collections import deque

import trio

from termjobs.actors.recovery import finish_lost
from termjobs.actors.runs import RunEnv
from termjobs.jobdef import Job
from termjobs.model import Run, RunStatus

logger = logging.getLogger(__name__)


class CrashPolicy:
    """Counts one job's crashes on the trio clock (see the module docstring)."""

    def __init__(self, *, max_restarts: int, window: float) -> None:
        self._max_restarts = max_restarts
        self._window = window
        self._crashes: deque[float] = deque()

    def __len__(self) -> int:
        """Crashes within the window."""
        return len(self._crashes)

    def may_restart(self) -> bool:
        """Count a crash now; whether the actor may be restarted."""
        now = trio.current_time()
        self._crashes.append(now)
        while self._crashes and self._crashes[0] < now - self._window:
            self._crashes.popleft()
        return len(self._crashes) <= self._max_restarts

    def backoff(self) -> float:
        """Seconds to wait before the next start: 0.5 s doubling per crash, at most 30 s."""
        return min(30.0, 0.5 * 2.0 ** (len(self._crashes) - 1))


async def reload_after_crash(
    env: RunEnv, job_id: str, delay: float, closing: trio.Event
) -> tuple[Job, list[Run]] | None:
    """Wait ``delay`` (cut short by ``closing``), then the job and its queued runs as a
    new actor takes them; ``None``: do not restart (stopping, or the job is gone).

    Runs the crashed actor left running are ended as lost (their processes were killed
    when its run tasks were torn down); storage errors are retried with a growing delay.
    """
    while True:
        with trio.move_on_after(delay):
            await closing.wait()  # shutdown does not wait out a backoff
        if closing.is_set():
            return None
        try:
            return await _reload(env, job_id)
        except Exception:
            logger.exception("job %s: reloading after a crash failed; retrying", job_id)
            delay = min(60.0, delay * 2)


async def _reload(env: RunEnv, job_id: str) -> tuple[Job, list[Run]] | None:
    job = await env.storage.get_job(job_id)
    if job is None:
        return None
    active = await env.storage.active_runs([job_id])
    await finish_lost(env, [run for run in active if run.status is not RunStatus.QUEUED])
    runs = await env.storage.active_runs([job_id])
    return job, [run for run in runs if run.status is RunStatus.QUEUED]
