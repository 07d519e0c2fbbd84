"""Statements on the ``runs`` table.

Every status change goes through :func:`_move` (or :func:`move_many`, for the moves of
a batch), guarded by the transition table in ``termjobs.lifecycle`` (``UPDATE ...
WHERE status IN allowed_from(target)``), so a terminal state is never overwritten and
two racing writers cannot both win.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from termjobs import lifecycle
from termjobs.model import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    ExitReason,
    Run,
    RunOutput,
    RunStatus,
    RunTrigger,
)
from termjobs.storage.base import Page, RunFilters, storable
from termjobs.storage.rows import RUN_SUMMARIES, RUNS
from termjobs.storage.sql import (
    WriteTx,
    bind_processors,
    chunks,
    driver_errors,
    execute_driver,
    execute_many_returning,
)
from termjobs.storage.sql import insert_many as insert_rows
from termjobs.storage.sql.points import DriverStatement
from termjobs.storage.tables import runs

_INSERT = runs.insert()
_ACTIVE = [status.value for status in ACTIVE_STATUSES]
TERMINAL = [status.value for status in TERMINAL_STATUSES]


def insert(tx: WriteTx, run: Run) -> None:
    """Insert a new run row."""
    tx.conn.execute(_INSERT, RUNS.values(run))


def insert_many(tx: WriteTx, new_runs: Sequence[Run]) -> None:
    """Insert new run rows in one ``executemany``."""
    insert_rows(tx.conn, runs, [RUNS.values(run) for run in new_runs])


@dataclass(frozen=True, slots=True)
class Move:
    """A run's move to ``status``, setting ``values`` (see :func:`move_many`)."""

    run_id: str
    status: RunStatus
    now: dt.datetime
    values: dict[str, Any]
    via: RunStatus | None = None
    only_from: RunStatus | None = None


def start_move(run_id: str, *, worker_id: str, now: dt.datetime) -> Move:
    """``queued -> claimed -> running`` in one update."""
    values = {"worker_id": worker_id, "started_at": now}
    return Move(run_id, RunStatus.RUNNING, now, values, via=RunStatus.CLAIMED)


def request_cancel(tx: WriteTx, run_id: str, *, now: dt.datetime) -> Run | None:
    """``running -> cancel_requested``."""
    return _move(tx, Move(run_id, RunStatus.CANCEL_REQUESTED, now, {}))


def end_move(
    run_id: str,
    *,
    status: RunStatus,
    now: dt.datetime,
    error: str | None = None,
    exit_reason: ExitReason | None = None,
    output: RunOutput | None = None,
    only_from: RunStatus | None = None,
) -> Move:
    """The move to a terminal ``status`` (``finished_at = now``); ``output``, when
    given, replaces what the run keeps of its runner's report; ``only_from`` narrows
    the statuses the run may be in to that one."""
    values: dict[str, Any] = {
        "finished_at": now,
        "error": storable(error),
        "exit_reason": exit_reason.value if exit_reason else None,
    }
    if output is not None:
        for item in dataclasses.fields(RunOutput):
            value = getattr(output, item.name)
            values[item.name] = storable(value) if isinstance(value, str) else value
    return Move(run_id, status, now, values, only_from=only_from)


#: The statuses in which a run may still report output (``update_output``).
_REPORTING = [RunStatus.RUNNING.value, RunStatus.CANCEL_REQUESTED.value]


def update_output(tx: WriteTx, run_id: str, output: RunOutput, *, now: dt.datetime) -> Run | None:
    """Replace the output a running run has reported so far (no status change)."""
    values: dict[str, Any] = {"updated_at": now}
    for item in dataclasses.fields(RunOutput):
        value = getattr(output, item.name)
        values[item.name] = storable(value) if isinstance(value, str) else value
    statement = _output_statement(tuple(sorted(values)))
    row = tx.conn.execute(statement, {**values, "_run_id": run_id}).mappings().first()
    return None if row is None else RUNS.load(row)


@functools.lru_cache(maxsize=4)
def _output_statement(keys: tuple[str, ...]) -> sa.Update:
    return (
        runs.update()
        .where(runs.c.id == sa.bindparam("_run_id"), runs.c.status.in_(_REPORTING))
        .values({key: sa.bindparam(key) for key in keys})
        .returning(*runs.c)
    )


