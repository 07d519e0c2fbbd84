"""Prometheus metrics of one server (``GET /metrics``).

A :class:`Metrics` owns its own registry (no global state): counters and histograms
are fed by the components through small observer hooks (a run started or finished,
fires recorded, a storage batch committed, a subscriber lagged, a request answered);
the gauges are read from the components at scrape time. Counting costs a few
microseconds per run: label children are resolved once and cached.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from termjobs.jobdef import Job
from termjobs.model import Run, RunnerType, RunStatus
from termjobs.rundomain import Enqueue, FireDecision

#: Run durations from a fraction of a second to a day.
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400)
#: Fire lag: scheduling precision is in milliseconds; misfires are minutes to days late.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)


@dataclass(frozen=True, slots=True)
class Gauges:
    """Where the gauges come from, read at scrape time."""

    runs_queued: Callable[[], int]
    runs_running: Callable[[], int]
    actors_awake: Callable[[], int]
    jobs: Callable[[], int]
    stream_subscribers: Callable[[], int]


class _GaugeCollector(Collector):
    def __init__(self, gauges: Gauges) -> None:
        self._gauges = gauges

    def collect(self) -> Iterable[Metric]:
        for name, doc, read in (
            (
                "termjobs_runs_queued",
                "Runs waiting for their time, their job's limit or a worker.",
                "runs_queued",
            ),
            ("termjobs_runs_running", "Runs executing now.", "runs_running"),
            ("termjobs_actors_awake", "Job actors running (the others hibernate).", "actors_awake"),
            ("termjobs_jobs", "Jobs known to this server.", "jobs"),
            ("termjobs_stream_subscribers", "Open live-stream subscriptions.", "stream_subscribers"),
        ):
            yield GaugeMetricFamily(name, doc, value=getattr(self._gauges, read)())


class Metrics:
    """The server's metrics (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._started = Counter("termjobs_runs_started", "Runs started.", ["runner"], registry=r)
        self._finished = Counter(
            "termjobs_runs_finished", "Runs that reached a final status.", ["runner", "status"], registry=r
        )
        self._duration = Histogram(
            "termjobs_run_duration_seconds",
            "From start to finish.",
            ["runner"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self._fire_lag = Histogram(
            "termjobs_fire_lag_seconds",
            "From a fire's nominal time to its run queued.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self._write = Histogram(
            "termjobs_storage_write_seconds",
            "One group-committed write transaction.",
            buckets=WRITE_BUCKETS,
            registry=r,
        )
        self._batch = Histogram(
            "termjobs_storage_batch_size", "Writes committed together.", buckets=BATCH_BUCKETS, registry=r
        )
        self._lagged = Counter(
            "termjobs_stream_lagged", "Live-stream subscribers closed for falling behind.", registry=r
        )
        self._requests = Counter(
            "termjobs_http_requests", "HTTP requests answered.", ["route", "method", "status"], registry=r
        )
        # Label children resolved once: the run path stays a dictionary lookup.
        self._started_by = {kind: self._started.labels(runner=kind.value) for kind in RunnerType}
        self._duration_by = {kind: self._duration.labels(runner=kind.value) for kind in RunnerType}
        self._finished_by = {
            (kind, status): self._finished.labels(runner=kind.value, status=status.value)
            for kind in RunnerType
            for status in RunStatus
            if status.terminal
        }

    def watch(self, gauges: Gauges) -> None:
        """Report the gauges read from ``gauges`` at every scrape."""
        self.registry.register(_GaugeCollector(gauges))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

    # ------------------------------------------------------------- observers

    def run_started(self, job: Job, run: Run) -> None:
        self._started_by[job.spec.runner_type].inc()

    def run_finished(self, job: Job, run: Run, *, notified: bool) -> None:
        kind = job.spec.runner_type
        self._finished_by[(kind, run.status)].inc()
        if run.started_at is not None and run.finished_at is not None:
            self._duration_by[kind].observe((run.finished_at - run.started_at).total_seconds())

    def fires_recorded(self, job: Job, decisions: Sequence[FireDecision], now: dt.datetime) -> None:
        kind = job.spec.runner_type
        for decision in decisions:
            if isinstance(decision, Enqueue):
                self._fire_lag.observe(max(0.0, (now - decision.run.scheduled_for).total_seconds()))
            else:
                self._finished_by[(kind, RunStatus.SKIPPED)].inc()

    def batch_committed(self, size: int, seconds: float) -> None:
        self._write.observe(seconds)
        self._batch.observe(size)

    def subscriber_lagged(self) -> None:
        self._lagged.inc()

    def request_answered(self, route: str, method: str, status: int) -> None:
        self._requests.labels(route=route, method=method, status=str(status)).inc()
