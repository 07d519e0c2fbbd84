"""Database URLs and engines.

SQLite (the default, one file) runs in WAL mode with foreign keys on and a busy
timeout; write transactions start with ``BEGIN IMMEDIATE`` so a read-then-write
transaction never fails to upgrade its lock. PostgreSQL uses psycopg 3 (sync).

Two engines per database: the *writer* (one connection, used only by the gateway's
writer, one batch at a time) and the *readers* (a small pool; autocommit on PostgreSQL).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

SQLITE_BUSY_TIMEOUT_S = 5.0
PG_CONNECT_TIMEOUT_S = 10
PG_STATEMENT_TIMEOUT_S = 60.0
#: Longest wait for a free pooled connection before the call counts as unavailable.
PG_POOL_TIMEOUT_S = 10.0


class DatabaseURLError(ValueError):
    """A database URL that termjobs cannot use."""


def default_sqlite_path(env: dict[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/term-llm/jobs_v2.db`` (``~/.local/share`` when unset)."""
    environ = os.environ if env is None else env
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "term-llm" / "jobs_v2.db"


def resolve_url(raw: str | None) -> URL:
    """Turn ``--db`` / ``TERM_LLM_JOBS_DB`` into a SQLAlchemy URL.

    Accepts ``sqlite:///path``, ``postgresql://...`` (psycopg 3 is used) or a bare
    file path; ``None`` or empty means the default SQLite file.
    """
    text = (raw or "").strip()
    if not text:
        return sa.URL.create("sqlite", database=str(default_sqlite_path()))
    if "://" not in text:
        return sa.URL.create("sqlite", database=str(Path(text).expanduser()))
    try:
        url = make_url(text)
    except sa.exc.ArgumentError:
        raise DatabaseURLError(f"invalid database URL {text!r}") from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise DatabaseURLError(
                "an in-memory SQLite database would lose every job on restart; "
                "give a file path, e.g. sqlite:////var/lib/termjobs/jobs.db"
            )
        return url
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    raise DatabaseURLError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://...")


def redact(url: URL) -> str:
    """The URL as text with any password hidden, for logs and banners."""
    return url.render_as_string(hide_password=True)


@dataclass(frozen=True, slots=True)
class Engines:
    """The writer and reader engines of one database."""

    url: URL
    writer: Engine
    reader: Engine
    readers: int

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def dispose(self) -> None:
        self.writer.dispose()
        self.reader.dispose()


def create_engines(url: URL, *, readers: int = 2) -> Engines:
    """Create the engines for ``url`` (creating the SQLite directory if needed)."""
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        writer = _sqlite_engine(url, pool_size=1, begin="BEGIN IMMEDIATE")
        # Two connections more than the reader threads: the reads run on the event-loop
        # thread (one at a time) and the connection it keeps for point reads
        # (``Gateway.read_point``) must never wait for a connection a thread holds.
        reader = _sqlite_engine(url, pool_size=readers + 2, begin="BEGIN")
    else:
        common: dict[str, Any] = {
            "pool_pre_ping": True,
            "max_overflow": 0,
            "pool_timeout": PG_POOL_TIMEOUT_S,
            # TCP keepalives and a user timeout: a database host that vanishes (network
            # gone, machine down) fails the connection instead of hanging it forever.
            "connect_args": {
                "connect_timeout": PG_CONNECT_TIMEOUT_S,
                "keepalives": 1,
                "keepalives_idle": 10,
                "keepalives_interval": 5,
                "keepalives_count": 3,
                "tcp_user_timeout": 30_000,
            },
        }
        writer = sa.create_engine(url, pool_size=1, **common)
        reader = sa.create_engine(url, pool_size=readers, isolation_level="AUTOCOMMIT", **common)
        for engine in (writer, reader):
            sa.event.listen(engine, "connect", _pg_session_settings)
    return Engines(url=url, writer=writer, reader=reader, readers=readers)


def _pg_session_settings(dbapi_conn: Any, _record: Any) -> None:
    # A hung statement must not hold the single writer (or a reader) forever.
    autocommit = dbapi_conn.autocommit
    dbapi_conn.autocommit = True
    dbapi_conn.execute(f"SET statement_timeout = {int(PG_STATEMENT_TIMEOUT_S * 1000)}")
    dbapi_conn.autocommit = autocommit


def _sqlite_engine(url: URL, *, pool_size: int, begin: str) -> Engine:
    engine = sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S},
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Python 3.11's sqlite3 opens transactions implicitly (and DEFERRED); switch
        # that off and let the "begin" hook below decide.
        dbapi_conn.isolation_level = None
        busy_ms = int(SQLITE_BUSY_TIMEOUT_S * 1000)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            dbapi_conn.execute(f"PRAGMA {pragma}")
        dbapi_conn.execute(f"PRAGMA busy_timeout={busy_ms}")

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(begin)

    return engine
