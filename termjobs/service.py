"""The composition root: builds every component and decides start and stop order.

Start order (each component is ready before the next starts): event hub, storage
gateway (migrations, its writer), supervisor (crash recovery, one actor per job),
then the HTTP server. Stop order is the reverse: stop accepting HTTP, close live
streams, stop firing schedules, give running runs ``shutdown_grace`` seconds, stop the
rest and record their final state, then close storage.
"""

from __future__ import annotations

import gc
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import ExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig

from termjobs import __version__
from termjobs.actors.hub import Hub
from termjobs.actors.notifier import Notifier
from termjobs.actors.retention import RetentionActor
from termjobs.actors.runs import Observers, RunEnv
from termjobs.actors.supervisor import Supervisor
from termjobs.clock import Clock, SystemClock
from termjobs.cluster import Cluster, advertised_url, is_clustered, lock_sqlite, open_cluster
from termjobs.config import Settings
from termjobs.metrics import Gauges, Metrics
from termjobs.model import RunEvent, RunnerType, new_worker_id
from termjobs.runners.base import BackgroundService, OrphanReaper, Runner
from termjobs.runners.llm.runner import LLMRunner
from termjobs.runners.program import ProgramRunner
from termjobs.services import Services
from termjobs.storage import Storage
from termjobs.storage.database import SqlStorage, open_storage

logger = logging.getLogger(__name__)

#: Upper bound on graceful shutdown beyond ``shutdown_grace``: the kill grace of the
#: stopped runs plus the time to record their final state.
SHUTDOWN_MARGIN_S = 60.0
#: How long a stopping server tries to tell the cluster it left (else its lease lapses).
LEAVE_TIMEOUT_S = 10.0


def default_runners(
    settings: Settings, *, storage: Storage, clock: Clock, base_env: Mapping[str, str]
) -> dict[RunnerType, Runner]:
    """The runners of a server started from the CLI. No program (and no agent's shell
    command) sees the environment variables that hold provider keys."""
    keys = settings.llm.key_variables
    without_keys = {name: value for name, value in base_env.items() if name not in keys}
    return {
        RunnerType.PROGRAM: ProgramRunner(base_env=without_keys, run_as=settings.run_as),
        RunnerType.LLM: LLMRunner(settings.llm, storage=storage, clock=clock, base_env=base_env),
    }


@asynccontextmanager
async def open_services(
    settings: Settings,
    *,
    clock: Clock | None = None,
    runners: Mapping[RunnerType, Runner] | None = None,
    base_env: Mapping[str, str] | None = None,
    inline_db: bool = False,
    rng: random.Random | None = None,
) -> AsyncIterator[Services]:
    """Start everything but HTTP; on exit, shut down gracefully (see module doc)."""
    clock = clock or SystemClock()
    metrics = Metrics()
    hub = Hub(on_lagged=metrics.subscriber_lagged)
    clustered = is_clustered(settings.db_url)
    # Committed events go to the hub; in a cluster, through the feed that merges in
    # every other server's events, in id order.
    publish = _Relay(hub.publish)
    with ExitStack() as single_server:
        if not clustered:
            single_server.enter_context(lock_sqlite(settings.db_url))
        async with open_storage(
            settings.db_url,
            inline=inline_db,
            on_commit=publish,
            on_batch=metrics.batch_committed,
            read_timeout=settings.request_timeout,
        ) as storage:
            env_source = base_env if base_env is not None else os.environ
            runners = runners or default_runners(settings, storage=storage, clock=clock, base_env=env_source)
            notifier = Notifier(storage, clock)
            env = RunEnv(
                storage=storage,
                clock=clock,
                runners=runners,
                slots=trio.CapacityLimiter(settings.jobs_workers),
                worker_id=new_worker_id(),
                rng=rng or random.Random(),
                reapers=tuple(r.reap_orphans for r in runners.values() if isinstance(r, OrphanReaper)),
                observer=Observers(metrics, notifier),
                default_notify=settings.default_notify(),
            )
            supervisor = Supervisor(env, request_timeout=settings.request_timeout)
            metrics.watch(
                Gauges(
                    runs_queued=lambda: supervisor.run_counts()[0],
                    runs_running=lambda: supervisor.run_counts()[1],
                    actors_awake=lambda: supervisor.awake_count,
                    jobs=lambda: supervisor.job_count,
                    stream_subscribers=lambda: hub.subscriber_count,
                )
            )
            reapers = [runner for runner in runners.values() if isinstance(runner, OrphanReaper)]
            async with _membership(
                settings, storage, supervisor, env.worker_id, publish, hub, reapers
            ) as cluster:
                if cluster is not None:
                    notifier.owner = cluster.worker_id  # deliver the webhooks of this server's jobs
                retention = RetentionActor(
                    storage,
                    clock,
                    retention_days=settings.retention_days,
                    max_runs_per_job=settings.max_runs_per_job,
                    active=(lambda: cluster.node.leader) if cluster is not None else (lambda: True),
                )
                # Runner background services (the program runner's sweeper) outlive the runs.
                async with trio.open_nursery() as background:
                    for runner in runners.values():
                        if isinstance(runner, BackgroundService):
                            await background.start(runner.serve)
                    await background.start(notifier.run)
                    try:
                        async with trio.open_nursery() as nursery:
                            await nursery.start(supervisor.run)
                            if cluster is not None:
                                await background.start(cluster.node.run)
                                await background.start(cluster.requests.run)
                            await nursery.start(retention.run)
                            try:
                                yield Services(
                                    settings=settings,
                                    clock=clock,
                                    storage=storage,
                                    hub=hub,
                                    supervisor=supervisor,
                                    retention=retention,
                                    metrics=metrics,
                                    control=cluster.router if cluster is not None else supervisor,
                                    cluster=cluster,
                                )
                            finally:
                                # Shielded: final states must be recorded even if we are being cancelled.
                                with trio.CancelScope(shield=True) as scope:
                                    scope.deadline = (
                                        trio.current_time() + settings.shutdown_grace + SHUTDOWN_MARGIN_S
                                    )
                                    hub.close_all()
                                    await supervisor.shutdown(settings.shutdown_grace)
                                retention.stop()
                    finally:
                        # Only now, with every actor gone and its runs' final states written
                        # (the heartbeat kept the lease fresh for those fenced writes), are
                        # this server's jobs given up.
                        if cluster is not None:
                            with trio.CancelScope(shield=True) as scope:
                                scope.deadline = trio.current_time() + LEAVE_TIMEOUT_S
                                await cluster.node.leave()
                    background.cancel_scope.cancel()
            logger.info("job actors stopped")
        logger.info("storage closed")