def _move(tx: WriteTx, move: Move) -> Run | None:
    """Move a run to ``move.status`` (setting its values) if the transition table
    allows it from the stored status (or, with ``via``, through ``via`` in one step;
    with ``only_from``, from that status alone); the updated run, or ``None`` if the
    guard refused."""
    if tx.conn.dialect.name != "sqlite":
        return move_many(tx, [move])[0]
    keys, sources, values = _shape(move)
    return _driver_move(keys, sources, tx.conn.dialect)(tx.conn, move.run_id, values)


def _shape(move: Move) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, Any]]:
    """The columns a move sets, the statuses it moves from, and the values it sets."""
    for source in (move.via, move.only_from):
        if source is not None:
            lifecycle.check(source, move.status)
    values = {**move.values, "status": move.status.value, "updated_at": move.now}
    allowed: Iterable[RunStatus] = (
        {move.only_from} if move.only_from is not None else lifecycle.allowed_from(move.via or move.status)
    )
    return tuple(sorted(values)), tuple(sorted(source.value for source in allowed)), values


def move_many(tx: WriteTx, moves: Sequence[Move]) -> list[Run | None]:
    """:func:`_move` of each move, in order; on PostgreSQL (where every statement is a
    round trip to the server: the starts and ends of the runs of a batch were most of
    the writer's time), the moves of the same shape are sent together, pipelined.

    A run moved more than once is moved in that order: its first move goes in the
    first round of statements, its second in the next, as one after the other would
    have. On SQLite, where a statement costs no round trip, each move is its own."""
    if tx.conn.dialect.name == "sqlite":
        return [_move(tx, move) for move in moves]
    moved: list[Run | None] = [None] * len(moves)
    rounds: list[dict[tuple[tuple[str, ...], tuple[str, ...]], list[tuple[int, str, dict[str, Any]]]]] = []
    seen: dict[str, int] = {}
    for index, move in enumerate(moves):
        keys, sources, values = _shape(move)
        turn = seen.get(move.run_id, 0)
        seen[move.run_id] = turn + 1
        if turn == len(rounds):
            rounds.append({})
        rounds[turn].setdefault((keys, sources), []).append((index, move.run_id, values))
    for shapes in rounds:
        for (keys, sources), group in shapes.items():
            mover = _driver_move(keys, sources, tx.conn.dialect)
            found = mover.many(tx.conn, [(run_id, values) for _, run_id, values in group])
            for (index, _, _), run in zip(group, found, strict=True):
                moved[index] = run
    return moved


class _DriverMove:
    """One shape of :func:`_move` (its columns and the statuses it moves from), as one
    constant statement on the driver connection of the transaction.

    Every run's start and end is one of these, in the storage writer: through
    SQLAlchemy, the execution and the row processing cost more than the update itself
    (the profile of no-op runs fired together). The values are converted as their
    columns' types convert them, and the returned row is loaded by the same row
    mapping as every other read.

    On SQLite each move runs on its own (``__call__``); on PostgreSQL the moves of a
    batch go together (``many``): the single-row ``UPDATE`` of each, found by its
    unique id whatever the table's statistics say, in one pipelined ``executemany``.
    A single ``UPDATE ... FROM unnest(...)`` for the lot took as long on the server,
    and its plan followed the statistics: in a burst of new runs, before they were
    analysed, it went through every queued run (by the status index) or every run (a
    sequential scan), for each batch."""

    def __init__(self, keys: tuple[str, ...], sources: tuple[str, ...], dialect: sa.Dialect) -> None:
        moved_from: list[sa.BindParameter[str]] = [
            sa.bindparam(f"_from{i}", source) for i, source in enumerate(sources)
        ]
        statement = (
            runs.update()
            .where(runs.c.id == sa.bindparam("_run_id"), runs.c.status.in_(moved_from))
            .values({key: sa.bindparam(key) for key in keys})
            .returning(*RUNS.columns)
        )
        self._statement = DriverStatement(statement, dialect)
        self._convert = bind_processors(runs, keys, dialect)
        self._load = RUNS.tuple_loader(dialect)

    def __call__(self, conn: sa.Connection, run_id: str, values: dict[str, Any]) -> Run | None:
        params = self._params(run_id, values)
        with driver_errors(conn.dialect, self._statement.sql, params):
            # all of them: a statement left unfinished would hold the commit up
            rows = execute_driver(conn, self._statement.sql, params).fetchall()
        return self._load(rows[0]) if rows else None

    def many(self, conn: sa.Connection, moves: Sequence[tuple[str, dict[str, Any]]]) -> list[Run | None]:
        """Each ``(run_id, values)`` moved, in order (see the class docstring)."""
        params = [self._params(run_id, values) for run_id, values in moves]
        rows = execute_many_returning(conn, self._statement.sql, params)
        return [None if row is None else self._load(row) for row in rows]

    def _params(self, run_id: str, values: dict[str, Any]) -> Any:
        given = {
            key: values[key] if convert is None else convert(values[key]) for key, convert in self._convert
        }
        return self._statement.params(_run_id=run_id, **given)


