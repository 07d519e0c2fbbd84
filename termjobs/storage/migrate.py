"""Apply the alembic migrations in ``storage/migrations`` at start-up."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

_SCRIPTS = Path(__file__).parent / "migrations"
# Serialises concurrent start-ups of several servers sharing one PostgreSQL database.
_PG_LOCK_KEY = 0x7465726D6A6F6273 & 0x7FFFFFFFFFFFFFFF


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    with engine.connect() as conn:
        return revision_of(conn)


def revision_of(conn: sa.Connection) -> str | None:
    """The revision of the database ``conn`` is connected to."""
    return MigrationContext.configure(conn).get_current_revision()


@functools.cache
def head_revision() -> str | None:
    """The newest migration revision shipped with this version."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest revision (idempotent)."""
    cfg = _config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = MigrationContext.configure(conn).get_current_revision()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        after = MigrationContext.configure(conn).get_current_revision()
    if before != after:
        logger.info("database schema upgraded from %s to %s", before or "empty", after)
