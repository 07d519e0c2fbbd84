"""Crash recovery: ending runs whose owner is gone.

At start-up, runs that a previous process left ``claimed``, ``running`` or
``cancel_requested`` are ended (``failed`` / ``worker_lost``, retried per the job's
policy; ``cancelled`` if their cancel was pending), after killing whatever they left
running. The supervisor does the same for the runs of an actor that crashed.
"""

from __future__ import annotations

import logging

import trio

from termjobs import rundomain
from termjobs.actors.runs import RunEnv
from termjobs.model import Run, RunStatus
from termjobs.rundomain import Ending

logger = logging.getLogger(__name__)


async def recover_interrupted(env: RunEnv) -> int:
    """End the runs a previous process left unfinished; how many there were."""
    interrupted = [run for run in await env.storage.active_runs() if run.status is not RunStatus.QUEUED]
    recovered = await finish_lost(env, interrupted)
    if recovered:
        logger.warning("recovered %d run(s) interrupted by the previous shutdown or crash", recovered)
    return recovered


async def finish_lost(env: RunEnv, interrupted: list[Run]) -> int:
    """End runs whose owner is gone and kill what they left running; how many."""
    if not interrupted:
        return 0
    lost_ids = [run.id for run in interrupted]
    for reap in env.reapers:
        await trio.to_thread.run_sync(reap, lost_ids)
    now = env.clock.now()
    jobs = {job.id: job for job in await env.storage.get_jobs(sorted({run.job_id for run in interrupted}))}
    endings: list[Ending] = []
    for run in interrupted:
        outcome = rundomain.lost(run)
        job = jobs.get(run.job_id)
        retry = rundomain.plan_retry(job.spec, run, outcome.status, now, env.rng) if job else None
        notify = env.notify_targets(job) if job else ()
        endings.append(Ending(run, outcome, retry, notify=notify))
    finals = await env.storage.finish_runs(endings, now=now)
    for ending, final in zip(endings, finals, strict=True):
        job = jobs.get(ending.run.job_id)
        if final is not None and job is not None:  # counted, and its webhooks go out now
            env.observer.run_finished(job, final, notified=bool(ending.notify))
    return len(interrupted)
