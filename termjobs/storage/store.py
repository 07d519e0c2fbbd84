"""The synchronous store: every database statement termjobs runs lives here.

Functions take a SQLAlchemy ``Connection`` (reads) or a :class:`WriteTx` (writes)
that is already inside a transaction; the gateway decides transaction boundaries and
runs these functions in worker threads. Every timestamp is a parameter: no SQL-side
``now()``. Run status changes go through :func:`update_run`, which is guarded by the
transition table in ``termjobs.lifecycle``.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from termjobs import lifecycle
from termjobs.errors import Conflict
from termjobs.model import (
    ACTIVE_STATUSES,
    ConcurrencyPolicy,
    EventType,
    ExitReason,
    Job,
    JSONValue,
    MisfirePolicy,
    Run,
    RunEvent,
    RunnerType,
    RunStatus,
    RunTrigger,
    TriggerType,
)
from termjobs.storage.tables import jobs, run_events, runs


@dataclass(slots=True)
class WriteTx:
    """A write transaction in progress.

    ``events`` collects the run events inserted through it; the gateway publishes them
    to live subscribers only after the transaction commits.
    """

    conn: sa.Connection
    events: list[RunEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobFilters:
    """Optional filters of the job list."""

    name: str | None = None
    enabled: bool | None = None
    trigger_type: TriggerType | None = None
    #: Jobs whose id starts with this text, case-sensitively (CLI prefix resolution).
    id_prefix: str | None = None


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, with the count of all matching rows."""

    items: list[T]
    total: int


def _dump(value: JSONValue | None) -> str | None:
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _load(text: str | None) -> JSONValue | None:
    return None if text is None else json.loads(text)


# --------------------------------------------------------------------------- jobs