@asynccontextmanager
async def _membership(
    settings: Settings,
    storage: SqlStorage,
    supervisor: Supervisor,
    worker_id: str,
    publish: _Relay,
    hub: Hub,
    reapers: Sequence[OrphanReaper],
) -> AsyncIterator[Cluster | None]:
    """This server's cluster membership on PostgreSQL (``None`` on SQLite)."""
    if not is_clustered(settings.db_url):
        yield None
        return
    async with open_cluster(
        storage,
        supervisor,
        worker_id=worker_id,
        url=advertised_url(settings.host, settings.port),
        version=__version__,
        lease_s=settings.lease_seconds,
        request_timeout=settings.request_timeout,
        publish=hub.publish,
        reapers=reapers,
    ) as cluster:
        publish.target = cluster.feed.committed
        yield cluster


class _Relay:
    """Hands committed events on to ``target`` (the cluster's feed, in a cluster)."""

    def __init__(self, target: Callable[[Sequence[RunEvent]], None]) -> None:
        self.target = target

    def __call__(self, events: Sequence[RunEvent]) -> None:
        self.target(events)


def hypercorn_config(settings: Settings) -> HypercornConfig:
    """Hypercorn settings for the jobs server (loopback by default, no access log)."""
    config = HypercornConfig()
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    config.bind = [f"{host}:{settings.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.h11_max_incomplete_size = settings.limits.max_header_bytes
    config.keep_alive_timeout = settings.limits.keep_alive_timeout
    config.include_server_header = False
    # In-flight requests get this long to finish on shutdown. hypercorn also holds idle
    # keep-alive connections open until this deadline, so it is kept short.
    config.graceful_timeout = 2.0
    return config


async def run_service(
    settings: Settings,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    clock: Clock | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the jobs server until ``shutdown_trigger`` returns; reports the bound URLs."""
    async with open_services(settings, clock=clock) as services:
        settle_memory()
        await serve_http(services, shutdown_trigger=shutdown_trigger, task_status=task_status)


#: The cyclic garbage collector's thresholds once the server runs (Python's: 700, 10, 10).
GC_THRESHOLD = (50_000, 20, 100)


def settle_memory() -> None:
    """Once the server has started: what lives as long as the server (modules, the
    registry of every job: a million jobs at rest are millions of objects) is moved out
    of the cyclic garbage collector's sight (``gc.freeze``), so that its collections
    stop walking it again and again; those objects are still freed as usual when
    dropped. Collections run less often (:data:`GC_THRESHOLD`): waking 100,000 jobs
    for one minute allocates millions of objects, and with Python's defaults the
    collector took most of the time (measured in benchmarks/RESULTS.md)."""
    gc.freeze()  # no collection first: on a million jobs it alone takes seconds
    gc.set_threshold(*GC_THRESHOLD)


async def serve_http(
    services: Services,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the REST API and streams of ``services`` until ``shutdown_trigger`` returns."""
    from termjobs.http.app import create_app
    from termjobs.http.server import connection_cap, raise_fd_limit, serve

    app = create_app(services)
    limits = services.settings.limits
    fd_limit = raise_fd_limit()
    cap = connection_cap(limits.max_connections, fd_limit)
    if cap < limits.max_connections:
        logger.warning(
            "--max-connections lowered from %d to %d: the process may open only %d files",
            limits.max_connections,
            cap,
            fd_limit,
        )
        limits = replace(limits, max_connections=cap)

    async def stop_http() -> None:
        await shutdown_trigger()
        services.state.shutting_down = True  # readiness fails from now on
        if services.settings.shutdown_drain > 0:
            # Keep answering while load balancers notice the failing readiness check.
            logger.info("draining for %gs before closing the listener", services.settings.shutdown_drain)
            await trio.sleep(services.settings.shutdown_drain)
        logger.info("shutting down: no new requests; closing live streams")
        # hypercorn would hold open websockets until its graceful timeout and then
        # cut them (1006); ending the subscriptions lets each stream close with 1001.
        services.hub.close_all()

    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            partial(serve, app, hypercorn_config(services.settings), limits, shutdown_trigger=stop_http)
        )
        task_status.started(urls)
    logger.info("HTTP server stopped")
