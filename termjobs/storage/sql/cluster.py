"""Statements of a cluster on PostgreSQL: servers, job owners, requests between servers.

Unlike the other statement modules, lease arithmetic uses the database's clock
(``now()``): servers on different hosts then agree on whose heartbeat is fresh even
when their own clocks disagree. Every function runs inside the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from termjobs.model import RunStatus
from termjobs.storage.base import NotOwner
from termjobs.storage.sql import Fences, WriteTx, chunks, driver_errors, execute_driver
from termjobs.storage.tables import cluster_requests, jobs, runs, workers

#: Channel every server listens on for event ids committed anywhere.
EVENTS_CHANNEL = "termjobs_events"
#: Channel of membership changes (a server joined or left cleanly).
MEMBERS_CHANNEL = "termjobs_members"
#: Serialises the insertion of run events over every server (see ``storage.sql.EventOrder``).
EVENTS_LOCK_KEY = 0x746A_6576_656E_7473 & 0x7FFF_FFFF_FFFF_FFFF


def worker_channel(worker_id: str) -> str:
    """The channel one server listens on for requests, replies and new jobs."""
    return f"termjobs_w_{worker_id}"


def _lease(seconds: float) -> sa.ColumnElement[dt.timedelta]:
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.literal(float(seconds), sa.Float))


def _live(lease_s: float) -> sa.ColumnElement[bool]:
    """A server is alive while its heartbeat is fresh and it has not left."""
    return sa.and_(workers.c.left_at.is_(None), workers.c.heartbeat_at > sa.func.now() - _lease(lease_s))


def channel_tag(schema: str) -> str:
    """The prefix of channel names on ``schema``. Channels are per database, not per
    schema: the tag keeps servers on different schemas of one database (tests) from
    waking each other. Empty for ``public``; :func:`notify` computes the same in SQL."""
    if schema == "public":
        return ""
    return hashlib.md5(schema.encode(), usedforsecurity=False).hexdigest()[:8] + "_"


def notify(conn: sa.Connection, channel: str, payload: str) -> None:
    """NOTIFY ``channel`` (tagged with the current schema, see :func:`channel_tag`);
    delivered when (and only if) the transaction commits."""
    schema = sa.func.current_schema()
    tag = sa.case((schema == "public", ""), else_=sa.func.substr(sa.func.md5(schema), 1, 8) + "_")
    conn.execute(sa.select(sa.func.pg_notify(tag + channel, payload)))


# ------------------------------------------------------------------------ servers


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """One server as the workers table has it."""

    id: str
    host: str
    pid: int
    url: str
    version: str
    started_at: dt.datetime
    heartbeat_age: float
    alive: bool


def register(
    tx: WriteTx, *, worker_id: str, host: str, pid: int, namespace: str, url: str, version: str
) -> None:
    """Add this server, alive from now, and tell the others."""
    tx.conn.execute(
        workers.insert().values(
            id=worker_id,
            host=host,
            pid=pid,
            namespace=namespace,
            url=url,
            version=version,
            started_at=sa.func.now(),
            heartbeat_at=sa.func.now(),
        )
    )
    notify(tx.conn, MEMBERS_CHANNEL, f"joined {worker_id}")


def heartbeat(tx: WriteTx, worker_id: str, *, lease_s: float) -> bool:
    """Renew this server's lease, and with it the lease on every job it owns (one
    statement). ``False`` if it had lapsed already: the server must let its jobs go."""
    renewed = tx.conn.execute(
        workers.update()
        .where(workers.c.id == worker_id, _live(lease_s))
        .values(heartbeat_at=sa.func.now())
        .returning(workers.c.id)
    ).first()
    return renewed is not None


def rejoin(tx: WriteTx, worker_id: str) -> None:
    """Make this server alive again after its lease lapsed (same id: the jobs nobody
    took over meanwhile are still its own)."""
    tx.conn.execute(
        workers.update().where(workers.c.id == worker_id).values(heartbeat_at=sa.func.now(), left_at=None)
    )
    notify(tx.conn, MEMBERS_CHANNEL, f"joined {worker_id}")


def neighbours(
    conn: sa.Connection, worker_id: str, namespace: str, *, lease_s: float
) -> list[tuple[str, int]]:
    """The other live servers in this server's pid namespace: (id, pid)."""
    query = sa.select(workers.c.id, workers.c.pid).where(
        workers.c.namespace == namespace, workers.c.id != worker_id, _live(lease_s)
    )
    return [(row.id, row.pid) for row in conn.execute(query)]


