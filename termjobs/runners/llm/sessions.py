"""Conversations kept in the jobs database (``persist_session``, on by default).

A run's session is the job's fixed ``session_id`` (every run continues the same
conversation) or a new id per run (``YYYYMMDD-HHMMSS-`` and 16 hex digits). The
transcript is saved as it grows, after each turn, so a run that is cancelled or
whose server dies keeps what it had said.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets

from termjobs.clock import Clock
from termjobs.model import Session, SessionMessage
from termjobs.runners.llm.messages import Message, Usage
from termjobs.storage import Storage


def new_session_id(now: dt.datetime) -> str:
    """``20260301-140501-9f0c2a7b13d4e5f6`` (UTC)."""
    return now.astimezone(dt.UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(8)


async def load_history(storage: Storage, session_id: str) -> tuple[Session | None, list[Message]]:
    """The stored session and its messages (none if it does not exist yet)."""
    transcript = await storage.get_session(session_id)
    if transcript is None:
        return None, []
    messages = [m for m in (Message.from_json(item.content) for item in transcript.messages) if m is not None]
    return transcript.session, messages


class SessionLog:
    """Appends one run's messages to its session; does nothing when not persisting."""

    def __init__(
        self, storage: Storage, clock: Clock, session: Session, *, run_id: str, enabled: bool
    ) -> None:
        self._storage = storage
        self._clock = clock
        self.session = session
        self._run_id = run_id
        self._enabled = enabled
        self._pending: list[SessionMessage] = []

    def add(self, message: Message, usage: Usage | None = None) -> None:
        """Queue ``message`` (with its turn's ``usage``, for the counters)."""
        if usage is not None:
            self.session = dataclasses.replace(
                self.session,
                turn_count=self.session.turn_count + 1,
                input_tokens=self.session.input_tokens + usage.input_tokens,
                output_tokens=self.session.output_tokens + usage.output_tokens,
            )
        if not self._enabled:
            return
        now = self._clock.now()
        self._pending.append(
            SessionMessage(
                session_id=self.session.id,
                run_id=self._run_id,
                role=message.role,
                content=message.to_json(),
                created_at=now,
            )
        )

    async def save(self) -> None:
        """Store what was queued since the last save."""
        if not self._enabled or not self._pending:
            return
        pending, self._pending = self._pending, []
        self.session = dataclasses.replace(self.session, updated_at=self._clock.now())
        try:
            await self._storage.save_session(self.session, pending)
        except BaseException:
            self._pending = pending + self._pending  # kept for the next try
            raise
