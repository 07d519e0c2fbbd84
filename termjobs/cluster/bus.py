"""PostgreSQL LISTEN/NOTIFY as trio messages.

One connection per server listens, in a worker thread (psycopg's ``notifies()``
blocks), and hands each notification to the trio side: ``handlers[channel](payload)``
runs on the trio thread. Notifications are a wake-up, never the data: whatever they
announce is stored in a table and read from there, so one that is lost (the connection
dropped) only delays things. After every (re)connection ``on_connect`` runs, for the
listeners to catch up on what they may have missed.

Channel names carry a tag of the schema (``storage.sql.cluster.channel_tag``).

"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

import psycopg
import trio
from sqlalchemy.engine import URL

logger = logging.getLogger(__name__)

#: How long one wait for notifications lasts: how soon the thread sees a stop.
POLL_S = 0.5
RECONNECT_MIN_S = 0.5
RECONNECT_MAX_S = 10.0
CONNECT_TIMEOUT_S = 10

Handler = Callable[[str], None]


def conninfo(url: URL) -> str:
    """The libpq connection string of a SQLAlchemy URL (``postgresql+psycopg://``)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class Bus:
    """Delivers the notifications of ``handlers``' channels (see the module docstring)."""

    def __init__(self, url: URL, handlers: Mapping[str, Handler], on_connect: Callable[[], None]) -> None:
        self._conninfo = conninfo(url)
        self._handlers = dict(handlers)
        self._on_connect = on_connect
        self._stopping = threading.Event()
        self.connected = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; ``started`` once the first connection listens."""
        token = trio.lowlevel.current_trio_token()
        ready = trio.Event()

        def deliver(channel: str, payload: str) -> None:
            handler = self._handlers.get(channel)
            if handler is not None:
                handler(payload)

        def connected() -> None:
            self.connected = True
            ready.set()
            self._on_connect()

        def lost() -> None:
            self.connected = False

        def listen() -> None:
            delay = RECONNECT_MIN_S
            while not self._stopping.is_set():
                try:
                    with psycopg.connect(
                        self._conninfo,
                        autocommit=True,
                        connect_timeout=CONNECT_TIMEOUT_S,
                        keepalives=1,
                        keepalives_idle=10,
                        keepalives_interval=5,
                        keepalives_count=3,
                    ) as conn:
                        for channel in self._handlers:
                            conn.execute(f'LISTEN "{channel}"')
                        trio.from_thread.run_sync(connected, trio_token=token)
                        delay = RECONNECT_MIN_S
                        while not self._stopping.is_set():
                            for note in conn.notifies(timeout=POLL_S):
                                trio.from_thread.run_sync(
                                    deliver, note.channel, note.payload, trio_token=token
                                )
                except psycopg.Error as exc:
                    trio.from_thread.run_sync(lost, trio_token=token)
                    logger.warning("cluster notifications lost (%s); reconnecting in %gs", exc, delay)
                    self._stopping.wait(delay)
                    delay = min(RECONNECT_MAX_S, delay * 2)
                except trio.RunFinishedError:
                    return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._in_thread, listen)
            await ready.wait()
            task_status.started()

    async def _in_thread(self, listen: Callable[[], None]) -> None:
        try:
            await trio.to_thread.run_sync(listen, abandon_on_cancel=True)
        finally:
            self._stopping.set()  # the abandoned thread ends within POLL_S