def mark_gone(tx: WriteTx, worker_ids: Sequence[str]) -> None:
    """Record servers known to be dead (their process is gone) as gone now, and tell
    the others: their jobs are taken over without waiting for their lease."""
    if worker_ids:
        gone = workers.update().where(workers.c.id.in_(list(worker_ids)), workers.c.left_at.is_(None))
        tx.conn.execute(gone.values(left_at=sa.func.now()))
        notify(tx.conn, MEMBERS_CHANNEL, "gone")


def leave(tx: WriteTx, worker_id: str) -> None:
    """Mark this server gone (a clean shutdown): its jobs may be taken at once."""
    tx.conn.execute(workers.update().where(workers.c.id == worker_id).values(left_at=sa.func.now()))
    notify(tx.conn, MEMBERS_CHANNEL, f"left {worker_id}")


def servers(conn: sa.Connection, *, lease_s: float) -> list[WorkerRow]:
    """Every server known, alive or not (those gone for a day are forgotten)."""
    age = sa.func.extract("epoch", sa.func.now() - workers.c.heartbeat_at)
    query = sa.select(
        workers.c.id,
        workers.c.host,
        workers.c.pid,
        workers.c.url,
        workers.c.version,
        workers.c.started_at,
        age.label("heartbeat_age"),
        _live(lease_s).label("alive"),
    ).order_by(workers.c.started_at, workers.c.id)
    return [
        WorkerRow(
            id=row.id,
            host=row.host,
            pid=row.pid,
            url=row.url,
            version=row.version,
            started_at=row.started_at,
            heartbeat_age=max(0.0, float(row.heartbeat_age)),
            alive=bool(row.alive),
        )
        for row in conn.execute(query)
    ]


def live_ids(conn: sa.Connection, *, lease_s: float) -> list[str]:
    """The ids of the servers alive now, oldest first."""
    query = sa.select(workers.c.id).where(_live(lease_s)).order_by(workers.c.started_at, workers.c.id)
    return list(conn.execute(query).scalars())


def forget(tx: WriteTx, *, older_than: dt.timedelta) -> int:
    """Delete servers silent for ``older_than`` that own no job, and answered requests
    as old; how many servers."""
    cutoff = sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, older_than.total_seconds())
    owning = sa.select(jobs.c.owner_id).where(jobs.c.owner_id.is_not(None)).distinct()
    gone = tx.conn.execute(
        workers.delete().where(workers.c.heartbeat_at < cutoff, workers.c.id.not_in(owning))
    ).rowcount
    tx.conn.execute(cluster_requests.delete().where(cluster_requests.c.created_at < cutoff))
    return gone


# -------------------------------------------------------------------------- owners


