"""The number of jobs, kept by the database: listing a million jobs must not count them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_PG_FUNCTION = """
CREATE FUNCTION termjobs_count_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE row_counts SET value = value + (SELECT count(*) FROM added) WHERE name = 'jobs';
    ELSIF TG_OP = 'TRUNCATE' THEN
        UPDATE row_counts SET value = 0 WHERE name = 'jobs';
    ELSE
        UPDATE row_counts SET value = value - (SELECT count(*) FROM removed) WHERE name = 'jobs';
    END IF;
    RETURN NULL;
END $$
"""


def upgrade() -> None:
    op.create_table(
        "row_counts",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    if _pg():
        # Another server of the cluster may be adding jobs: none may come between the
        # count and the triggers (SQLite has one writer at a time anyway).
        op.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
    op.execute("INSERT INTO row_counts (name, value) SELECT 'jobs', count(*) FROM jobs")
    if _pg():
        # Once per statement (a batch of jobs adds its count at once): one update of
        # the counter per transaction, not one per job.
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS added "
            "FOR EACH STATEMENT EXECUTE FUNCTION termjobs_count_jobs()"
        )
        op.execute(
            "CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs REFERENCING OLD TABLE AS removed "
            "FOR EACH STATEMENT EXECUTE FUNCTION termjobs_count_jobs()"
        )
        op.execute(
            "CREATE TRIGGER jobs_counted_truncate AFTER TRUNCATE ON jobs "
            "FOR EACH STATEMENT EXECUTE FUNCTION termjobs_count_jobs()"
        )
    else:
        op.execute(
            "CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs BEGIN "
            "UPDATE row_counts SET value = value + 1 WHERE name = 'jobs'; END"
        )
        op.execute(
            "CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs BEGIN "
            "UPDATE row_counts SET value = value - 1 WHERE name = 'jobs'; END"
        )


def downgrade() -> None:
    if _pg():
        op.execute("DROP TRIGGER jobs_counted_truncate ON jobs")
    op.execute("DROP TRIGGER jobs_counted_delete" + (" ON jobs" if _pg() else ""))
    op.execute("DROP TRIGGER jobs_counted_insert" + (" ON jobs" if _pg() else ""))
    if _pg():
        op.execute("DROP FUNCTION termjobs_count_jobs()")
    op.drop_table("row_counts")


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"
