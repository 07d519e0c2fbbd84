"""The running components, as the HTTP layer and tests see them.

A leaf module: the composition root (``termjobs.service``) builds a :class:`Services`
and hands it to the HTTP app; nothing here starts or stops anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from termjobs import __version__
from termjobs.actors.hub import Hub
from termjobs.actors.retention import RetentionActor
from termjobs.actors.supervisor import Supervisor
from termjobs.clock import Clock
from termjobs.config import Settings
from termjobs.metrics import Metrics
from termjobs.storage import Storage


@dataclass(slots=True)
class ServiceState:
    """What changes while the service runs (read by readiness)."""

    #: set the moment a shutdown begins (before the listener closes)
    shutting_down: bool = False


@dataclass(frozen=True, slots=True)
class Services:
    """What a request handler may use: decisions go to the supervisor, reads to
    storage, live events come from the hub."""

    settings: Settings
    clock: Clock
    storage: Storage
    hub: Hub
    supervisor: Supervisor
    retention: RetentionActor
    metrics: Metrics
    state: ServiceState = field(default_factory=ServiceState)
    version: str = __version__