def orphans(conn: sa.Connection, *, lease_s: float, limit: int) -> list[str]:
    """Jobs without a live owner: never owned, or owned by a server that died or left."""
    dead = sa.select(workers.c.id).where(sa.not_(_live(lease_s)))
    query = (
        sa.select(jobs.c.id)
        .where(sa.or_(jobs.c.owner_id.is_(None), jobs.c.owner_id.in_(dead)))
        .order_by(jobs.c.id)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def claim(tx: WriteTx, worker_id: str, job_ids: Sequence[str], *, lease_s: float) -> list[str]:
    """Become the owner of those of ``job_ids`` that still have no live owner, while
    this server is alive itself; the ones claimed. Two servers claiming one job:
    the row lock makes the second see the first's claim and skip it."""
    dead = sa.select(workers.c.id).where(sa.not_(_live(lease_s)))
    me_alive = sa.exists(sa.select(workers.c.id).where(workers.c.id == worker_id, _live(lease_s)))
    claimed: list[str] = []
    for chunk in chunks(job_ids):
        result = tx.conn.execute(
            jobs.update()
            .where(
                jobs.c.id.in_(chunk),
                sa.or_(jobs.c.owner_id.is_(None), jobs.c.owner_id.in_(dead)),
                me_alive,
            )
            .values(owner_id=worker_id, owner_since=sa.func.now())
            .returning(jobs.c.id)
        )
        claimed.extend(result.scalars())
    return claimed


def hand_over(tx: WriteTx, worker_id: str, moves: Mapping[str, str]) -> list[str]:
    """Give jobs this server owns to other servers (``job id -> new owner``), and tell
    each new owner; the jobs moved."""
    moved: list[str] = []
    by_target: dict[str, list[str]] = {}
    for job_id, target in moves.items():
        by_target.setdefault(target, []).append(job_id)
    for target, job_ids in by_target.items():
        for chunk in chunks(job_ids):
            result = tx.conn.execute(
                jobs.update()
                .where(jobs.c.id.in_(chunk), jobs.c.owner_id == worker_id)
                .values(owner_id=target, owner_since=sa.func.now())
                .returning(jobs.c.id)
            )
            moved.extend(result.scalars())
        notify(tx.conn, worker_channel(target), "adopt")
    return moved


def set_owner(tx: WriteTx, job_id: str, owner_id: str) -> None:
    """Record the owner of a job just created, and tell it."""
    tx.conn.execute(
        jobs.update().where(jobs.c.id == job_id).values(owner_id=owner_id, owner_since=sa.func.now())
    )
    notify(tx.conn, worker_channel(owner_id), "adopt")


def owned_since(
    conn: sa.Connection, worker_id: str, since: dt.datetime | None
) -> tuple[list[str], dt.datetime]:
    """The jobs given to this server since ``since`` (all of them with ``None``), and
    the time to ask from next (the database's clock, with a margin for transactions
    that were in flight)."""
    now = conn.execute(sa.select(sa.func.now())).scalar_one()
    query = sa.select(jobs.c.id).where(jobs.c.owner_id == worker_id)
    if since is not None:
        query = query.where(jobs.c.owner_since >= since)
    return list(conn.execute(query).scalars()), now - dt.timedelta(seconds=30)


def owner_of(conn: sa.Connection, job_id: str, *, lease_s: float) -> tuple[str | None, bool] | None:
    """The job's owner and whether it is alive; ``None`` if there is no such job."""
    query = (
        sa.select(jobs.c.owner_id, _live(lease_s).label("alive"))
        .select_from(jobs.outerjoin(workers, workers.c.id == jobs.c.owner_id))
        .where(jobs.c.id == job_id)
    )
    row = conn.execute(query).first()
    if row is None:
        return None
    return row.owner_id, bool(row.alive) and row.owner_id is not None


def owned_counts(conn: sa.Connection) -> dict[str, int]:
    """How many jobs each server owns."""
    owned = sa.func.count().label("owned")
    query = sa.select(jobs.c.owner_id, owned).where(jobs.c.owner_id.is_not(None)).group_by(jobs.c.owner_id)
    return {row.owner_id: int(row.owned) for row in conn.execute(query)}


def running_counts(conn: sa.Connection) -> dict[str, int]:
    """How many runs each server is executing (claimed, running, being cancelled)."""
    executing = [RunStatus.CLAIMED.value, RunStatus.RUNNING.value, RunStatus.CANCEL_REQUESTED.value]
    counted = sa.func.count().label("counted")
    query = (
        sa.select(runs.c.worker_id, counted)
        .where(runs.c.status.in_(executing), runs.c.worker_id.is_not(None))
        .group_by(runs.c.worker_id)
    )
    return {row.worker_id: int(row.counted) for row in conn.execute(query)}


def runs_left_behind(conn: sa.Connection, run_ids: Sequence[str], *, lease_s: float) -> set[str]:
    """Those of ``run_ids`` that are runs of this database no live server is executing
    (a killed server left their processes running). Ids this database does not know are
    not among them: they belong to another deployment on the same host."""
    executing = [RunStatus.CLAIMED.value, RunStatus.RUNNING.value, RunStatus.CANCEL_REQUESTED.value]
    live = sa.select(workers.c.id).where(_live(lease_s))
    found: set[str] = set()
    for chunk in chunks(run_ids):
        query = sa.select(runs.c.id).where(
            runs.c.id.in_(chunk),
            sa.or_(
                runs.c.status.not_in(executing), runs.c.worker_id.is_(None), runs.c.worker_id.not_in(live)
            ),
        )
        found.update(conn.execute(query).scalars())
    return found


#: Each job of ``fences`` (an array), share-locked, with whether this server owns it
#: with a fresh lease. The jobs are found by id alone: with the owner in the
#: condition too, the planner went by the owner index when its statistics said the
#: owner had few jobs (just after a takeover, a start with jobs handed over) and read
#: every job the server owned, on every commit (9 ms a commit at 5,000 jobs).
_CHECK_OWNERS = (
    "SELECT j.id, j.owner_id = %s AND w.left_at IS NULL "
    "AND w.heartbeat_at > now() - make_interval(secs => %s) "
    "FROM jobs j LEFT JOIN workers w ON w.id = j.owner_id "
    "WHERE j.id = ANY(%s) FOR SHARE OF j"
)


def check_owners(conn: sa.Connection, fences: Fences) -> None:
    """The fence, just before a transaction commits: :class:`NotOwner` unless this
    server owns every job in ``fences`` and its lease is fresh. The jobs' rows stay
    share-locked until the transaction ends, so a takeover waits for these writes and
    then sees them (or the transaction saw the takeover, and rolls back)."""
    statement, params = owners_check(fences)
    with driver_errors(conn.dialect, statement, params):
        rows = execute_driver(conn, statement, params).fetchall()
    owners_checked(fences, rows)


def owners_check(fences: Fences) -> tuple[str, tuple[Any, ...]]:
    """The statement of :func:`check_owners`, and its parameters."""
    return _CHECK_OWNERS, (fences.worker_id, float(fences.lease_s), sorted(fences.job_ids))


def owners_checked(fences: Fences, rows: Sequence[tuple[str, bool | None]]) -> None:
    """:class:`NotOwner` unless ``rows`` (the answer to :func:`owners_check`) hold every
    job of ``fences`` as this server's."""
    held = {job_id for job_id, owned in rows if owned}
    if len(held) < len(fences.job_ids):
        raise NotOwner(next(job_id for job_id in sorted(fences.job_ids) if job_id not in held))


# ------------------------------------------------------------------------ requests


@dataclass(frozen=True, slots=True)
class PendingRequest:
    """A decision another server asked of this one."""

    id: int
    sender_id: str
    job_id: str
    body: str


def send_request(tx: WriteTx, *, sender_id: str, target_id: str, job_id: str, body: str) -> int:
    """Store a request for the job's owner and wake it; the request's id."""
    request_id: int = tx.conn.execute(
        cluster_requests.insert()
        .values(sender_id=sender_id, target_id=target_id, job_id=job_id, body=body, created_at=sa.func.now())
        .returning(cluster_requests.c.id)
    ).scalar_one()
    notify(tx.conn, worker_channel(target_id), f"request {request_id}")
    return request_id


def retarget(tx: WriteTx, request_id: int, target_id: str) -> bool:
    """Send an unanswered request to another owner (the first one died); whether it
    was still unanswered."""
    changed = tx.conn.execute(
        cluster_requests.update()
        .where(cluster_requests.c.id == request_id, cluster_requests.c.answered_at.is_(None))
        .values(target_id=target_id)
    ).rowcount
    if changed:
        notify(tx.conn, worker_channel(target_id), f"request {request_id}")
    return changed == 1


def pending_requests(conn: sa.Connection, worker_id: str) -> list[PendingRequest]:
    """Requests waiting for this server's answer, oldest first."""
    query = (
        sa.select(
            cluster_requests.c.id,
            cluster_requests.c.sender_id,
            cluster_requests.c.job_id,
            cluster_requests.c.body,
        )
        .where(cluster_requests.c.target_id == worker_id, cluster_requests.c.answered_at.is_(None))
        .order_by(cluster_requests.c.id)
    )
    return [PendingRequest(row.id, row.sender_id, row.job_id, row.body) for row in conn.execute(query)]


def answer(tx: WriteTx, request: PendingRequest, reply: str) -> None:
    """Store the reply to a request and wake its sender."""
    tx.conn.execute(
        cluster_requests.update()
        .where(cluster_requests.c.id == request.id, cluster_requests.c.answered_at.is_(None))
        .values(reply=reply, answered_at=sa.func.now())
    )
    notify(tx.conn, worker_channel(request.sender_id), f"reply {request.id}")


def reply_of(conn: sa.Connection, request_id: int) -> str | None:
    """The reply to a request, once answered."""
    query = sa.select(cluster_requests.c.reply).where(cluster_requests.c.id == request_id)
    return conn.execute(query).scalar_one_or_none()
