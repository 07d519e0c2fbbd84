"""LLM sessions: conversations kept across runs, and the index retention uses to find
sessions no run refers to.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from termjobs.storage.tables import BigId, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "llm_sessions",
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
    )
    op.create_index("ix_llm_sessions_updated", "llm_sessions", ["updated_at"])
    op.create_table(
        "llm_session_messages",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column(
            "session_id",
            sa.String(64),
            sa.ForeignKey("llm_sessions.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("run_id", sa.String(32)),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_llm_session_messages_session", "llm_session_messages", ["session_id", "id"])
    op.create_index("ix_runs_session", "runs", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_runs_session", table_name="runs")
    op.drop_table("llm_session_messages")
    op.drop_table("llm_sessions")
