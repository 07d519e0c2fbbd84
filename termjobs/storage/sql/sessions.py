"""Statements on the ``llm_sessions`` and ``llm_session_messages`` tables."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from termjobs.model import Session, SessionMessage
from termjobs.storage.base import SessionTranscript, storable
from termjobs.storage.rows import SESSION_MESSAGES, SESSIONS
from termjobs.storage.sql import WriteTx
from termjobs.storage.tables import llm_session_messages, llm_sessions, runs

_UPDATED_FIELDS = ("name", "agent", "provider", "model", "turn_count", "input_tokens", "output_tokens")


def save(tx: WriteTx, session: Session, messages: Sequence[SessionMessage]) -> None:
    """Insert or update the session row, then append ``messages``."""
    row = SESSIONS.values(session)
    changes = {key: row[key] for key in (*_UPDATED_FIELDS, "updated_at")}
    updated = tx.conn.execute(llm_sessions.update().where(llm_sessions.c.id == session.id).values(changes))
    if updated.rowcount == 0:
        tx.conn.execute(llm_sessions.insert(), row)
    if messages:
        rows = []
        for message in messages:
            values = SESSION_MESSAGES.values(dataclasses.replace(message, session_id=session.id))
            del values["id"]  # assigned by the database, in insertion order
            values["content"] = storable(values["content"])
            rows.append(values)
        tx.conn.execute(llm_session_messages.insert(), rows)


def get(conn: sa.Connection, session_id: str) -> SessionTranscript | None:
    """The session and its messages, oldest first."""
    row = conn.execute(sa.select(*SESSIONS.columns).where(llm_sessions.c.id == session_id)).mappings().first()
    if row is None:
        return None
    query = (
        sa.select(*SESSION_MESSAGES.columns)
        .where(llm_session_messages.c.session_id == session_id)
        .order_by(llm_session_messages.c.id)
    )
    messages = [SESSION_MESSAGES.load(item) for item in conn.execute(query).mappings()]
    return SessionTranscript(SESSIONS.load(row), messages)


def delete_orphans(tx: WriteTx, *, before: dt.datetime, limit: int) -> int:
    """Delete up to ``limit`` sessions no run refers to, last updated before ``before``."""
    referenced = sa.select(runs.c.id).where(runs.c.session_id == llm_sessions.c.id).exists()
    doomed = list(
        tx.conn.execute(
            sa.select(llm_sessions.c.id)
            .where(llm_sessions.c.updated_at < before, ~referenced)
            .order_by(llm_sessions.c.updated_at)
            .limit(limit)
        ).scalars()
    )
    if not doomed:
        return 0
    # Messages go by cascade; deleting them first also works where foreign keys are off.
    tx.conn.execute(llm_session_messages.delete().where(llm_session_messages.c.session_id.in_(doomed)))
    return tx.conn.execute(llm_sessions.delete().where(llm_sessions.c.id.in_(doomed))).rowcount