def _job_values(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "enabled": job.enabled,
        "runner_type": job.runner_type.value,
        "runner_config": _dump(job.runner_config) or "{}",
        "trigger_type": job.trigger_type.value,
        "trigger_config": _dump(job.trigger_config) or "{}",
        "schedule_timezone": job.schedule_timezone,
        "concurrency_policy": job.concurrency_policy.value,
        "max_concurrent_runs": job.max_concurrent_runs,
        "retry_policy": _dump(job.retry_policy),
        "timeout_seconds": job.timeout_seconds,
        "misfire_policy": job.misfire_policy.value,
        "misfire_grace_seconds": job.misfire_grace_seconds,
        "labels": _dump(job.labels),
        "next_run_at": job.next_run_at,
        "last_fire_at": job.last_fire_at,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def _job_from_row(row: sa.RowMapping) -> Job:
    return Job(
        id=row["id"],
        name=row["name"],
        enabled=bool(row["enabled"]),
        runner_type=RunnerType(row["runner_type"]),
        runner_config=_load(row["runner_config"]),
        trigger_type=TriggerType(row["trigger_type"]),
        trigger_config=_load(row["trigger_config"]),
        schedule_timezone=row["schedule_timezone"],
        concurrency_policy=ConcurrencyPolicy(row["concurrency_policy"]),
        max_concurrent_runs=row["max_concurrent_runs"],
        retry_policy=_load(row["retry_policy"]),
        timeout_seconds=row["timeout_seconds"],
        misfire_policy=MisfirePolicy(row["misfire_policy"]),
        misfire_grace_seconds=row["misfire_grace_seconds"],
        labels=_load(row["labels"]),
        next_run_at=row["next_run_at"],
        last_fire_at=row["last_fire_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _name_conflict(name: str) -> Conflict:
    return Conflict(f"a job named {name!r} already exists; choose another name")


def _name_taken(conn: sa.Connection, name: str, except_id: str) -> bool:
    query = sa.select(jobs.c.id).where(jobs.c.name == name, jobs.c.id != except_id)
    return conn.execute(query).first() is not None


def insert_job(tx: WriteTx, job: Job) -> None:
    """Insert a new job; :class:`Conflict` if its name is taken."""
    # Checked before the INSERT so the failure is a clean message, not a driver error;
    # the UNIQUE constraint still guards against any writer we do not know about.
    if _name_taken(tx.conn, job.name, job.id):
        raise _name_conflict(job.name)
    tx.conn.execute(jobs.insert().values(**_job_values(job)))


def insert_jobs(tx: WriteTx, new_jobs: Sequence[Job]) -> None:
    """Insert many new jobs in one statement (imports, benchmarks); a taken name
    fails the whole call through the UNIQUE constraint."""
    if new_jobs:
        tx.conn.execute(jobs.insert(), [_job_values(job) for job in new_jobs])


def update_job(tx: WriteTx, job: Job) -> None:
    """Store every field of ``job``; :class:`Conflict` if renamed onto a taken name."""
    if _name_taken(tx.conn, job.name, job.id):
        raise _name_conflict(job.name)
    values = _job_values(job)
    del values["id"], values["created_at"]
    tx.conn.execute(jobs.update().where(jobs.c.id == job.id).values(**values))


def delete_job(tx: WriteTx, job_id: str) -> bool:
    """Delete a job with its runs and events; whether it existed."""
    result = tx.conn.execute(jobs.delete().where(jobs.c.id == job_id))
    return result.rowcount == 1


# Statements built once: SQLAlchemy runs a constant statement object much faster than
# a freshly built one (these are the API's hot reads).
_GET_JOB = sa.select(jobs).where(jobs.c.id == sa.bindparam("job_id"))
_FIND_JOB = sa.select(jobs).where(
    sa.or_(jobs.c.id == sa.bindparam("ref"), jobs.c.name == sa.bindparam("ref"))
)


def get_job(conn: sa.Connection, job_id: str) -> Job | None:
    """The job with this id."""
    row = conn.execute(_GET_JOB, {"job_id": job_id}).mappings().first()
    return None if row is None else _job_from_row(row)


def find_job(conn: sa.Connection, ref: str) -> Job | None:
    """The job whose id is ``ref``, else the job named exactly ``ref``."""
    rows = [_job_from_row(row) for row in conn.execute(_FIND_JOB, {"ref": ref}).mappings()]
    by_id = [job for job in rows if job.id == ref]
    matches = by_id or rows
    return matches[0] if matches else None


def list_jobs(conn: sa.Connection, *, limit: int, offset: int, filters: JobFilters) -> Page[Job]:
    """Jobs, newest first."""
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.name:
        conditions.append(jobs.c.name.icontains(filters.name, autoescape=True))
    if filters.enabled is not None:
        conditions.append(jobs.c.enabled == filters.enabled)
    if filters.trigger_type is not None:
        conditions.append(jobs.c.trigger_type == filters.trigger_type.value)
    if filters.id_prefix:
        conditions.extend(_id_prefix(filters.id_prefix))
    query = (
        sa.select(jobs)
        .where(*conditions)
        .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    items = [_job_from_row(row) for row in conn.execute(query).mappings()]
    total = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(*conditions))
    return Page(items=items, total=total.scalar_one())


def _id_prefix(prefix: str) -> list[sa.ColumnElement[bool]]:
    # LIKE (with ``%`` and ``_`` escaped: ids contain ``_``) narrows the scan, but
    # SQLite's LIKE ignores ASCII case and ids are case-sensitive base64url, so the
    # exact comparison of the leading characters decides.
    return [
        jobs.c.id.startswith(prefix, autoescape=True),
        sa.func.substr(jobs.c.id, 1, len(prefix)) == prefix,
    ]


# --------------------------------------------------------------------------- runs

_PAYLOAD_COLUMNS = ("stdout", "stderr", "thinking", "response")
_SUMMARY = [column for column in runs.c if column.name not in _PAYLOAD_COLUMNS]


def _run_values(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "job_id": run.job_id,
        "attempt": run.attempt,
        "trigger": run.trigger.value,
        "scheduled_for": run.scheduled_for,
        "status": run.status.value,
        "worker_id": run.worker_id,
        "session_id": run.session_id,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "exit_code": run.exit_code,
        "error": run.error,
        "stdout": run.stdout,
        "stderr": run.stderr,
        "thinking": run.thinking,
        "response": run.response,
        "exit_reason": run.exit_reason.value if run.exit_reason else None,
        "truncated": run.truncated,
        "turn_count": run.turn_count,
        "input_tokens": run.input_tokens,
        "output_tokens": run.output_tokens,
        "retry_of": run.retry_of,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }


def _run_from_row(row: sa.RowMapping) -> Run:
    reason = row["exit_reason"]
    return Run(
        id=row["id"],
        job_id=row["job_id"],
        attempt=row["attempt"],
        trigger=RunTrigger(row["trigger"]),
        scheduled_for=row["scheduled_for"],
        status=RunStatus(row["status"]),
        worker_id=row["worker_id"],
        session_id=row["session_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        error=row["error"],
        stdout=row.get("stdout"),
        stderr=row.get("stderr"),
        thinking=row.get("thinking"),
        response=row.get("response"),
        exit_reason=ExitReason(reason) if reason else None,
        truncated=bool(row["truncated"]),
        turn_count=row["turn_count"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        retry_of=row["retry_of"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


_INSERT_RUN = runs.insert()
_INSERT_EVENT = run_events.insert()


def insert_run(tx: WriteTx, run: Run) -> None:
    """Insert a new run row."""
    tx.conn.execute(_INSERT_RUN, _run_values(run))


def update_run(
    tx: WriteTx,
    run_id: str,
    *,
    status: RunStatus,
    now: dt.datetime,
    via: RunStatus | None = None,
    **fields: Any,
) -> Run | None:
    """Move a run to ``status`` (and set ``fields``) if the transition table allows it
    from the stored status (or, with ``via``, through ``via`` in one step); the updated
    run, or ``None`` if the guard refused."""
    values: dict[str, Any] = {"status": status.value, "updated_at": now, **fields}
    if isinstance(values.get("exit_reason"), ExitReason):
        values["exit_reason"] = values["exit_reason"].value
    if via is not None:
        lifecycle.check(via, status)
    sources = sorted(source.value for source in lifecycle.allowed_from(via or status))
    statement = _update_statement(tuple(sorted(values)))
    row = tx.conn.execute(statement, {**values, "_run_id": run_id, "_sources": sources}).mappings().first()
    return None if row is None else _run_from_row(row)


@functools.lru_cache(maxsize=64)
def _update_statement(keys: tuple[str, ...]) -> sa.Update:
    # Built once per set of columns: a statement object that is the same every time is
    # much cheaper for SQLAlchemy than a new one per call (this is the hot path).
    return (
        runs.update()
        .where(
            runs.c.id == sa.bindparam("_run_id"), runs.c.status.in_(sa.bindparam("_sources", expanding=True))
        )
        .values({key: sa.bindparam(key) for key in keys})
        .returning(*runs.c)
    )


def scheduled_run_exists(conn: sa.Connection, job_id: str, scheduled_for: dt.datetime) -> bool:
    """Whether a scheduled run of this job and nominal time is already stored."""
    query = sa.select(runs.c.id).where(
        runs.c.job_id == job_id,
        runs.c.scheduled_for == scheduled_for,
        runs.c.trigger == RunTrigger.SCHEDULE.value,
    )
    return conn.execute(query).first() is not None


_GET_RUN = {
    full: sa.select(*(runs.c if full else _SUMMARY)).where(runs.c.id == sa.bindparam("run_id"))
    for full in (True, False)
}


def get_run(conn: sa.Connection, run_id: str, *, full: bool = True) -> Run | None:
    """The run with this id (``full`` includes the output payloads)."""
    row = conn.execute(_GET_RUN[full], {"run_id": run_id}).mappings().first()
    return None if row is None else _run_from_row(row)


def list_runs(
    conn: sa.Connection,
    *,
    limit: int,
    offset: int,
    job_id: str | None = None,
    statuses: Sequence[RunStatus] = (),
    full: bool = True,
) -> Page[Run]:
    """Runs, newest first (creation time, then insertion order)."""
    conditions: list[sa.ColumnElement[bool]] = []
    if job_id is not None:
        conditions.append(runs.c.job_id == job_id)
    if statuses:
        conditions.append(runs.c.status.in_([status.value for status in statuses]))
    columns = list(runs.c) if full else _SUMMARY
    query = (
        sa.select(*columns)
        .where(*conditions)
        .order_by(runs.c.created_at.desc(), runs.c.seq.desc())
        .limit(limit)
        .offset(offset)
    )
    items = [_run_from_row(row) for row in conn.execute(query).mappings()]
    total = conn.execute(sa.select(sa.func.count()).select_from(runs).where(*conditions))
    return Page(items=items, total=total.scalar_one())


def last_runs(conn: sa.Connection, job_ids: Iterable[str]) -> dict[str, Run]:
    """The most recently created run (summary) of each job that has one."""
    ids = list(job_ids)
    if not ids:
        return {}
    rows = conn.execute(_LAST_RUNS, {"job_ids": ids}).mappings()
    return {row["job_id"]: _run_from_row(row) for row in rows}


_LAST_RUNS = sa.select(*_SUMMARY).where(
    runs.c.seq.in_(
        sa.select(sa.func.max(runs.c.seq))
        .where(runs.c.job_id.in_(sa.bindparam("job_ids", expanding=True)))
        .group_by(runs.c.job_id)
    )
)


def active_runs(conn: sa.Connection, job_id: str | None = None) -> list[Run]:
    """Runs that have not reached a terminal status, oldest first."""
    query = sa.select(*runs.c).where(runs.c.status.in_([s.value for s in ACTIVE_STATUSES]))
    if job_id is not None:
        query = query.where(runs.c.job_id == job_id)
    query = query.order_by(runs.c.scheduled_for, runs.c.seq)
    return [_run_from_row(row) for row in conn.execute(query).mappings()]


# ------------------------------------------------------------------------- events


def _event_from_row(row: sa.RowMapping) -> RunEvent:
    return RunEvent(
        id=row["id"],
        run_id=row["run_id"],
        job_id=row["job_id"],
        event_type=EventType(row["event_type"]),
        message=row["message"],
        data=_load(row["data"]),
        created_at=row["created_at"],
    )


def insert_event(
    tx: WriteTx,
    *,
    run: Run,
    event_type: EventType,
    message: str | None,
    now: dt.datetime,
    data: JSONValue | None = None,
) -> RunEvent:
    """Append an event to ``run``'s timeline."""
    text = message.strip() if message else None
    event_id = _insert_event_row(tx.conn, run, event_type.value, text or None, _dump(data), now)
    event = RunEvent(
        id=event_id,
        run_id=run.id,
        job_id=run.job_id,
        event_type=event_type,
        message=text or None,
        data=data,
        created_at=now,
    )
    tx.events.append(event)
    return event


_SQLITE_INSERT_EVENT = (
    "INSERT INTO run_events (run_id, job_id, event_type, message, data, created_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_PG_INSERT_EVENT = (
    "INSERT INTO run_events (run_id, job_id, event_type, message, data, created_at) "
    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id"
)


def _insert_event_row(
    conn: sa.Connection, run: Run, event_type: str, message: str | None, data: str | None, now: dt.datetime
) -> int:
    """INSERT one event on the driver connection of ``conn``'s transaction.

    Every output batch of every run comes through here; the DB-API call costs a tenth
    of a SQLAlchemy Core execution. The stored values are exactly what ``UTCDateTime``
    writes (naive UTC text on SQLite, ``timestamptz`` on PostgreSQL)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    utc = now.astimezone(dt.UTC)
    dbapi_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    params: tuple[object, ...]
    if conn.dialect.name == "sqlite":
        stamp = utc.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        statement, params = _SQLITE_INSERT_EVENT, (run.id, run.job_id, event_type, message, data, stamp)
    else:
        statement, params = _PG_INSERT_EVENT, (run.id, run.job_id, event_type, message, data, utc)
    try:
        cursor = driver.execute(statement, params)
        event_id = cursor.lastrowid if conn.dialect.name == "sqlite" else cursor.fetchone()[0]
    except dbapi_error as exc:
        # The same exception classes as through SQLAlchemy: callers tell a transient
        # OperationalError from an IntegrityError the usual way.
        raise sa.exc.DBAPIError.instance(statement, params, exc, dbapi_error, dialect=conn.dialect) from exc
    assert isinstance(event_id, int)
    return event_id


def list_events(
    conn: sa.Connection, run_id: str, *, since_id: int, limit: int, offset: int
) -> Page[RunEvent]:
    """A run's events with ``id > since_id``, in insertion order."""
    conditions = [run_events.c.run_id == run_id, run_events.c.id > since_id]
    query = sa.select(run_events).where(*conditions).order_by(run_events.c.id).limit(limit).offset(offset)
    items = [_event_from_row(row) for row in conn.execute(query).mappings()]
    total = conn.execute(sa.select(sa.func.count()).select_from(run_events).where(*conditions))
    return Page(items=items, total=total.scalar_one())


def max_event_id(conn: sa.Connection) -> int:
    """The id of the newest event (0 when there is none)."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(run_events.c.id), 0))).scalar_one())


def events_after(
    conn: sa.Connection,
    since_id: int,
    *,
    job_id: str | None = None,
    run_id: str | None = None,
    limit: int = 1000,
) -> list[RunEvent]:
    """Events with ``id > since_id`` (optionally of one job or run), oldest first."""
    query = sa.select(run_events).where(run_events.c.id > since_id)
    if job_id is not None:
        query = query.where(run_events.c.job_id == job_id)
    if run_id is not None:
        query = query.where(run_events.c.run_id == run_id)
    query = query.order_by(run_events.c.id).limit(limit)
    return [_event_from_row(row) for row in conn.execute(query).mappings()]


# ---------------------------------------------------------------------- retention

_TERMINAL_VALUES = [status.value for status in RunStatus if status.terminal]

#: A read that returns run ids (retention's batch finders).
ReadIds = Callable[[sa.Connection], list[str]]


def _ended_at() -> sa.ColumnElement[dt.datetime]:
    return sa.func.coalesce(runs.c.finished_at, runs.c.created_at)


def expired_run_ids(conn: sa.Connection, *, before: dt.datetime, limit: int) -> list[str]:
    """Up to ``limit`` terminal runs that ended before ``before``."""
    query = (
        sa.select(runs.c.id)
        .where(runs.c.status.in_(_TERMINAL_VALUES), _ended_at() < before)
        .order_by(runs.c.seq)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def jobs_over_run_cap(conn: sa.Connection, *, cap: int) -> list[str]:
    """Jobs that keep more than ``cap`` terminal runs."""
    query = (
        sa.select(runs.c.job_id)
        .where(runs.c.status.in_(_TERMINAL_VALUES))
        .group_by(runs.c.job_id)
        .having(sa.func.count() > cap)
    )
    return list(conn.execute(query).scalars())


def runs_beyond_cap(conn: sa.Connection, *, job_id: str, cap: int, limit: int) -> list[str]:
    """Up to ``limit`` of the job's terminal runs older than its newest ``cap``."""
    query = (
        sa.select(runs.c.id)
        .where(runs.c.job_id == job_id, runs.c.status.in_(_TERMINAL_VALUES))
        .order_by(_ended_at().desc(), runs.c.seq.desc())
        .offset(cap)
        .limit(limit)
    )
    return list(conn.execute(query).scalars())


def delete_terminal_runs(tx: WriteTx, run_ids: Sequence[str]) -> int:
    """Delete these runs (and, by cascade, their events) if they are terminal."""
    if not run_ids:
        return 0
    query = runs.delete().where(runs.c.id.in_(list(run_ids)), runs.c.status.in_(_TERMINAL_VALUES))
    return tx.conn.execute(query).rowcount


# ------------------------------------------------------------- supervisor loading


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """What the supervisor keeps in memory about a job whose actor is hibernating."""

    job_id: str
    enabled: bool
    next_run_at: dt.datetime | None


def schedule_index(conn: sa.Connection) -> list[ScheduleEntry]:
    """Every job's id and next fire time (cheap: no JSON decoding), for start-up."""
    query = sa.select(jobs.c.id, jobs.c.enabled, jobs.c.next_run_at)
    return [ScheduleEntry(row.id, bool(row.enabled), row.next_run_at) for row in conn.execute(query)]


def _chunks(ids: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    """``ids`` in slices of ``size``: keeps IN lists small."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])


def get_jobs(conn: sa.Connection, job_ids: Sequence[str]) -> list[Job]:
    """The jobs with these ids (those that still exist)."""
    return [
        _job_from_row(row)
        for chunk in _chunks(job_ids)
        for row in conn.execute(sa.select(jobs).where(jobs.c.id.in_(chunk))).mappings()
    ]


def active_runs_of(conn: sa.Connection, job_ids: Sequence[str]) -> list[Run]:
    """Non-terminal runs of these jobs, each job's oldest first."""
    statuses = [s.value for s in ACTIVE_STATUSES]
    query = sa.select(*runs.c).where(runs.c.status.in_(statuses)).order_by(runs.c.scheduled_for, runs.c.seq)
    return [
        _run_from_row(row)
        for chunk in _chunks(job_ids)
        for row in conn.execute(query.where(runs.c.job_id.in_(chunk))).mappings()
    ]
