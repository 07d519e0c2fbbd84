"""Apply the alembic migrations in ``storage/migrations`` at start-up.

A database already at :data:`HEAD_REVISION` (every start but the first after an
upgrade) is recognised with one query, without loading alembic.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger(__name__)

#: The newest migration shipped with this version (a test checks it against alembic's
#: own head): update it with every new migration.
HEAD_REVISION: Final = "0005"
_SCRIPTS = Path(__file__).parent / "migrations"
# Serialises concurrent start-ups of several servers sharing one PostgreSQL database.
_PG_LOCK_KEY = 0x7465726D6A6F6273 & 0x7FFFFFFFFFFFFFFF
_VERSION_TABLE = "alembic_version"


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    return cfg


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` for an empty database)."""
    with engine.connect() as conn:
        return revision_of(conn)


def revision_of(conn: sa.Connection) -> str | None:
    """The revision of the database ``conn`` is connected to."""
    if not sa.inspect(conn).has_table(_VERSION_TABLE):
        return None
    version = sa.table(_VERSION_TABLE, sa.column("version_num"))
    return conn.execute(sa.select(version.c.version_num)).scalar()


def head_revision() -> str | None:
    """The newest migration revision shipped with this version, as alembic sees it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config()).get_current_head()


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest revision (idempotent)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
        before = revision_of(conn)
        if before == HEAD_REVISION:
            return
        from alembic import command

        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        after = revision_of(conn)
    if before != after:
        logger.info("database schema upgraded from %s to %s", before or "empty", after)
