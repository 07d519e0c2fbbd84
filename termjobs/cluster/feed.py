"""Every server's run events, on this server's hub, in id order.

In a cluster a run's events are written by the server that owns its job, but a live
stream may be open on any server. Each commit that inserted events NOTIFYs the event
channel; every server then reads the rows after the last id it published. Event ids
are handed out under a cluster-wide lock held until commit
(``storage.sql.cluster.order_events``), so commit order is id order and "after the last
id published" never skips an event that commits later.

This server's own commits arrive directly (no read needed) unless another server's
events came between, which are read first. One task publishes, so subscribers see ids
in increasing order whatever the path; an event seen by both paths is published once.
A poll every ``POLL_S`` covers notifications lost while the listening connection was
down.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Sequence

import trio

from termjobs.model import RunEvent
from termjobs.storage import Storage, StorageError

logger = logging.getLogger(__name__)

POLL_S = 1.0
READ_LIMIT = 1000
RETRY_S = 1.0

Publish = Callable[[Sequence[RunEvent]], None]


class EventFeed:
    """Publishes run events to ``publish`` in id order (see the module docstring)."""

    def __init__(self, storage: Storage, publish: Publish, *, poll_s: float = POLL_S) -> None:
        self._storage = storage
        self._publish = publish
        self._poll_s = poll_s
        self._local: deque[Sequence[RunEvent]] = deque()
        self._wake = trio.Event()
        self._remote_hint = 0
        self.published_up_to = 0

    def committed(self, events: Sequence[RunEvent]) -> None:
        """This server committed ``events`` (ascending ids): publish them in turn."""
        if events:
            self._local.append(events)
            self._wake.set()

    def announced(self, payload: str) -> None:
        """A commit somewhere announced its newest event id."""
        try:
            newest = int(payload)
        except ValueError:
            return
        if newest > self._remote_hint:
            self._remote_hint = newest
            self._wake.set()

    def resync(self) -> None:
        """Notifications may have been lost: read what is new."""
        self._remote_hint = max(self._remote_hint, self.published_up_to + 1)
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish until cancelled, from the newest event stored at start."""
        self.published_up_to = await self._storage.max_event_id()
        task_status.started()
        while True:
            with trio.move_on_after(self._poll_s) as poll:
                await self._wake.wait()
            self._wake = trio.Event()
            if poll.cancelled_caught:
                self._remote_hint = max(self._remote_hint, self.published_up_to + 1)
            try:
                await self._catch_up()
            except StorageError as exc:
                logger.warning("live events from other servers delayed: %s", exc)
                await trio.sleep(RETRY_S)
                self._wake.set()

    async def _catch_up(self) -> None:
        while self._local:
            batch = self._local[0]
            if batch[-1].id <= self.published_up_to:
                self._local.popleft()  # read from the database already
                continue
            if batch[0].id > self.published_up_to + 1:
                await self._read(until=batch[0].id)  # others' events committed before ours
            self._local.popleft()
            self._emit([event for event in batch if event.id > self.published_up_to])
        if self._remote_hint > self.published_up_to:
            hint = self._remote_hint
            await self._read(until=None)
            if self._remote_hint == hint:  # no newer announcement came meanwhile
                self._remote_hint = 0

    async def _read(self, *, until: int | None) -> bool:
        """Publish the stored events after the last published one (below ``until``);
        whether there were any."""
        found = False
        while True:
            events = await self._storage.events_after(self.published_up_to, limit=READ_LIMIT)
            if until is not None:
                events = [event for event in events if event.id < until]
            if not events:
                return found
            found = True
            self._emit(events)
            if len(events) < READ_LIMIT:
                return found

    def _emit(self, events: Sequence[RunEvent]) -> None:
        if events:
            self.published_up_to = events[-1].id
            self._publish(events)
