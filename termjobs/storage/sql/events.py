"""Statements on the ``run_events`` table."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from termjobs.model import EventType, JSONValue, Run, RunEvent
from termjobs.storage.base import Page
from termjobs.storage.rows import EVENTS
from termjobs.storage.sql import HeldEvent, WriteTx, execute_driver, execute_many_returning
from termjobs.storage.sql.cluster import EVENTS_LOCK_KEY
from termjobs.storage.tables import run_events
from termjobs.wire import compact

_SQLITE_INSERT = (
    "INSERT INTO run_events (run_id, job_id, event_type, message, data, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_PG_INSERT = (
    "INSERT INTO run_events (run_id, job_id, event_type, message, data, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
)
#: The same, first taking the cluster's event lock (see ``EventOrder``): one round trip.
#: The lock is taken when the CTE is read, before the row (and its id) is formed.
_PG_INSERT_LOCKED = (
    "WITH ordered AS (SELECT pg_advisory_xact_lock(%s)) "
    "INSERT INTO run_events (run_id, job_id, event_type, message, data, created_at) "
    "SELECT %s, %s, %s, %s, %s, %s FROM ordered RETURNING id"
)


def insert(
    tx: WriteTx, run: Run, event_type: EventType, message: str | None, data: JSONValue, *, now: dt.datetime
) -> RunEvent:
    """Append an event to ``run``'s timeline at once, and return it with its id (the
    message is trimmed; blank = none). Events held in the transaction go first."""
    send_held(tx)
    text, payload = _stored(message, data)
    order = tx.order
    lock = order is not None and not order.taken
    event_id = _insert_row(tx.conn, run, event_type.value, text, payload, now, lock=lock)
    if lock:
        assert order is not None
        order.taken = True
    if order is not None:
        order.newest = max(order.newest, event_id)
    event = _event(event_id, run, event_type, text, data, now)
    tx.events.append(event)
    return event


def record(
    tx: WriteTx, run: Run, event_type: EventType, message: str | None, data: JSONValue, *, now: dt.datetime
) -> None:
    """Append an event to ``run``'s timeline, as :func:`insert`; held until the
    transaction commits where the transaction holds events (see ``HeldEvents``)."""
    held = tx.held
    if held is None:
        insert(tx, run, event_type, message, data, now=now)
        return
    text, payload = _stored(message, data)
    values = (run.id, run.job_id, event_type.value, text, payload, now.astimezone(dt.UTC))
    event = _event(0, run, event_type, text, data, now)  # its id given once inserted
    held.events.append(HeldEvent(values, event, tx.events))


def _stored(message: str | None, data: JSONValue) -> tuple[str | None, str | None]:
    """An event's message as stored (trimmed; blank = none) and its data as stored."""
    return (message.strip() if message else None) or None, None if data is None else compact(data)


def _event(
    event_id: int, run: Run, event_type: EventType, text: str | None, data: JSONValue, now: dt.datetime
) -> RunEvent:
    return RunEvent(
        id=event_id,
        run_id=run.id,
        job_id=run.job_id,
        event_type=event_type,
        message=text,
        data=data,
        created_at=now,
    )


def send_held(tx: WriteTx) -> None:
    """Insert the events held in the transaction, in the order they were recorded, in
    one pipelined ``executemany``; each event joins its request's ``events`` with its
    id. Called before any statement that must see them (an insert that needs its id at
    once, a delete of runs), and as the transaction ends (``sql.seal``)."""
    taken = take_held(tx)
    if taken is not None:
        statement, rows, pending = taken
        join_held(tx, pending, execute_many_returning(tx.conn, statement, rows))


def take_held(tx: WriteTx) -> tuple[str, list[tuple[Any, ...]], list[HeldEvent]] | None:
    """The events held in the transaction (no longer held), as the statement and rows
    that insert them (see :func:`send_held`); ``None`` when there are none."""
    held = tx.held
    if held is None or not held.events:
        return None
    pending, held.events = held.events, []
    if tx.order is None:
        return _PG_INSERT, [event.values for event in pending], pending
    # Every row takes the cluster's event lock: taken once, the others are no-ops (a
    # transaction holds its advisory locks until it ends).
    return _PG_INSERT_LOCKED, [(EVENTS_LOCK_KEY, *event.values) for event in pending], pending


def join_held(tx: WriteTx, pending: Sequence[HeldEvent], rows: Sequence[Any]) -> None:
    """Each inserted event joins its request's ``events``, with the id its row
    (``rows``, in order) returned."""
    if len(rows) != len(pending):  # pragma: no cover - a driver that lost a result
        raise RuntimeError(f"{len(pending)} events inserted, {len(rows)} ids returned")
    ids = [row[0] for row in rows]
    for held, event_id in zip(pending, ids, strict=True):
        held.joins.append(dataclasses.replace(held.event, id=event_id))
    if tx.order is not None:
        tx.order.taken = True
        tx.order.newest = max(tx.order.newest, max(ids))


def _insert_row(
    conn: sa.Connection,
    run: Run,
    event_type: str,
    message: str | None,
    data: str | None,
    now: dt.datetime,
    *,
    lock: bool = False,
) -> int:
    """INSERT one event on the driver connection of ``conn``'s transaction.

    Every output batch of every run comes through here; the DB-API call costs a tenth
    of a SQLAlchemy Core execution. The stored values are exactly what ``UTCDateTime``
    writes (naive UTC text on SQLite, ``timestamptz`` on PostgreSQL)."""
    utc = now.astimezone(dt.UTC)
    params: tuple[object, ...]
    if conn.dialect.name == "sqlite":
        stamp = utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        statement, params = _SQLITE_INSERT, (run.id, run.job_id, event_type, message, data, stamp)
    else:
        params = (run.id, run.job_id, event_type, message, data, utc)
        statement, params = (_PG_INSERT_LOCKED, (EVENTS_LOCK_KEY, *params)) if lock else (_PG_INSERT, params)
    cursor = execute_driver(conn, statement, params)
    event_id = cursor.lastrowid if conn.dialect.name == "sqlite" else cursor.fetchone()[0]
    assert isinstance(event_id, int)
    return event_id


def page(conn: sa.Connection, run_id: str, *, since_id: int, limit: int, offset: int) -> Page[RunEvent]:
    """A run's events with ``id > since_id``, in insertion order."""
    conditions = [run_events.c.run_id == run_id, run_events.c.id > since_id]
    query = sa.select(run_events).where(*conditions).order_by(run_events.c.id).limit(limit).offset(offset)
    items = [EVENTS.load(row) for row in conn.execute(query).mappings()]
    total = conn.execute(sa.select(sa.func.count()).select_from(run_events).where(*conditions))
    return Page(items=items, total=total.scalar_one())


def max_id(conn: sa.Connection) -> int:
    """The id of the newest event (0 when there is none)."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(run_events.c.id), 0))).scalar_one())


def after(
    conn: sa.Connection, since_id: int, *, job_id: str | None, run_id: str | None, limit: int
) -> list[RunEvent]:
    """Events with ``id > since_id`` (optionally of one job or run), oldest first."""
    query = sa.select(run_events).where(run_events.c.id > since_id)
    if job_id is not None:
        query = query.where(run_events.c.job_id == job_id)
    if run_id is not None:
        query = query.where(run_events.c.run_id == run_id)
    query = query.order_by(run_events.c.id).limit(limit)
    return [EVENTS.load(row) for row in conn.execute(query).mappings()]