@functools.lru_cache(maxsize=64)
def _driver_move(keys: tuple[str, ...], sources: tuple[str, ...], dialect: sa.Dialect) -> _DriverMove:
    return _DriverMove(keys, sources, dialect)


_SCHEDULED = sa.select(runs.c.id).where(
    runs.c.job_id == sa.bindparam("job_id"),
    runs.c.scheduled_for == sa.bindparam("scheduled_for", type_=runs.c.scheduled_for.type),
    runs.c.trigger == RunTrigger.SCHEDULE.value,
)


def scheduled_exists(conn: sa.Connection, job_id: str, scheduled_for: dt.datetime) -> bool:
    """Whether a scheduled run of this job and nominal time is already stored."""
    return conn.execute(_SCHEDULED, {"job_id": job_id, "scheduled_for": scheduled_for}).first() is not None


def scheduled_among(
    conn: sa.Connection, wanted: Sequence[tuple[str, dt.datetime]]
) -> set[tuple[str, dt.datetime]]:
    """Which of the (job id, nominal time) pairs ``wanted`` already have a scheduled run
    stored (one query per 500 jobs: the fires of many jobs due at once)."""
    if not wanted:
        return set()
    times = sorted({at for _, at in wanted})
    found: set[tuple[str, dt.datetime]] = set()
    for chunk in chunks(sorted({job_id for job_id, _ in wanted})):
        query = sa.select(runs.c.job_id, runs.c.scheduled_for).where(
            runs.c.trigger == RunTrigger.SCHEDULE.value,
            runs.c.job_id.in_(chunk),
            runs.c.scheduled_for.in_(times) if len(times) <= 50 else runs.c.scheduled_for >= times[0],
        )
        found.update((job_id, at) for job_id, at in conn.execute(query))
    return found & set(wanted)


_GET = {
    full: sa.select(*(RUNS if full else RUN_SUMMARIES).columns).where(runs.c.id == sa.bindparam("run_id"))
    for full in (True, False)
}


def get(conn: sa.Connection, run_id: str, *, full: bool = True) -> Run | None:
    """The run with this id (``full`` includes the captured payloads)."""
    row = conn.execute(_GET[full], {"run_id": run_id}).mappings().first()
    mapper = RUNS if full else RUN_SUMMARIES
    return None if row is None else mapper.load(row)


def page(
    conn: sa.Connection, *, limit: int, offset: int, job_id: str | None, filters: RunFilters, full: bool
) -> Page[Run]:
    """Runs, newest first (creation time, then insertion order)."""
    conditions: list[sa.ColumnElement[bool]] = []
    if job_id is not None:
        conditions.append(runs.c.job_id == job_id)
    if filters.statuses:
        conditions.append(runs.c.status.in_([status.value for status in filters.statuses]))
    if filters.trigger is not None:
        conditions.append(runs.c.trigger == filters.trigger.value)
    if filters.created_after is not None:
        conditions.append(runs.c.created_at >= filters.created_after)
    if filters.created_before is not None:
        conditions.append(runs.c.created_at < filters.created_before)
    if conn.dialect.name == "sqlite" and len(conditions) == (job_id is not None):  # job_id's alone, if any
        return _listings(conn.dialect).page(conn, limit=limit, offset=offset, job_id=job_id, full=full)
    mapper = RUNS if full else RUN_SUMMARIES
    query = (
        sa.select(*mapper.columns)
        .where(*conditions)
        .order_by(runs.c.created_at.desc(), runs.c.seq.desc())
        .limit(limit)
        .offset(offset)
    )
    items = [mapper.load(row) for row in conn.execute(query).mappings()]
    total = conn.execute(sa.select(sa.func.count()).select_from(runs).where(*conditions))
    return Page(items=items, total=total.scalar_one())


