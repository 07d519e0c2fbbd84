"""SQL statements, one module per table (``jobs``, ``runs``, ``events``) plus
``history`` (retention). Synchronous functions that take a SQLAlchemy ``Connection``
(reads) or a :class:`WriteTx` (writes) already inside a transaction;
``termjobs.storage.transactions`` composes them into transactions, which the facade
(``termjobs.storage.database``) runs through the gateway. Every timestamp is a
parameter: no SQL-side ``now()``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from termjobs.model import RunEvent


@dataclass(slots=True)
class EventOrder:
    """A cluster's ordering of run events, for one transaction.

    Event ids come from one sequence, but transactions on several servers commit in
    any order, so a reader that has seen id 11 could miss 10 committed a moment later.
    A cluster-wide lock (``cluster.EVENTS_LOCK_KEY``), taken before a transaction's
    first event insert and held until it commits, makes commit order the id order:
    every reader can follow ``id > last seen``. The newest id inserted is announced
    when the transaction commits."""

    taken: bool = False
    newest: int = 0


@dataclass(slots=True)
class HeldEvent:
    """A run event recorded in a transaction and not yet sent to the database: its
    row's values, the event (its id still 0) and the list it joins once inserted."""

    values: tuple[Any, ...]
    event: RunEvent
    joins: list[RunEvent]


@dataclass(slots=True)
class HeldEvents:
    """The run events of one transaction, held to be inserted together (PostgreSQL).

    Each event inserted on its own cost a round trip to the server, and a run records
    three to five of them in the storage writer (queued, claimed, running, its end):
    with the run's moves, the writer thread spent most of its time waiting for answers.
    Held, they are sent in one pipelined ``executemany`` just before the transaction
    commits (or sooner, when a statement must see them: ``events.send_held``), in the
    order they were recorded, so their ids keep that order."""

    events: list[HeldEvent] = field(default_factory=list)


@dataclass(slots=True)
class WriteTx:
    """A write transaction in progress.

    ``events`` collects the run events inserted through it; the gateway publishes them
    to live subscribers only after the transaction commits. ``order`` is set in a
    cluster (shared by every request of one transaction), and so is ``fences``: the
    jobs the transaction acts on as their owner, checked together before it commits.
    ``held``, when set (PostgreSQL, shared by every request of the transaction), holds
    the events recorded through ``events.record`` until they are sent together.
    """

    conn: sa.Connection
    events: list[RunEvent] = field(default_factory=list)
    order: EventOrder | None = None
    fences: Fences | None = None
    held: HeldEvents | None = None


@dataclass(slots=True)
class Fences:
    """The jobs a transaction writes to as their owner (in a cluster). They are checked
    in one statement just before it commits, which share-locks their rows until then
    (``cluster.check_owners``): a takeover waits for the commit and then sees it, or
    the transaction sees the takeover and rolls back."""

    worker_id: str = ""
    lease_s: float = 0.0
    job_ids: set[str] = field(default_factory=set)


def chunks(ids: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    """``ids`` in slices of ``size``: keeps IN lists small."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def insert_many(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ``rows`` (all with the same keys) with one ``executemany`` on the driver
    connection of ``conn``'s transaction, each value converted as its column's type
    converts it. For the hot multi-row inserts (the fires of many jobs at once): a
    SQLAlchemy Core ``executemany`` spends most of its time preparing parameters.
    Column defaults are not applied: a row must carry every column it needs."""
    if not rows:
        return
    names = tuple(rows[0])
    statement = _insert_statement(table, names, conn.dialect)
    execute_driver(conn, statement, _driver_params(table, names, conn.dialect, rows), many=True)


def update_many(conn: sa.Connection, table: sa.Table, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """UPDATE the row whose ``key`` column holds each row's ``key`` value, setting the
    row's other columns (every row with the same keys), with one ``executemany`` on the
    driver connection, as :func:`insert_many` inserts."""
    if not rows:
        return
    order = (*(name for name in rows[0] if name != key), key)
    statement = _update_statement(table, order, conn.dialect)
    execute_driver(conn, statement, _driver_params(table, order, conn.dialect, rows), many=True)


def _mark(dialect: Dialect) -> str:
    return "?" if dialect.paramstyle == "qmark" else "%s"


@functools.lru_cache(maxsize=32)
def _insert_statement(table: sa.Table, names: tuple[str, ...], dialect: Dialect) -> str:
    columns = ", ".join(f'"{name}"' for name in names)
    return f"INSERT INTO {table.name} ({columns}) VALUES ({', '.join(_mark(dialect) for _ in names)})"


@functools.lru_cache(maxsize=32)
def _update_statement(table: sa.Table, order: tuple[str, ...], dialect: Dialect) -> str:
    """``UPDATE`` setting ``order[:-1]`` where the key ``order[-1]`` matches."""
    mark = _mark(dialect)
    assignments = ", ".join(f'"{name}" = {mark}' for name in order[:-1])
    return f'UPDATE {table.name} SET {assignments} WHERE "{order[-1]}" = {mark}'


@functools.lru_cache(maxsize=32)
def bind_processors(
    table: sa.Table, names: tuple[str, ...], dialect: Dialect
) -> list[tuple[str, Callable[[Any], Any] | None]]:
    """Each of ``names`` with how its column's type converts a value for the driver
    (``None``: as it is)."""
    return [(name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) for name in names]


def _driver_params(
    table: sa.Table, names: tuple[str, ...], dialect: Dialect, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[Any, ...]]:
    """Each row's values of ``names``, in that order, converted as their columns' types
    convert them for the driver."""
    plan = bind_processors(table, names, dialect)
    return [tuple(row[n] if convert is None else convert(row[n]) for n, convert in plan) for row in rows]


def execute_driver(conn: sa.Connection, statement: str, params: Any, *, many: bool = False) -> Any:
    """Run ``statement`` on the DB-API cursor of ``conn``'s transaction (the cursor;
    read its rows inside :func:`driver_errors`)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver_errors(conn.dialect, statement, params):
        if many:
            cursor = driver.cursor()
            cursor.executemany(statement, params)
            return cursor
        return driver.execute(statement, params)


def execute_many_returning(conn: sa.Connection, statement: str, params: Sequence[Any]) -> list[Any]:
    """Run ``statement`` once per set of ``params`` on the driver connection of
    ``conn``'s transaction, in one pipelined ``executemany`` (PostgreSQL), and return
    the row each one returned (``None`` where it returned none), in order."""
    driver = conn.connection.driver_connection
    assert driver is not None
    cursor = driver.cursor()
    with driver_errors(conn.dialect, statement, params):
        cursor.executemany(statement, params, returning=True)
        return returned_rows(cursor)


def returned_rows(cursor: Any) -> list[Any]:
    """The row each statement of an ``executemany(..., returning=True)`` returned
    (``None`` where it returned none), in order."""
    rows: list[Any] = []
    while True:
        rows.append(cursor.fetchone())
        if not cursor.nextset():
            return rows


@contextmanager
def driver_errors(dialect: Dialect, statement: str | None = None, params: Any = None) -> Iterator[None]:
    """Driver errors raised inside leave as SQLAlchemy raises them, the same classes:
    callers tell a transient ``OperationalError`` (a lock, a read interrupted when its
    time on the event loop was up) from an ``IntegrityError`` the usual way."""
    dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
    try:
        yield
    except dbapi_error as exc:
        raise sa.exc.DBAPIError.instance(statement, params, exc, dbapi_error, dialect=dialect) from exc
