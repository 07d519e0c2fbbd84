"""Initial schema: jobs, runs, run_events.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

from termjobs.storage.tables import BigId, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_STATUSES = (
    "'queued', 'claimed', 'running', 'cancel_requested', 'succeeded', 'failed', "
    "'timed_out', 'cancelled', 'skipped'"
)


def upgrade() -> None:
    op.create_table(
        "jobs",
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
        sa.Column("next_run_at", UTCDateTime),
        sa.Column("last_fire_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_jobs_created_at", "jobs", ["created_at", "id"])
    op.create_table(
        "runs",
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
        sa.Column("truncated", sa.Boolean, nullable=False),
        sa.Column("turn_count", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("retry_of", sa.String(32)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.CheckConstraint(f"status IN ({_STATUSES})", name="ck_runs_status"),
    )
    op.create_index("ix_runs_job_created", "runs", ["job_id", "created_at", "seq"])
    op.create_index("ix_runs_created", "runs", ["created_at", "seq"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.create_index(
        "ux_runs_job_schedule",
        "runs",
        ["job_id", "scheduled_for"],
        unique=True,
        sqlite_where=sa.text("\"trigger\" = 'schedule'"),
        postgresql_where=sa.text("\"trigger\" = 'schedule'"),
    )
    op.create_table(
        "run_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("message", sa.Text),
        sa.Column("data", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_run_events_run", "run_events", ["run_id", "id"])
    op.create_index("ix_run_events_job", "run_events", ["job_id", "id"])


def downgrade() -> None:
    op.drop_table("run_events")
    op.drop_table("runs")
    op.drop_table("jobs")
