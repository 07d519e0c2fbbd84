"""Statements on the ``jobs`` table."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from termjobs.jobdef import Job
from termjobs.storage.base import JobFilters, NameTaken, Page, ScheduleEntry
from termjobs.storage.rows import JOBS
from termjobs.storage.sql import WriteTx, chunks, events, update_many
from termjobs.storage.tables import jobs, row_counts

# Statements built once: SQLAlchemy runs a constant statement object much faster than
# a freshly built one (these are the API's hot reads).
_GET = sa.select(jobs).where(jobs.c.id == sa.bindparam("job_id"))
_FIND = sa.select(jobs).where(sa.or_(jobs.c.id == sa.bindparam("ref"), jobs.c.name == sa.bindparam("ref")))


def _name_taken(conn: sa.Connection, name: str, except_id: str) -> bool:
    query = sa.select(jobs.c.id).where(jobs.c.name == name, jobs.c.id != except_id)
    return conn.execute(query).first() is not None


def insert(tx: WriteTx, job: Job) -> None:
    """Insert a new job; :class:`NameTaken` if its name is in use."""
    # Checked before the INSERT so the failure is a clean message, not a driver error;
    # the UNIQUE constraint still guards against any writer we do not know about.
    if _name_taken(tx.conn, job.spec.name, job.id):
        raise NameTaken(job.spec.name)
    tx.conn.execute(jobs.insert().values(**JOBS.values(job)))


def insert_many(tx: WriteTx, new_jobs: Sequence[Job]) -> None:
    """Insert many new jobs in one statement; a taken name fails the whole call
    through the UNIQUE constraint."""
    if new_jobs:
        tx.conn.execute(jobs.insert(), [JOBS.values(job) for job in new_jobs])


def update(tx: WriteTx, job: Job) -> None:
    """Store every field of ``job``; :class:`NameTaken` if renamed onto a taken name."""
    if _name_taken(tx.conn, job.spec.name, job.id):
        raise NameTaken(job.spec.name)
    values = JOBS.values(job)
    del values["id"], values["created_at"]
    tx.conn.execute(jobs.update().where(jobs.c.id == job.id).values(**values))


def advance(tx: WriteTx, advanced: Sequence[Job]) -> None:
    """Store fires' changes to jobs: their schedule state, and ``enabled`` (a once job
    disables itself). One driver ``executemany``: fires are the scheduler's hot write,
    and many jobs fall due at once (through SQLAlchemy, this statement took a quarter
    of the writer's time while 100,000 jobs fired)."""
    update_many(
        tx.conn,
        jobs,
        "id",
        [
            {
                "id": job.id,
                "enabled": job.spec.enabled,
                "next_run_at": job.next_run_at,
                "last_fire_at": job.last_fire_at,
                "updated_at": job.updated_at,
            }
            for job in advanced
        ],
    )


def delete(tx: WriteTx, job_id: str) -> bool:
    """Delete a job with its runs and events (by cascade); whether it existed."""
    events.send_held(tx)  # events held for its runs go first, and go with them
    return tx.conn.execute(jobs.delete().where(jobs.c.id == job_id)).rowcount == 1


def get(conn: sa.Connection, job_id: str) -> Job | None:
    row = conn.execute(_GET, {"job_id": job_id}).mappings().first()
    return None if row is None else JOBS.load(row)


def find(conn: sa.Connection, ref: str) -> Job | None:
    """The job whose id is ``ref``, else the job named exactly ``ref``."""
    found = [JOBS.load(row) for row in conn.execute(_FIND, {"ref": ref}).mappings()]
    by_id = [job for job in found if job.id == ref]
    matches = by_id or found
    return matches[0] if matches else None


def get_many(conn: sa.Connection, job_ids: Sequence[str]) -> list[Job]:
    """The jobs with these ids (those that exist)."""
    return [
        JOBS.load(row)
        for chunk in chunks(job_ids)
        for row in conn.execute(sa.select(jobs).where(jobs.c.id.in_(chunk))).mappings()
    ]


def page(conn: sa.Connection, *, limit: int, offset: int, filters: JobFilters) -> Page[Job]:
    """Jobs, newest first, with the count of all matches."""
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.name:
        conditions.append(jobs.c.name.icontains(filters.name, autoescape=True))
    if filters.enabled is not None:
        conditions.append(jobs.c.enabled == filters.enabled)
    if filters.trigger_type is not None:
        conditions.append(jobs.c.trigger_type == filters.trigger_type.value)
    if filters.runner_type is not None:
        conditions.append(jobs.c.runner_type == filters.runner_type.value)
    for key, value in filters.labels:
        conditions.append(_label_is(conn.dialect.name, key, value))
    if filters.id_prefix:
        conditions.extend(_id_prefix(filters.id_prefix))
    query = (
        sa.select(jobs)
        .where(*conditions)
        .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    items = [JOBS.load(row) for row in conn.execute(query).mappings()]
    kept = None if conditions else conn.execute(_COUNTED).scalar_one_or_none()
    if kept is not None:
        return Page(items=items, total=int(kept))
    total = conn.execute(sa.select(sa.func.count()).select_from(jobs).where(*conditions))
    return Page(items=items, total=total.scalar_one())


#: The number of jobs, as the database's triggers keep it (a count over a million jobs
#: took most of a listing's time).
_COUNTED = sa.select(row_counts.c.value).where(row_counts.c.name == "jobs")


def _label_is(dialect: str, key: str, value: str) -> sa.ColumnElement[bool]:
    """The job's labels (a JSON object) map ``key`` to ``value``: that string, or a
    number or boolean whose JSON spelling it is."""
    if dialect == "postgresql":
        found: sa.ColumnElement[str] = sa.cast(jobs.c.labels, JSONB)[key].astext
        return found == value
    each = sa.func.json_each(jobs.c.labels).table_valued("key", "value", "type")
    spelled = sa.case(
        (each.c.type == "true", "true"),
        (each.c.type == "false", "false"),
        else_=sa.cast(each.c.value, sa.Text),
    )
    scalar = each.c.type.in_(["text", "integer", "real", "true", "false"])
    return sa.exists(sa.select(1).select_from(each).where(each.c.key == key, scalar, spelled == value))


def _id_prefix(prefix: str) -> list[sa.ColumnElement[bool]]:
    # LIKE (with ``%`` and ``_`` escaped: ids contain ``_``) narrows the scan, but
    # SQLite's LIKE ignores ASCII case and ids are case-sensitive base64url, so the
    # exact comparison of the leading characters decides.
    return [
        jobs.c.id.startswith(prefix, autoescape=True),
        sa.func.substr(jobs.c.id, 1, len(prefix)) == prefix,
    ]


def schedule_index(conn: sa.Connection, job_ids: Sequence[str] | None = None) -> list[ScheduleEntry]:
    """Every job's (or these jobs') id and next fire time (cheap: no JSON decoding),
    for start-up and for jobs a server takes over."""
    query = sa.select(jobs.c.id, jobs.c.enabled, jobs.c.next_run_at)
    if job_ids is None:
        return [ScheduleEntry(row.id, bool(row.enabled), row.next_run_at) for row in conn.execute(query)]
    return [
        ScheduleEntry(row.id, bool(row.enabled), row.next_run_at)
        for chunk in chunks(job_ids)
        for row in conn.execute(query.where(jobs.c.id.in_(chunk)))
    ]
