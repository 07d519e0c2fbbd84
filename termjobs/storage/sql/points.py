"""The API's hottest point reads, straight on a DB-API connection (SQLite).

``GET /v2/jobs/{id}`` and ``GET /v2/runs/{id}`` read one row or two. Through
SQLAlchemy that cost a pool checkout, a transaction and two statement executions,
more than the queries themselves and as much as the rest of the request: the profile
of ``GET /v2/jobs/{id}`` had 21% of the event loop in the read, of which the SQLite
queries were a fraction. Here each read is one constant statement, compiled by
SQLAlchemy once, run on a connection the gateway keeps for the event loop, and its
row turned into values by the same row mapping as everywhere else
(:meth:`~termjobs.storage.rows.RowMapper.tuple_loader`). One statement is one
snapshot, so a job and its newest run are read together, as before.

Only for SQLite, where reads run on the event loop anyway (see
:meth:`~termjobs.storage.gateway.Gateway.read`); PostgreSQL reads go to the reader
threads, where the hop costs more than SQLAlchemy does.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from termjobs.model import Run
from termjobs.storage.base import JobView
from termjobs.storage.rows import JOBS, RUN_SUMMARIES, RUNS
from termjobs.storage.tables import jobs, runs


class DriverStatement:
    """A constant statement, compiled once for ``dialect``: its SQL text and its
    parameters in the driver's form (a tuple for SQLite's ``qmark`` style, a mapping
    for psycopg's named style)."""

    def __init__(self, statement: sa.Select[Any] | sa.Update, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._names = None if compiled.positiontup is None else tuple(compiled.positiontup)
        self._constants = dict(compiled.params)

    def params(self, **values: Any) -> tuple[Any, ...] | dict[str, Any]:
        """The driver's parameters, ``values`` by bind name, constants (a ``LIMIT``)
        as compiled."""
        given = self._constants | values
        if self._names is None:
            return given
        return tuple(given[name] for name in self._names)


def _job_view_statement() -> sa.Select[Any]:
    """The job whose id is ``ref`` (else the one named ``ref``) with its newest run
    (the highest ``seq``, as ``runs.last_of``), ``NULL`` columns when it has none."""
    job, run = jobs.alias("j"), runs.alias("r")
    newest = sa.select(sa.func.max(runs.c.seq)).where(runs.c.job_id == job.c.id).scalar_subquery()
    ref: sa.BindParameter[str] = sa.bindparam("ref")
    return (
        sa.select(*(job.c[c.name] for c in JOBS.columns), *(run.c[c.name] for c in RUN_SUMMARIES.columns))
        .select_from(job.outerjoin(run, run.c.seq == newest))
        .where(sa.or_(job.c.id == ref, job.c.name == ref))
        .order_by((job.c.id == ref).desc())  # an id match before a name match
        .limit(1)
    )


def _run_statement(full: bool) -> sa.Select[Any]:
    mapper = RUNS if full else RUN_SUMMARIES
    return sa.select(*mapper.columns).where(runs.c.id == sa.bindparam("run_id"))


class PointReads:
    """The point reads, for one dialect; each takes the driver's connection."""

    def __init__(self, dialect: Dialect) -> None:
        self._job_view = DriverStatement(_job_view_statement(), dialect)
        self._job_columns = len(JOBS.columns)
        self._run_id = self._job_columns + [c.name for c in RUN_SUMMARIES.columns].index("id")
        self._load_job = JOBS.tuple_loader(dialect)
        self._load_summary = RUN_SUMMARIES.tuple_loader(dialect)
        self._run = {full: DriverStatement(_run_statement(full), dialect) for full in (True, False)}
        self._load_run = {True: RUNS.tuple_loader(dialect), False: self._load_summary}

    def job_view(self, driver: Any, ref: str) -> JobView | None:
        """As ``transactions.job_view``."""
        row = driver.execute(self._job_view.sql, self._job_view.params(ref=ref)).fetchone()
        if row is None:
            return None
        split = self._job_columns
        last_run = None if row[self._run_id] is None else self._load_summary(row[split:])
        return JobView(self._load_job(row[:split]), last_run)

    @staticmethod
    def data_version(driver: Any) -> int:
        """SQLite's ``PRAGMA data_version`` on this connection: it changes whenever
        another connection (the gateway's writer, or any other process) commits."""
        return int(driver.execute("PRAGMA data_version").fetchone()[0])

    def run(self, driver: Any, run_id: str, *, full: bool) -> Run | None:
        """As ``runs.get``."""
        select = self._run[full]
        row = driver.execute(select.sql, select.params(run_id=run_id)).fetchone()
        return None if row is None else self._load_run[full](row)
