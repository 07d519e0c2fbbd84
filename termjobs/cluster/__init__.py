"""Several servers on one PostgreSQL database (see ``node``, ``router``, ``feed``).

Servers started with the same ``--db postgresql://...`` form a cluster with no other
setting: PostgreSQL is the only coordinator. A SQLite file serves one server only;
:func:`lock_sqlite` refuses a second one.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
import trio
from sqlalchemy.engine import URL

if TYPE_CHECKING:  # imported by open_cluster: a SQLite server never loads them (nor psycopg)
    from termjobs.actors.supervisor import Supervisor
    from termjobs.cluster.bus import Bus
    from termjobs.cluster.feed import EventFeed
    from termjobs.cluster.node import ClusterNode
    from termjobs.cluster.router import RequestServer, Router
    from termjobs.model import RunEvent
    from termjobs.runners.base import OrphanReaper
    from termjobs.storage.database import SqlStorage

__all__ = ["Cluster", "SingleServerError", "is_clustered", "lock_sqlite", "open_cluster"]


class SingleServerError(RuntimeError):
    """Another server already uses this SQLite file."""


def is_clustered(url: URL) -> bool:
    """Whether servers on ``url`` form a cluster (PostgreSQL does; SQLite does not)."""
    return url.get_backend_name() == "postgresql"


@contextmanager
def lock_sqlite(url: URL) -> Iterator[None]:
    """Hold an exclusive lock on the SQLite file while the server runs; a second
    server on the same file is refused at start (:class:`SingleServerError`)."""
    assert url.database is not None
    path = os.path.abspath(url.database)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SingleServerError(
                f"another termjobs server is already using {path}; a SQLite database serves one server. "
                "Stop the other server, or run several on PostgreSQL (--db postgresql://...)"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


def _current_schema(conn: sa.Connection) -> str:
    return str(conn.execute(sa.select(sa.func.current_schema())).scalar())


@dataclass(frozen=True, slots=True)
class Cluster:
    """The running parts of this server's cluster membership."""

    node: ClusterNode
    router: Router
    requests: RequestServer
    feed: EventFeed
    bus: Bus

    @property
    def worker_id(self) -> str:
        return self.node.worker_id


def advertised_url(host: str, port: int) -> str:
    """The URL other servers and operators can reach this one at."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@asynccontextmanager
async def open_cluster(
    storage: SqlStorage,
    supervisor: Supervisor,
    *,
    worker_id: str,
    url: str,
    version: str,
    lease_s: float,
    request_timeout: float,
    publish: Callable[[Sequence[RunEvent]], None],
    reapers: Sequence[OrphanReaper] = (),
) -> AsyncIterator[Cluster]:
    """This server's part of the cluster on ``storage``'s database: notifications are
    listened for and every server's events published (through ``publish``) from
    here on. The caller then starts the supervisor, the node (``cluster.node.run``:
    joining and taking this server's share of the jobs) and the request server, and
    stops the supervisor and leaves (``cluster.node.leave``) before this ends."""
    from termjobs.cluster.bus import Bus
    from termjobs.cluster.feed import EventFeed
    from termjobs.cluster.node import ClusterNode
    from termjobs.cluster.router import RequestServer, Router
    from termjobs.storage.sql.cluster import EVENTS_CHANNEL, MEMBERS_CHANNEL, channel_tag, worker_channel
    from termjobs.storage.transactions import Fence

    schema = await storage.gateway.read(_current_schema)
    tag = channel_tag(schema)
    storage.fence = Fence(worker_id, lease_s)
    storage.gateway.events_channel = tag + EVENTS_CHANNEL
    feed = EventFeed(storage, publish)
    node = ClusterNode(
        storage,
        supervisor,
        worker_id=worker_id,
        host=socket.gethostname(),
        pid=os.getpid(),
        url=url,
        version=version,
        lease_s=lease_s,
        reapers=reapers,
    )
    supervisor.membership = node
    router = Router(
        supervisor, storage, worker_id=worker_id, lease_s=lease_s, request_timeout=request_timeout
    )
    requests = RequestServer(supervisor, storage, worker_id=worker_id)

    def for_me(payload: str) -> None:
        if payload.startswith("reply"):
            router.replied(payload)
        elif payload.startswith("request"):
            requests.woken(payload)
        else:
            node.rebalance_soon()

    def reconnected() -> None:
        feed.resync()
        requests.woken()
        node.rebalance_soon()

    bus = Bus(
        storage.gateway.engines.url,
        {
            tag + EVENTS_CHANNEL: feed.announced,
            tag + MEMBERS_CHANNEL: node.rebalance_soon,
            tag + worker_channel(worker_id): for_me,
        },
        reconnected,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        await nursery.start(feed.run)
        try:
            yield Cluster(node=node, router=router, requests=requests, feed=feed, bus=bus)
        finally:
            nursery.cancel_scope.cancel()
