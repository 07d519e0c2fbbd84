"""Retention queries: which finished runs are past keeping, and deleting them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from termjobs.storage.sql import WriteTx, events
from termjobs.storage.sql.runs import TERMINAL
from termjobs.storage.tables import runs


def _ended_at() -> sa.ColumnElement[dt.datetime]:
    return sa.func.coalesce(runs.c.finished_at, runs.c.created_at)


def expired(conn: sa.Connection, *, before: dt.datetime, limit: int) -> list[str]:
    """Up to ``limit`` terminal runs that ended before ``before``."""
    query = (
        sa.select(runs.c.id)
        .where(runs.c.status.in_(TERMINAL), _ended_at() < before)
        .order_by(runs.c.seq)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def jobs_over_cap(conn: sa.Connection, *, cap: int) -> list[str]:
    """Jobs that keep more than ``cap`` terminal runs."""
    query = (
        sa.select(runs.c.job_id)
        .where(runs.c.status.in_(TERMINAL))
        .group_by(runs.c.job_id)
        .having(sa.func.count() > cap)
    )
    return list(conn.execute(query).scalars())


def beyond_cap(conn: sa.Connection, job_id: str, *, cap: int, limit: int) -> list[str]:
    """Up to ``limit`` of the job's terminal runs older than its newest ``cap``."""
    query = (
        sa.select(runs.c.id)
        .where(runs.c.job_id == job_id, runs.c.status.in_(TERMINAL))
        .order_by(_ended_at().desc(), runs.c.seq.desc())
        .offset(cap)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def delete_terminal(tx: WriteTx, run_ids: Sequence[str]) -> int:
    """Delete these runs (and, by cascade, their events) if they are terminal."""
    if not run_ids:
        return 0
    query = runs.delete().where(runs.c.id.in_(list(run_ids)), runs.c.status.in_(TERMINAL))
    events.send_held(tx)  # events held for these runs go first, and go with them
    return tx.conn.execute(query).rowcount
