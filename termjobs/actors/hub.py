"""Fan-out of committed run events to live subscribers.

The storage gateway calls :meth:`Hub.publish` after each commit, in event-id order.
Each subscriber has its own bounded channel; publishing never blocks: a subscriber
whose channel is full is closed as *lagged* and must reconnect and backfill from
storage with ``since_id``. No subscriber can slow the publisher or the others.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

from termjobs.model import RunEvent

DEFAULT_BUFFER = 4096


class CloseReason(enum.Enum):
    """Why a subscription's channel ended."""

    LAGGED = "lagged"
    SHUTDOWN = "shutdown"


@dataclass(eq=False)
class Subscription:
    """One subscriber's view: iterate ``receive`` until it ends, then read ``closed``."""

    receive: trio.MemoryReceiveChannel[RunEvent]
    _send: trio.MemorySendChannel[RunEvent]
    job_id: str | None = None
    run_id: str | None = None
    closed: CloseReason | None = field(default=None)

    def wants(self, event: RunEvent) -> bool:
        return (self.job_id is None or event.job_id == self.job_id) and (
            self.run_id is None or event.run_id == self.run_id
        )


class Hub:
    """Publishes run events to subscribers (see the module docstring)."""

    def __init__(self, *, buffer: int = DEFAULT_BUFFER, on_lagged: Callable[[], None] | None = None) -> None:
        self._buffer = buffer
        self._on_lagged = on_lagged
        self._subs: set[Subscription] = set()
        self._closed = False
        self.published = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def publish(self, events: Sequence[RunEvent]) -> None:
        """Deliver ``events`` to every interested subscriber without blocking."""
        self.published += len(events)
        for sub in list(self._subs):
            for event in events:
                if not sub.wants(event):
                    continue
                try:
                    sub._send.send_nowait(event)
                except trio.WouldBlock:
                    self._drop(sub, CloseReason.LAGGED)
                    if self._on_lagged is not None:
                        self._on_lagged()
                    break
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._subs.discard(sub)
                    break

    @contextmanager
    def subscribe(
        self, *, job_id: str | None = None, run_id: str | None = None, buffer: int | None = None
    ) -> Iterator[Subscription]:
        """Register a subscriber for the duration of the ``with`` block."""
        send, receive = trio.open_memory_channel[RunEvent](buffer or self._buffer)
        sub = Subscription(receive=receive, _send=send, job_id=job_id, run_id=run_id)
        if self._closed:
            sub.closed = CloseReason.SHUTDOWN
            send.close()
        else:
            self._subs.add(sub)
        try:
            yield sub
        finally:
            self._subs.discard(sub)
            send.close()
            receive.close()

    def close_all(self) -> None:
        """End every subscription (server shutdown) and refuse new ones."""
        self._closed = True
        for sub in list(self._subs):
            self._drop(sub, CloseReason.SHUTDOWN)

    def _drop(self, sub: Subscription, reason: CloseReason) -> None:
        sub.closed = reason
        sub._send.close()
        self._subs.discard(sub)
