"""The running components, as the HTTP layer and tests see them.

A leaf module: the composition root (``termjobs.service``) builds a :class:`Services`
and hands it to the HTTP app; nothing here starts or stops anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from termjobs import __version__
from termjobs.actors.hub import Hub
from termjobs.actors.protocol import Idempotency
from termjobs.actors.retention import RetentionActor
from termjobs.actors.supervisor import Supervisor
from termjobs.clock import Clock
from termjobs.config import Settings
from termjobs.jobdef import Job, JobDefinition
from termjobs.jobspec import JobPatch
from termjobs.metrics import Metrics
from termjobs.model import JSONObject, Run
from termjobs.storage import Storage

if TYPE_CHECKING:
    from termjobs.cluster import Cluster


class JobControl(Protocol):
    """The decisions on jobs: made by this server's supervisor, or in a cluster by
    the supervisor of the server that owns the job (``termjobs.cluster.router``)."""

    async def create_job(self, spec: JobDefinition, *, idempotency: Idempotency | None = None) -> Job: ...

    async def trigger(
        self, ref: str, *, overrides: JSONObject | None = None, idempotency: Idempotency | None = None
    ) -> Run: ...

    async def update(self, ref: str, patch: JobPatch) -> Job: ...

    async def pause(self, ref: str) -> Job: ...

    async def resume(self, ref: str) -> Job: ...

    async def delete(self, ref: str, *, cancel_active: bool) -> str: ...

    async def cancel_run(self, run_id: str) -> Run: ...


@dataclass(slots=True)
class ServiceState:
    """What changes while the service runs (read by readiness)."""

    #: set the moment a shutdown begins (before the listener closes)
    shutting_down: bool = False


@dataclass(frozen=True, slots=True)
class Services:
    """What a request handler may use: decisions go to ``control``, reads to storage,
    live events come from the hub."""

    settings: Settings
    clock: Clock
    storage: Storage
    hub: Hub
    supervisor: Supervisor
    retention: RetentionActor
    metrics: Metrics
    control: JobControl
    #: this server's cluster membership (PostgreSQL), ``None`` on SQLite
    cluster: Cluster | None = None
    state: ServiceState = field(default_factory=ServiceState)
    version: str = __version__
