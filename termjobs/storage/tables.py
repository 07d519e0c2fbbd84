"""SQLAlchemy Core tables. Migrations (``storage/migrations``) create and evolve them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from termjobs.model import RunStatus


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes with microsecond precision on every backend.

    SQLite stores them as fixed-width ``YYYY-MM-DD HH:MM:SS.ffffff`` text (which sorts
    correctly); PostgreSQL as ``timestamptz``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError(f"timestamps must be timezone-aware datetimes, got {value!r}")
        utc = value.astimezone(dt.UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)

    # On SQLite, the same conversions in one step each, with the C ``isoformat`` and
    # ``fromisoformat`` instead of SQLAlchemy's generic text formatting and regular
    # expression: timestamps are most of the values of a run row, and the fires of
    # many jobs and the run listings convert thousands of them a second.

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], str | None] | Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def to_text(value: Any) -> str | None:
            if value is None:
                return None
            if not isinstance(value, dt.datetime) or value.tzinfo is None:
                raise ValueError(f"timestamps must be timezone-aware datetimes, got {value!r}")
            return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")

        return to_text

    def result_processor(
        self, dialect: Dialect, coltype: object
    ) -> Callable[[Any], dt.datetime | None] | Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def from_text(value: Any) -> dt.datetime | None:
            if value is None:
                return None
            stored = dt.datetime.fromisoformat(value)
            return stored.replace(tzinfo=dt.UTC) if stored.tzinfo is None else stored.astimezone(dt.UTC)

        return from_text


# SQLite only gives AUTOINCREMENT (ids never reused) to an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("runner_type", sa.String(16), nullable=False),
    sa.Column("runner_config", sa.Text, nullable=False),
    sa.Column("trigger_type", sa.String(16), nullable=False),
    sa.Column("trigger_config", sa.Text, nullable=False),
    sa.Column("schedule_timezone", sa.String(64)),
    sa.Column("concurrency_policy", sa.String(16), nullable=False),
    sa.Column("max_concurrent_runs", sa.Integer, nullable=False),
    sa.Column("retry_policy", sa.Text),
    sa.Column("timeout_seconds", sa.Integer, nullable=False),
    sa.Column("misfire_policy", sa.String(16), nullable=False),
    sa.Column("misfire_grace_seconds", sa.Integer, nullable=False),
    sa.Column("labels", sa.Text),
    sa.Column("notify", sa.Text),
    sa.Column("next_run_at", UTCDateTime),
    sa.Column("last_fire_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # The server that runs the job (a cluster on PostgreSQL; see termjobs.cluster),
    # and since when (the database's clock).
    sa.Column("owner_id", sa.String(40)),
    sa.Column("owner_since", UTCDateTime),
    sa.Index("ix_jobs_created_at", "created_at", "id"),
    sa.Index("ix_jobs_owner", "owner_id", "owner_since"),
)

_STATUS_VALUES = ", ".join(f"'{status.value}'" for status in RunStatus)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("seq", BigId, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(32), nullable=False, unique=True),
    sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("trigger", sa.String(16), nullable=False),
    sa.Column("scheduled_for", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("worker_id", sa.String(40)),
    sa.Column("session_id", sa.String(64)),
    sa.Column("started_at", UTCDateTime),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("stdout", sa.Text),
    sa.Column("stderr", sa.Text),
    sa.Column("thinking", sa.Text),
    sa.Column("response", sa.Text),
    sa.Column("exit_reason", sa.String(32)),
    sa.Column("truncated", sa.Boolean, nullable=False, default=False),
    sa.Column("turn_count", sa.Integer, nullable=False, default=0),
    sa.Column("input_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("output_tokens", sa.Integer, nullable=False, default=0),
    sa.Column("retry_of", sa.String(32)),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("overrides", sa.Text),
    sa.CheckConstraint(f"status IN ({_STATUS_VALUES})", name="ck_runs_status"),
    sa.Index("ix_runs_job_created", "job_id", "created_at", "seq"),
    sa.Index("ix_runs_created", "created_at", "seq"),
    sa.Index("ix_runs_status", "status"),
    sa.Index("ix_runs_session", "session_id"),
    # One scheduled run per job and nominal fire time: fires are idempotent.
    sa.Index(
        "ux_runs_job_schedule",
        "job_id",
        "scheduled_for",
        unique=True,
        sqlite_where=sa.text("\"trigger\" = 'schedule'"),
        postgresql_where=sa.text("\"trigger\" = 'schedule'"),
    ),
)

run_events = sa.Table(
    "run_events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("data", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_run_events_run", "run_id", "id"),
    sa.Index("ix_run_events_job", "job_id", "id"),
    sqlite_autoincrement=True,
)

#: Answers to requests made with an ``Idempotency-Key`` (kept 24 hours).
receipts = sa.Table(
    "receipts",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("status", sa.Integer, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_receipts_created", "created_at"),
)

#: Completion webhooks not delivered yet (written with the run's final state).
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("secret", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_notifications_run", "run_id"),
    sqlite_autoincrement=True,
)

# LLM conversations (``termjobs.model.Session``). No foreign key to jobs: a session
# outlives the job whose run started it; retention removes the ones no run refers to.
llm_sessions = sa.Table(
    "llm_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("job_id", sa.String(32)),
    sa.Column("name", sa.Text),
    sa.Column("agent", sa.Text, nullable=False),
    sa.Column("provider", sa.String(100), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("turn_count", sa.Integer, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_llm_sessions_updated", "updated_at"),
)

llm_session_messages = sa.Table(
    "llm_session_messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "session_id", sa.String(64), sa.ForeignKey("llm_sessions.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("run_id", sa.String(32)),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Index("ix_llm_session_messages_session", "session_id", "id"),
    sqlite_autoincrement=True,
)


#: The servers of a cluster (PostgreSQL): one row per server process. Heartbeats use
#: the database's clock, so servers with skewed clocks still agree on who is alive.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    # Where ``pid`` means something: the kernel boot and the pid namespace. A server
    # there can tell at once that another one there has died.
    sa.Column("namespace", sa.String(100), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("version", sa.String(40), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    # Set when the server left cleanly: its jobs are taken over at once.
    sa.Column("left_at", UTCDateTime),
)

#: Decisions asked of a job's owner by another server (the request, then its reply),
#: so that a lost NOTIFY loses nothing.
cluster_requests = sa.Table(
    "cluster_requests",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("sender_id", sa.String(40), nullable=False),
    sa.Column("target_id", sa.String(40), nullable=False),
    sa.Column("job_id", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("reply", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("answered_at", UTCDateTime),
    sa.Index("ix_cluster_requests_target", "target_id", "answered_at"),
    sqlite_autoincrement=True,
)

#: Row counts the database keeps up to date itself (triggers, migration 0005):
#: ``jobs`` is the number of jobs, so an unfiltered listing needs no count over them.
row_counts = sa.Table(
    "row_counts",
    metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
