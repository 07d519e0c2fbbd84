"""Async access to the synchronous store.

* **Writes** go through one writer. It takes every request waiting in its queue, runs
  them in a single transaction, commits once, answers each request and takes the next
  batch: *group commit*. On PostgreSQL the writer is a thread: it takes the next batch
  as soon as one is committed and hands the outcomes to the event loop, at the pace of
  the database rather than of a busy event loop. On SQLite the writer is a task on the
  event loop, like SQLite's reads: a batch of up to :data:`LOOP_WRITE_MAX` writes is
  committed there when the database is free and SQLite steps through it within
  :data:`LOOP_WRITE_STEPS`; a bigger batch, one still stepping past that (interrupted
  and rolled back), one that finds the database locked by another process or one with
  a failing request is committed in a worker thread instead. (A thread writing SQLite
  gives the GIL back at every statement and waits for it behind the busy event loop,
  which cost more than the writes themselves; the Python around the statements holds
  the GIL, and so the loop, in a thread as well.) SQLite's WAL checkpoints, which sync
  the disk, then run in a worker thread every :data:`CHECKPOINT_WRITES` writes (or
  :data:`CHECKPOINT_WAL_GROWTH` bytes of WAL) instead of inside a commit, and the commit
  after a complete one (which syncs the WAL's header as it starts the file again) is
  made in the thread too. Writes of a kind that is cheaper done many at once (a
  :class:`Bulk`, such as the fires of many jobs due together) are gathered into one
  request while they wait, and run as one call (``executemany`` instead of statements
  each). If one request fails, the batch
  is rolled back and every request runs again in a transaction of its own, so a
  failing request never undoes the others. Transient errors (a lock, a lost
  connection) are retried with backoff. The single writer also means SQLite never
  sees two writers. The queue holds :data:`QUEUE_SIZE` requests (queued or being
  committed); a writer waits for room.
* **Reads** run on a small pool of reader connections (see :meth:`Gateway.read`). A
  read in a worker thread that takes longer than ``read_timeout`` (a stalled
  database) is abandoned and raises :class:`StorageUnavailable`; the thread keeps its
  reader slot until the database answers, so stalled reads cannot pile up.
* **Write timeouts** belong to the callers: a write is never abandoned by the writer
  (its outcome must be known), and whoever waits on behalf of a client bounds that
  wait (the supervisor's request timeout), knowing the write may still complete.
* Threads, not SQLAlchemy's async engine (which does not support trio). In ``inline``
  mode (tests under a virtual clock) everything runs on the trio thread (the writer is
  a task that never hands a batch to a thread), so trio's ``MockClock`` never jumps
  while a query is in flight.
* After a commit, the run events it inserted are handed to ``on_commit`` (the event
  hub) in id order; subscribers never see an event that could still roll back. On
  PostgreSQL the events a transaction records are held and inserted together as it
  ends, with its fence and the announcement of its newest event, in one round trip
  (``sql.HeldEvents``, ``sql.seal``).
* Driver errors leave as storage errors: :class:`StorageUnavailable` when the database
  could not be reached or stayed locked (worth retrying), :class:`StorageRefused` when
  it refused the request for good. Other errors (raised by the operation) pass as is.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, Literal, TypeVar, cast

import outcome
import sqlalchemy as sa
import trio
from sqlalchemy.engine import URL
from sqlalchemy.pool import PoolProxiedConnection

from termjobs.model import RunEvent
from termjobs.storage import migrate
from termjobs.storage.base import StorageClosed, StorageRefused, StorageUnavailable
from termjobs.storage.engine import SQLITE_BUSY_TIMEOUT_S, Engines, create_engines
from termjobs.storage.sql import EventOrder, Fences, HeldEvents, WriteTx, driver_errors
from termjobs.storage.sql.seal import seal

logger = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")
ReadOp = Callable[[sa.Connection], T]
#: a read on the driver's own (DB-API) connection
DriverReadOp = Callable[[Any], T]
WriteOp = Callable[[WriteTx], T]
OnCommit = Callable[[Sequence[RunEvent]], None]
#: Told the size and duration (seconds) of every committed batch.
OnBatch = Callable[[int, float], None]

#: Requests committed in one transaction at most. Gathered requests are not cut
#: smaller: while 100,000 actors fire, every turn of the writer costs a pass of the
#: scheduler, so the more each commit takes the better (a failing lot is bisected).
MAX_BATCH = 500
#: Items of one :class:`Bulk` gathered into one request at most.
MAX_BULK_ITEMS = 1000
QUEUE_SIZE = 10_000
#: A read that takes longer than this is abandoned (see the module docstring).
READ_TIMEOUT_S = 10.0
#: How long a heavy read may hold the event loop on SQLite before it is moved to a
#: reader thread (see :meth:`Gateway.read`), and how many SQLite VM steps pass between
#: two looks at the clock.
INLINE_READ_BUDGET_S = 0.002
_PROGRESS_STEPS = 2_000
_TRANSIENT_RETRIES = 5
#: On SQLite, a batch of at most this many writes may be committed on the event loop
#: (a write costs ~300 steps and ~0.2 ms of Python, which holds the GIL in a thread too,
#: where it gives the loop a turn every 5 ms: a batch holds the loop 20 ms at most)...
LOOP_WRITE_MAX = 100
#: ...if SQLite steps through its statements within this many virtual-machine steps
#: (else it is rolled back and committed again in a worker thread).
LOOP_WRITE_STEPS = 250_000  # about 5 ms of SQLite's own work
#: Writes between two WAL checkpoints when the writer runs on the event loop (SQLite's
#: own automatic checkpoint, every 1,000 pages, would sync the disk inside a commit)...
CHECKPOINT_WRITES = 1000
#: ...or sooner, once the WAL file has grown this much since the last one (a few big
#: writes: the WAL would otherwise take the disk, and a full disk keeps it there).
CHECKPOINT_WAL_GROWTH = 4 << 20


@dataclass(frozen=True, eq=False)
class Bulk(Generic[Item, T]):
    """A kind of write that is cheaper done for many items at once.

    ``many(tx, items)`` must do exactly what ``one(tx, item)`` does for each item, in
    order, and return their results in order. Items written while an earlier one of the
    same ``Bulk`` (compared by identity) still waits in the queue join its request, and
    the writer runs them through ``many``; when a failing batch is run again request by
    request, their request is halved while it fails, and an item left alone runs
    through ``one`` (see ``Gateway._commit_items``)."""

    one: Callable[[WriteTx, Item], T]
    many: Callable[[WriteTx, Sequence[Item]], list[T]]


@dataclass(eq=False)
class _Request(Generic[T]):
    op: WriteOp[T]
    detached: bool = False
    #: a request of gathered items (``op`` runs them through ``bulk.many``)
    bulk: Bulk[Any, Any] | None = None
    items: list[Any] = field(default_factory=list)
    #: each item's own outcome, when they ran one by one
    item_results: list[outcome.Outcome[Any]] | None = None
    done: trio.Event = field(default_factory=trio.Event)
    result: outcome.Outcome[T] | None = None
    events: list[RunEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class GatewayStats:
    """Counters for diagnostics and benchmarks."""

    batches: int
    writes: int
    max_batch: int
    #: heavy SQLite reads that outgrew the event loop's budget and ran in a thread
    reads_moved: int = 0
    #: SQLite batches committed in a worker thread instead of on the event loop (too
    #: big, over the budget, the database locked, a request failed, or the first commit
    #: after a complete checkpoint)
    writes_moved: int = 0
    #: WAL checkpoints run by the gateway (SQLite, writer on the event loop)
    checkpoints: int = 0


class Gateway:
    """The async face of the store. Create it with :func:`open_gateway`."""

    def __init__(
        self,
        engines: Engines,
        *,
        inline: bool,
        on_commit: OnCommit | None,
        on_batch: OnBatch | None = None,
        read_timeout: float = READ_TIMEOUT_S,
        loop_writes: bool = True,
    ) -> None:
        self.engines = engines
        self._inline = inline
        #: SQLite's writer is a task on the event loop (see the module docstring);
        #: ``loop_writes=False`` keeps the writer thread PostgreSQL uses
        self._loop_writes = loop_writes and engines.is_sqlite and not inline
        #: the writer's DB-API connection once set up for commits on the event loop
        self._loop_driver: Any = None
        #: the write count at the last checkpoint; whether the next commit starts the WAL again
        self._writes_checkpointed = 0
        self._wal_restarts = False
        #: the WAL file, and its size after the last checkpoint
        self._wal_path = f"{engines.url.database}-wal" if engines.is_sqlite else ""
        self._wal_checkpointed_size = 0
        #: the writer's worker threads (one at a time), apart from everyone else's
        self._writer_thread = trio.CapacityLimiter(1)
        self._read_timeout = read_timeout
        self._on_commit = on_commit
        self._on_batch = on_batch
        #: the writer's queue (``None`` marks its end); the event loop puts requests in,
        #: the writer (a thread on PostgreSQL) takes them out (see :meth:`_writer`)
        self._queue: queue.SimpleQueue[_Request[Any] | None] = queue.SimpleQueue()
        #: places in the queue: a request holds one until it is answered
        self._places = trio.Semaphore(QUEUE_SIZE)
        #: per :class:`Bulk`, its request still in the queue, which new items join;
        #: guarded by ``_lock``, as a writer thread seals the requests it takes
        self._open: dict[Bulk[Any, Any], _Request[Any]] = {}
        self._lock = threading.Lock()
        #: set when a request is queued (the writer task of ``inline`` mode waits on it)
        self._wakeup = trio.Event()
        self._closing = False
        #: the writer was cancelled: it stops after the commit under way
        self._stop_now = False
        #: the batch the writer thread is committing (not yet handed to the event loop)
        self._in_flight: list[_Request[Any]] = []
        self._read_limiter = trio.CapacityLimiter(engines.readers)
        self._batches = self._writes = self._max_batch = 0
        self._reads_moved = self._writes_moved = self._checkpoints = 0
        self._point: PoolProxiedConnection | None = None
        #: how many connections :meth:`read_point` has opened (the current one's number)
        self.point_connections = 0
        #: in a cluster, the channel that announces committed event ids (and run events
        #: are then inserted in commit order; see ``storage.sql.EventOrder``)
        self.events_channel: str | None = None

    def statistics(self) -> GatewayStats:
        return GatewayStats(
            batches=self._batches,
            writes=self._writes,
            max_batch=self._max_batch,
            reads_moved=self._reads_moved,
            writes_moved=self._writes_moved,
            checkpoints=self._checkpoints,
        )

    async def _in_thread(self, fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter) -> T:
        if self._inline:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args, limiter=limiter)

    # -------------------------------------------------------------------- reads

    async def read(self, op: ReadOp[T], *, heavy: bool = False) -> T:
        """Run ``op`` on a reader connection inside one (read) transaction.

        On SQLite, reads run on the event-loop thread: a WAL read never waits for the
        writer, and an in-process query costs less than the hop to a worker thread
        (Python cannot run the two at once anyway; a reader thread gives the GIL back
        at every row it steps through, and waits for it again behind the busy event
        loop). ``heavy`` reads (listings with counts, retention scans, replay pages)
        may take long enough to delay timers: on SQLite they start on the event loop
        too, but are interrupted once they have taken :data:`INLINE_READ_BUDGET_S`
        and run again in a reader thread, where every PostgreSQL read runs.
        """
        with _translated_errors():
            if self.engines.is_sqlite and not self._inline:
                await trio.lowlevel.checkpoint()
                if not heavy:
                    return self._read(op)
                done, result = self._read_within_budget(op)
                if done:
                    return cast(T, result)
                self._reads_moved += 1
            if self._inline:
                return await self._in_thread(self._read, op, limiter=self._read_limiter)
            with trio.move_on_after(self._read_timeout):
                return await trio.to_thread.run_sync(
                    self._read, op, limiter=self._read_limiter, abandon_on_cancel=True
                )
            logger.warning("a read did not complete within %gs; abandoned", self._read_timeout)
            raise StorageUnavailable(f"the database did not answer within {self._read_timeout:g}s; try again")

    def _read(self, op: ReadOp[T]) -> T:
        with self.engines.reader.connect() as conn, conn.begin():
            return op(conn)

    def _read_within_budget(self, op: ReadOp[T]) -> tuple[bool, Any]:
        """``(True, op's result)``, or ``(False, None)`` if SQLite was still stepping
        once :data:`INLINE_READ_BUDGET_S` had passed (the statement is interrupted
        through a progress handler, and the transaction rolled back)."""
        deadline = time.perf_counter() + INLINE_READ_BUDGET_S
        over = False

        def check() -> int:
            nonlocal over
            over = time.perf_counter() > deadline
            return int(over)  # non-zero interrupts the statement

        with self.engines.reader.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.set_progress_handler(check, _PROGRESS_STEPS)
            try:
                with conn.begin():
                    return True, op(conn)
            except sa.exc.OperationalError:
                if over:
                    return False, None
                raise
            finally:
                driver.set_progress_handler(None, 0)

    async def read_point(self, op: DriverReadOp[T] | None, fallback: ReadOp[T]) -> T:
        """A point read (one row or two): on SQLite, ``op`` with a DB-API connection
        the event loop keeps for these reads (see ``storage.sql.points``); elsewhere
        (or without ``op``) ``fallback``, as :meth:`read` runs it."""
        if op is None or not self.engines.is_sqlite:
            return await self.read(fallback)
        await trio.lowlevel.checkpoint()
        with _translated_errors():
            if self._point is None:
                self._point = self.engines.reader.raw_connection()
                self.point_connections += 1
            try:
                with driver_errors(self.engines.reader.dialect):
                    return op(self._point.driver_connection)
            except sa.exc.DBAPIError as exc:
                point, self._point = self._point, None
                point.invalidate(exc.orig)  # discarded: the next read opens a new connection
                raise

    def close_point_connection(self) -> None:
        """Give the connection of :meth:`read_point` back to the pool."""
        point, self._point = self._point, None
        if point is not None:
            point.close()

    # ------------------------------------------------------------------- writes

    async def write(self, op: WriteOp[T]) -> T:
        """Run ``op`` in the next group-committed transaction; its result once committed.

        If the caller is cancelled while waiting, the write may still commit.
        """
        request = _Request(op)
        await self._room()
        self._put(request)
        await request.done.wait()
        assert request.result is not None
        with _translated_errors():
            return request.result.unwrap()

    async def write_bulk(self, bulk: Bulk[Item, T], item: Item) -> T:
        """:meth:`write` of ``bulk.one(tx, item)``, gathered with the other items of
        ``bulk`` written meanwhile (see :class:`Bulk`): thousands of them cost one
        request in the queue and one ``many`` call."""
        with self._lock:  # a writer thread seals requests under it (see _take)
            request = self._open.get(bulk)
            if request is not None and len(request.items) < MAX_BULK_ITEMS:
                index = len(request.items)
                request.items.append(item)
            else:
                request = None
        if request is None:
            index, items = 0, [item]
            request = _Request(partial(_many_of, bulk, items), bulk=bulk, items=items)
            await self._room()
            self._put(request)  # queued: others join it until the writer takes it
        await request.done.wait()
        found = request.item_results[index] if request.item_results is not None else request.result
        with _translated_errors():
            if isinstance(found, outcome.Error):
                raise found.error  # this item's error, or the whole request's
            assert isinstance(found, outcome.Value)
            return found.value if request.item_results is not None else found.value[index]  # type: ignore[no-any-return]

    async def submit(self, op: WriteOp[object]) -> None:
        """Queue ``op`` for the next group commit without waiting for it (for writes
        whose result nobody needs, such as live output events). It is committed in
        order with every other write; a failure is logged. Waits only while the queue
        is full, which slows a producer down instead of letting memory grow."""
        request: _Request[object] = _Request(op, detached=True)
        await self._room()
        self._put(request)

    async def _room(self) -> None:
        """Wait for a place in the queue (:data:`QUEUE_SIZE` requests queued or being
        committed at most); :class:`StorageClosed` once the gateway is closing."""
        try:
            self._places.acquire_nowait()
        except trio.WouldBlock:
            await self._places.acquire()
        if self._closing:
            self._places.release()
            raise StorageClosed()

    def _put(self, request: _Request[Any]) -> None:
        """Queue a request that has its place (no checkpoint since :meth:`_room`)."""
        if request.bulk is not None:
            with self._lock:
                self._open[request.bulk] = request
                self._queue.put(request)
        else:
            self._queue.put(request)
        self._wakeup.set()

    def _close(self) -> None:
        """Take no more writes; the writer stops once it has committed those queued."""
        self._closing = True
        self._queue.put(None)
        self._wakeup.set()

    def _take(self, *, block: bool) -> list[_Request[Any]] | None:
        """The next batch (up to :data:`MAX_BATCH` requests, sealed: items written from
        now on start new requests); ``[]`` if none waits and not ``block``; ``None``
        once the gateway is closed and every request before that was taken."""
        batch: list[_Request[Any]] = []
        try:
            first = self._queue.get(block=block)
        except queue.Empty:
            return batch
        if first is None:
            return None
        batch.append(first)
        while len(batch) < MAX_BATCH:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is None:
                self._queue.put(None)  # the end comes after this batch
                break
            batch.append(request)
        with self._lock:
            for request in batch:
                if request.bulk is not None and self._open.get(request.bulk) is request:
                    del self._open[request.bulk]
        return batch

    def _left(self) -> list[_Request[Any]]:
        """Every request still queued (the writer stopped without committing them)."""
        left: list[_Request[Any]] = []
        with self._lock:
            self._open.clear()
            while True:
                try:
                    request = self._queue.get_nowait()
                except queue.Empty:
                    return left
                if request is not None:
                    left.append(request)

    async def _writer(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit what is queued until the gateway closes. Cancelled, it stops after the
        commit under way (its outcome must be known) and fails what is left with
        :class:`StorageClosed`, so that nobody waits forever."""
        if self._inline or self._loop_writes:
            await self._write_on_the_loop(task_status)
            return
        token = trio.lowlevel.current_trio_token()
        ended = trio.Event()
        crashed: list[BaseException] = []

        def run() -> None:
            try:
                self._write_in_thread(token)
            except BaseException as exc:  # a bug: nobody may wait forever
                crashed.append(exc)
                token.run_sync_soon(self._fail, self._in_flight + self._left(), StorageClosed())
            finally:
                token.run_sync_soon(ended.set)  # after every answer it posted (in order)

        threading.Thread(target=run, name="termjobs-writer", daemon=True).start()
        task_status.started()
        try:
            await ended.wait()
        finally:
            if not ended.is_set():  # cancelled
                self._closing = self._stop_now = True
                self._queue.put(None)  # wakes the thread if it waits for work
                with trio.CancelScope(shield=True):
                    await ended.wait()
        if crashed:
            raise crashed[0]

    def _write_in_thread(self, token: trio.lowlevel.TrioToken) -> None:
        """The writer thread: it takes the next batch as soon as one is committed,
        whatever the event loop is doing; the loop is told each outcome (and wakes
        whoever waits for it) in its own time, in commit order."""
        while True:
            batch = self._take(block=True)
            if batch is None or self._stop_now:
                left = (batch or []) + self._left()
                if left:
                    token.run_sync_soon(self._fail, left, StorageClosed())
                return
            self._in_flight, started = batch, time.perf_counter()
            self._commit_blocking(batch)
            token.run_sync_soon(self._answer, batch, time.perf_counter() - started)
            self._in_flight = []

    def _commit_blocking(self, batch: list[_Request[Any]], each: bool = False) -> None:
        """Commit ``batch`` with retries, waiting out each delay (in a thread); with
        ``each``, its requests in transactions of their own from the start."""
        for delay in self._attempts(batch, each):
            time.sleep(delay)  # noqa: TID251 (a thread, not the event loop)

    async def _write_on_the_loop(self, task_status: trio.TaskStatus[None]) -> None:
        """The writer as a task on the event loop: SQLite's (batches it cannot commit
        there go to a worker thread), and every writer in ``inline`` mode."""
        task_status.started()
        batch: list[_Request[Any]] = []
        try:
            while True:
                await trio.lowlevel.checkpoint()  # let the writes of this turn queue up
                taken = self._take(block=False)
                if taken is None:
                    return
                batch = taken
                if not batch:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    continue
                started = time.perf_counter()
                if not self._loop_writes:
                    for delay in self._attempts(batch):
                        await trio.sleep(delay)
                elif (tried := self._commit_on_loop(batch)) != "committed":
                    self._writes_moved += 1
                    # in a thread, never abandoned; after a request's failure, each alone
                    await trio.to_thread.run_sync(
                        self._commit_blocking, batch, tried == "failed", limiter=self._writer_thread
                    )
                self._answer(batch, time.perf_counter() - started)
                if self._loop_writes:
                    await self._checkpoint_if_due()
        finally:
            self._closing = True
            left = [request for request in batch if not request.done.is_set()]
            self._fail(left + self._left(), StorageClosed())

    def _commit_on_loop(self, batch: list[_Request[Any]]) -> Literal["committed", "moved", "failed"]:
        """Commit ``batch`` in one transaction on the event loop if it is small enough,
        SQLite takes its write lock at once and steps through its statements within
        :data:`LOOP_WRITE_STEPS`. Else the transaction is rolled back and the batch must
        be committed in a thread: ``"moved"`` (too big, locked, interrupted or another
        driver error, or the commit after a complete checkpoint, which syncs the disk;
        retried there as ever), or ``"failed"`` when a request raised (the thread runs
        each request on its own, as after any batch that failed). The Python around the
        statements is not counted: it holds the GIL, and so the event loop, in a thread
        too."""
        if self._wal_restarts or sum(_size(request) for request in batch) > LOOP_WRITE_MAX:
            return "moved"
        steps = 0

        def count() -> int:
            nonlocal steps
            steps += _PROGRESS_STEPS
            return int(steps > LOOP_WRITE_STEPS)  # non-zero interrupts the statement

        try:
            conn = self.engines.writer.connect()  # a new connection after a lost one
        except sa.exc.DBAPIError:
            return "moved"  # the thread retries it, as ever
        with conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            try:
                if driver is not self._loop_driver:
                    driver.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint
                    self._loop_driver = driver
                driver.execute("PRAGMA busy_timeout=0")  # locked: the thread waits instead
                driver.set_progress_handler(count, _PROGRESS_STEPS)
                with conn.begin():
                    shared = self._shared(conn)
                    for request in batch:
                        self._apply(shared, request)
                    self._before_commit(shared)
                return "committed"
            except (sa.exc.OperationalError, sqlite3.OperationalError):  # also through the driver
                return "moved"  # rolled back: the thread runs the batch again from the start
            except Exception:
                return "failed"
            finally:
                with suppress(Exception):  # a broken connection is the thread's to report
                    driver.set_progress_handler(None, 0)
                    driver.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")

    async def _checkpoint_if_due(self) -> None:
        """After a commit: a checkpoint in a thread once :data:`CHECKPOINT_WRITES` writes
        (counted by :meth:`_answer`) or :data:`CHECKPOINT_WAL_GROWTH` bytes of WAL have
        come since the last one."""
        self._wal_restarts = False  # whichever commit came after the checkpoint made it
        grown = _file_size(self._wal_path) - self._wal_checkpointed_size
        if self._writes - self._writes_checkpointed < CHECKPOINT_WRITES and grown < CHECKPOINT_WAL_GROWTH:
            return
        self._writes_checkpointed = self._writes
        ran, self._wal_restarts = await trio.to_thread.run_sync(self._checkpoint, limiter=self._writer_thread)
        self._checkpoints += ran
        self._wal_checkpointed_size = _file_size(self._wal_path)

    def _checkpoint(self) -> tuple[bool, bool]:
        """Copy the WAL's pages into the database file (in a thread: it syncs the disk):
        whether it ran, and whether it copied them all (the next commit then starts the
        WAL again, and syncs its header). PASSIVE: it never waits for readers, and what
        it could not copy waits for the next one."""
        try:
            with self.engines.writer.connect() as conn:
                driver = conn.connection.driver_connection
                assert driver is not None
                busy, pages, copied = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return True, busy == 0 and pages == copied
        except Exception as exc:
            logger.warning("WAL checkpoint failed (%s); the next one tries again", exc)
            return False, False

    def _attempts(self, batch: list[_Request[Any]], each: bool = False) -> Iterator[float]:
        """Commit ``batch``, retrying transient errors with backoff: yields each delay
        to wait before the next attempt. Outcomes are left in the requests. ``each``:
        see :meth:`_commit`."""
        delay = 0.05
        for attempt in range(1, _TRANSIENT_RETRIES + 1):
            try:
                self._commit(batch, each)
                return
            except sa.exc.OperationalError as exc:
                if attempt == _TRANSIENT_RETRIES:
                    if len(batch) == 1 and len(batch[0].items) <= 1:
                        self._settle(batch, exc)
                        return
                    # It may be one request's (or item's) own error: run each on its own, once.
                    self._commit_each(batch, False)
                    return
                logger.warning("write transaction failed (%s); retrying in %.2fs", exc, delay)
                yield delay
                delay *= 2
            except Exception as exc:
                self._settle(batch, exc)
                return

    def _commit(self, batch: list[_Request[Any]], each: bool = False) -> None:
        """Run the whole batch in one transaction. If any request fails, the batch is
        rolled back and each request runs again in a transaction of its own, so one
        failing request never undoes the others (failures are rare; savepoints around
        every request would cost two statements each on the hot path). ``each``: the
        whole batch already failed (on the event loop): each request at once."""
        together = len(batch) > 1 or len(batch[0].items) > 1
        if together and not each:
            try:
                with self.engines.writer.begin() as conn:
                    shared = self._shared(conn)
                    for request in batch:
                        self._apply(shared, request)
                    self._before_commit(shared)
                return
            except sa.exc.OperationalError:
                raise  # transient (locked, connection lost): the caller retries the batch
            except Exception:
                pass
        self._commit_each(batch, not together)

    def _commit_each(self, batch: list[_Request[Any]], raise_transient: bool) -> None:
        """Run each request in a transaction of its own; errors are its result (a
        transient one is raised instead with ``raise_transient``, for a retry)."""
        for request in batch:
            if len(request.items) > 1:
                self._commit_items(request)
                continue
            try:
                with self.engines.writer.begin() as conn:
                    shared = self._shared(conn)
                    self._apply(shared, request)
                    self._before_commit(shared)
            except Exception as exc:
                if raise_transient and isinstance(exc, sa.exc.OperationalError):
                    raise
                request.result, request.events = outcome.Error(exc), []

    def _commit_items(self, request: _Request[Any]) -> None:
        """Commit the items of a gathered request that failed as a whole: halves in
        transactions of their own, halved again while they fail, so a failing item
        ends alone (through ``one``, its error its own) after at most ``2 log2 n``
        transactions, and the others are committed."""
        bulk = request.bulk
        assert bulk is not None
        request.result, request.events, request.item_results = outcome.Value(None), [], []
        results: list[outcome.Outcome[Any]] = [outcome.Value(None)] * len(request.items)
        middle = len(request.items) // 2
        pending = [(middle, len(request.items)), (0, middle)]  # the whole lot just failed
        while pending:
            start, end = pending.pop()
            items = request.items[start:end]
            try:
                with self.engines.writer.begin() as conn:
                    tx = self._shared(conn)
                    found = [bulk.one(tx, items[0])] if len(items) == 1 else _many_of(bulk, items, tx)
                    self._before_commit(tx)
            except Exception as exc:
                if len(items) == 1:
                    results[start] = outcome.Error(exc)
                else:
                    middle = (start + end) // 2
                    pending += [(middle, end), (start, middle)]  # the first half first
                continue
            results[start:end] = [outcome.Value(value) for value in found]
            request.events.extend(tx.events)
        request.item_results = results

    def _shared(self, conn: sa.Connection) -> WriteTx:
        """A new transaction's state, shared by its requests: the cluster's event order,
        the jobs to fence, the run events held until it commits (PostgreSQL, where each
        statement is a round trip to the server; SQLite is in the process)."""
        return WriteTx(
            conn,
            order=EventOrder() if self.events_channel is not None else None,
            fences=Fences(),
            held=None if self.engines.is_sqlite else HeldEvents(),
        )

    def _before_commit(self, tx: WriteTx) -> None:
        """Insert the events still held; in a cluster, check that this server still
        owns the jobs written to (else :class:`NotOwner` rolls the transaction back),
        then tell every server (at commit) the newest event id written. On PostgreSQL
        in one round trip (``sql.seal``); SQLite holds no events and has no cluster."""
        if not self.engines.is_sqlite:
            seal(tx, self.events_channel)

    @staticmethod
    def _apply(shared: WriteTx, request: _Request[Any]) -> None:
        tx = WriteTx(shared.conn, order=shared.order, fences=shared.fences, held=shared.held)
        request.result = outcome.Value(request.op(tx))
        request.events = tx.events

    @staticmethod
    def _settle(batch: list[_Request[Any]], exc: Exception) -> None:
        for request in batch:
            request.result = outcome.Error(exc)
            request.events = []

    def _fail(self, batch: list[_Request[Any]], exc: Exception) -> None:
        """Answer every request of ``batch`` with ``exc`` (on the event loop)."""
        self._settle(batch, exc)
        for request in batch:
            request.done.set()
            self._places.release()
        self._log_detached_failures(batch)

    @staticmethod
    def _log_detached_failures(batch: list[_Request[Any]]) -> None:
        failed = [r for r in batch if r.detached and isinstance(r.result, outcome.Error)]
        if failed:
            assert isinstance(failed[0].result, outcome.Error)
            logger.error("%d queued write(s) failed: %s", len(failed), failed[0].result.error)

    def _answer(self, batch: list[_Request[Any]], seconds: float) -> None:
        """Publish a committed batch's events, then answer its requests (on the event
        loop, in commit order)."""
        size = sum(_size(request) for request in batch)
        self._batches += 1
        self._writes += size
        self._max_batch = max(self._max_batch, size)
        if self._on_batch is not None:
            self._on_batch(size, seconds)
        if self._on_commit is not None:
            events = [event for request in batch for event in request.events]
            if events:
                self._on_commit(events)
        for request in batch:
            request.done.set()
            self._places.release()
        self._log_detached_failures(batch)


def _file_size(path: str) -> int:
    """``path``'s size in bytes, 0 if it is not there."""
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _size(request: _Request[Any]) -> int:
    """The writes a request stands for (its items, if it gathered some)."""
    return max(1, len(request.items))


def _many_of(bulk: Bulk[Item, T], items: list[Item], tx: WriteTx) -> list[T]:
    results = bulk.many(tx, items)
    assert len(results) == len(items), "a Bulk's many() returns a result per item"
    return results


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Driver errors as storage errors (see the module docstring)."""
    try:
        yield
    except (sa.exc.OperationalError, sa.exc.TimeoutError) as exc:
        # TimeoutError: no pooled connection came free in time (the database is slow).
        logger.warning("storage unavailable: %s", exc)
        if _disk_full(exc):
            raise StorageUnavailable(
                "the database's disk is full; writes resume once space is freed"
            ) from exc
        raise StorageUnavailable() from exc
    except sa.exc.DBAPIError as exc:
        raise StorageRefused(f"the database refused the request: {exc.orig or exc}") from exc


def _disk_full(exc: BaseException) -> bool:
    """Whether the driver reported a full disk (SQLite, or PostgreSQL's SQLSTATE 53100)."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return (
        "disk is full" in text or "no space left" in text or getattr(exc.__cause__, "sqlstate", "") == "53100"
    )


@asynccontextmanager
async def open_gateway(
    url: URL,
    *,
    inline: bool = False,
    readers: int = 2,
    on_commit: OnCommit | None = None,
    on_batch: OnBatch | None = None,
    read_timeout: float = READ_TIMEOUT_S,
    loop_writes: bool = True,
) -> AsyncIterator[Gateway]:
    """Open the database at ``url``, apply migrations and run the writer.

    On exit, writes already queued are committed before the engines are closed.
    """
    engines = create_engines(url, readers=readers)
    try:
        gateway = Gateway(
            engines,
            inline=inline,
            on_commit=on_commit,
            on_batch=on_batch,
            read_timeout=read_timeout,
            loop_writes=loop_writes,
        )
        await gateway._in_thread(migrate.upgrade, engines.writer, limiter=trio.CapacityLimiter(1))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway._writer)
            try:
                yield gateway
            finally:
                # Ends the writer once it has drained its queue.
                gateway._close()
                gateway.close_point_connection()
    finally:
        engines.dispose()
