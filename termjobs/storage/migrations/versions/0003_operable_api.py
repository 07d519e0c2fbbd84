"""The operable API: per-run overrides, completion webhooks, idempotency receipts.

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from termjobs.storage.tables import BigId, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("overrides", sa.Text))
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("notify", sa.Text))
    op.create_table(
        "receipts",
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_receipts_created", "receipts", ["created_at"])
    op.create_table(
        "notifications",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_notifications_run", "notifications", ["run_id"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("receipts")
    with op.batch_alter_table("jobs") as jobs:
        jobs.drop_column("notify")
    with op.batch_alter_table("runs") as runs:
        runs.drop_column("overrides")
