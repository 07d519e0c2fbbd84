"""SQL statements, one module per table (``jobs``, ``runs``, ``events``) plus
``history`` (retention). Synchronous functions that take a SQLAlchemy ``Connection``
(reads) or a :class:`WriteTx` (writes) already inside a transaction;
``termjobs.storage.transactions`` composes them into transactions, which the facade
(``termjobs.storage.database``) runs through the gateway. Every timestamp is a
parameter: no SQL-side ``now()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from termjobs.model import RunEvent


@dataclass(slots=True)
class EventOrder:
    """A cluster's ordering of run events, for one transaction.

    Event ids come from one sequence, but transactions on several servers commit in
    any order, so a reader that has seen id 11 could miss 10 committed a moment later.
    A cluster-wide lock (``cluster.EVENTS_LOCK_KEY``), taken before a transaction's
    first event insert and held until it commits, makes commit order the id order:
    every reader can follow ``id > last seen``. The newest id inserted is announced
    when the transaction commits."""

    taken: bool = False
    newest: int = 0


@dataclass(slots=True)
class WriteTx:
    """A write transaction in progress.

    ``events`` collects the run events inserted through it; the gateway publishes them
    to live subscribers only after the transaction commits. ``order`` is set in a
    cluster (shared by every request of one transaction), and so is ``fences``: the
    jobs the transaction acts on as their owner, checked together before it commits.
    """

    conn: sa.Connection
    events: list[RunEvent] = field(default_factory=list)
    order: EventOrder | None = None
    fences: Fences | None = None


@dataclass(slots=True)
class Fences:
    """The jobs a transaction writes to as their owner (in a cluster). They are checked
    in one statement just before it commits, which share-locks their rows until then
    (``cluster.check_owners``): a takeover waits for the commit and then sees it, or
    the transaction sees the takeover and rolls back."""

    worker_id: str = ""
    lease_s: float = 0.0
    job_ids: set[str] = field(default_factory=set)


def chunks(ids: Sequence[str], size: int = 500) -> Iterator[list[str]]:
    """``ids`` in slices of ``size``: keeps IN lists small."""
    for start in range(0, len(ids), size):
        yield list(ids[start : start + size])