class _Listings:
    """The listings polled most (every run, or one job's), on SQLite, through the
    driver: a dashboard or a script reads the same newest runs again after every
    commit, and SQLAlchemy's execution and row processing took most of that read (the
    profile of ``GET /v2/runs?summary=1`` while runs were triggered). The statements
    are compiled once (:class:`~termjobs.storage.sql.points.DriverStatement`); each
    summary row's run is kept by the row's values, so a run that has not changed since
    it was last listed costs a dictionary lookup (a changed run has other values, and
    is loaded afresh). Same transaction, same snapshot as the statement it replaces.
    """

    #: summary runs kept by their row (a summary row carries no captured output)
    KEPT = 2048

    def __init__(self, dialect: sa.Dialect) -> None:
        def statement(full: bool, one_job: bool) -> sa.Select[Any]:
            mapper = RUNS if full else RUN_SUMMARIES
            query = sa.select(*mapper.columns)
            if one_job:
                query = query.where(runs.c.job_id == sa.bindparam("job_id"))
            return (
                query.order_by(runs.c.created_at.desc(), runs.c.seq.desc())
                .limit(sa.bindparam("limit", type_=sa.Integer))
                .offset(sa.bindparam("offset", type_=sa.Integer))
            )

        def count(one_job: bool) -> sa.Select[Any]:
            query = sa.select(sa.func.count()).select_from(runs)
            return query.where(runs.c.job_id == sa.bindparam("job_id")) if one_job else query

        shapes = [(full, one_job) for full in (True, False) for one_job in (True, False)]
        self._pages = {shape: DriverStatement(statement(*shape), dialect) for shape in shapes}
        self._counts = {one_job: DriverStatement(count(one_job), dialect) for one_job in (True, False)}
        self._load = {True: RUNS.tuple_loader(dialect), False: RUN_SUMMARIES.tuple_loader(dialect)}
        self._kept: dict[tuple[Any, ...], Run] = {}
        self._keeping = threading.Lock()  # pages are read on the event loop and in reader threads

    def page(
        self, conn: sa.Connection, *, limit: int, offset: int, job_id: str | None, full: bool
    ) -> Page[Run]:
        one_job = job_id is not None
        select, count = self._pages[(full, one_job)], self._counts[one_job]
        bound = {"job_id": job_id} if one_job else {}
        with driver_errors(conn.dialect):  # rows are read (and may be interrupted) after execute
            rows = execute_driver(
                conn, select.sql, select.params(limit=limit, offset=offset, **bound)
            ).fetchall()
            total = execute_driver(conn, count.sql, count.params(**bound)).fetchone()[0]
        items = [self._load[True](row) for row in rows] if full else [self._summary(row) for row in rows]
        return Page(items=items, total=total)

    def _summary(self, row: tuple[Any, ...]) -> Run:
        run = self._kept.get(row)
        if run is None:
            run = self._load[False](row)
            with self._keeping:
                if len(self._kept) >= self.KEPT:
                    del self._kept[next(iter(self._kept))]  # the oldest kept
                self._kept[row] = run
        return run


_LISTINGS: dict[str, _Listings] = {}


def _listings(dialect: sa.Dialect) -> _Listings:
    """The listings of ``dialect``'s kind (one per kind: a run is a function of its
    row's values whichever database the row came from)."""
    listings = _LISTINGS.get(dialect.name)
    if listings is None:
        listings = _LISTINGS.setdefault(dialect.name, _Listings(dialect))
    return listings


_LAST = sa.select(*RUN_SUMMARIES.columns).where(
    runs.c.seq.in_(
        sa.select(sa.func.max(runs.c.seq))
        .where(runs.c.job_id.in_(sa.bindparam("job_ids", expanding=True)))
        .group_by(runs.c.job_id)
    )
)


def last_of(conn: sa.Connection, job_ids: Iterable[str]) -> dict[str, Run]:
    """The most recently created run (summary) of each job that has one."""
    ids = list(job_ids)
    if not ids:
        return {}
    return {
        row["job_id"]: RUN_SUMMARIES.load(row) for row in conn.execute(_LAST, {"job_ids": ids}).mappings()
    }


def active(conn: sa.Connection, job_ids: Sequence[str] | None) -> list[Run]:
    """Non-terminal runs (of these jobs), oldest first."""
    query = (
        sa.select(*RUNS.columns).where(runs.c.status.in_(_ACTIVE)).order_by(runs.c.scheduled_for, runs.c.seq)
    )
    if job_ids is None:
        return [RUNS.load(row) for row in conn.execute(query).mappings()]
    return [
        RUNS.load(row)
        for chunk in chunks(job_ids)
        for row in conn.execute(query.where(runs.c.job_id.in_(chunk))).mappings()
    ]
