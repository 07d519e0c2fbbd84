"""Cluster: servers (workers), job owners, requests between servers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from termjobs.storage.tables import BigId, UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("owner_id", sa.String(40)))
        jobs.add_column(sa.Column("owner_since", UTCDateTime))
    op.create_index("ix_jobs_owner", "jobs", ["owner_id", "owner_since"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        # Where ``pid`` means something: the kernel boot and the pid namespace. A
        # server there can tell at once that another one there has died.
        sa.Column("namespace", sa.String(100), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("version", sa.String(40), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("heartbeat_at", UTCDateTime, nullable=False),
        sa.Column("left_at", UTCDateTime),
    )
    op.create_table(
        "cluster_requests",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("sender_id", sa.String(40), nullable=False),
        sa.Column("target_id", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("reply", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("answered_at", UTCDateTime),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_cluster_requests_target", "cluster_requests", ["target_id", "answered_at"])


def downgrade() -> None:
    op.drop_table("cluster_requests")
    op.drop_table("workers")
    op.drop_index("ix_jobs_owner", "jobs")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("owner_since")
        jobs.drop_column("owner_id")
