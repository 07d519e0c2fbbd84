"""The database gateway behind the facade: migrations, group commit, driver errors."""

from __future__ import annotations

import datetime as dt
import math
import shutil
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio
import trio.testing
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL

from termjobs.model import EventType, Run, RunEvent
from termjobs.storage import JobFilters, StorageClosed, StorageRefused, StorageUnavailable, migrate, tables
from termjobs.storage.database import open_storage
from termjobs.storage.engine import create_engines
from termjobs.storage.gateway import Bulk, Gateway, open_gateway
from termjobs.storage.rows import JOBS
from termjobs.storage.sql import WriteTx, events, runs
from tests.helpers import EPOCH, make_job, make_run
from tests.storage.conftest import Published


def test_the_head_revision_the_server_checks_at_start_is_alembics_head() -> None:
    assert migrate.head_revision() == migrate.HEAD_REVISION


async def test_migrations_create_the_schema_and_are_idempotent(db_url: URL) -> None:
    async with open_gateway(db_url):
        pass
    async with open_gateway(db_url) as gw:
        assert migrate.current_revision(gw.engines.writer) == migrate.head_revision()
        names = await gw.read(lambda conn: set(sa.inspect(conn).get_table_names()))
        assert {"jobs", "runs", "run_events", "alembic_version"} <= names


async def test_group_commit_isolates_a_failing_write_and_publishes_after_commit(db_url: URL) -> None:
    published = Published()
    async with open_storage(db_url, on_commit=published) as storage:
        job = make_job("batch")
        await storage.create_job(job)
        new_runs = [make_run(job) for _ in range(40)]
        results: dict[int, object] = {}

        async def write(i: int) -> None:
            def op(tx: WriteTx) -> Run:
                runs.insert(tx, new_runs[i])
                if i == 7:
                    raise RuntimeError("boom")  # after a partial write
                events.insert(tx, new_runs[i], EventType.QUEUED, "queued", None, now=EPOCH)
                return new_runs[i]

            try:
                results[i] = await storage.gateway.write(op)
            except RuntimeError as exc:
                results[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(write, i)
        assert isinstance(results[7], RuntimeError)
        stored = await storage.runs_page(limit=100, offset=0)
        assert stored.total == 39  # the failing write left nothing behind
        assert new_runs[7].id not in {r.id for r in stored.items}
        stats = storage.gateway.statistics()
        assert stats.writes == 41 and stats.batches < 41  # batched
        assert published.ids == sorted(published.ids) and len(published.ids) == 39


async def test_neighbouring_bulk_writes_run_together_and_a_failing_one_alone(db_url: URL) -> None:
    published = Published()
    async with open_storage(db_url, on_commit=published) as storage:
        job = make_job("bulk")
        await storage.create_job(job)
        new_runs = [make_run(job) for _ in range(40)]
        together: list[int] = []
        alone: list[int] = []

        def one(tx: WriteTx, i: int) -> str:
            return written(tx, i, alone)

        def written(tx: WriteTx, i: int, calls: list[int]) -> str:
            calls.append(i)
            runs.insert(tx, new_runs[i])
            if i == 7:
                raise RuntimeError("boom")
            events.insert(tx, new_runs[i], EventType.QUEUED, "queued", None, now=EPOCH)
            return new_runs[i].id

        def many(tx: WriteTx, items: Sequence[int]) -> list[str]:
            together.append(len(items))
            return [written(tx, i, []) for i in items]

        bulk = Bulk(one=one, many=many)
        results: dict[int, object] = {}

        async def write(i: int) -> None:
            try:
                written: str = await storage.gateway.write_bulk(bulk, i)
                results[i] = written
            except RuntimeError as exc:
                results[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(write, i)
        assert max(together) > 1  # items written meanwhile went through many() at once
        # The failing lot is halved until the failing item is alone: a few transactions,
        # not one per item.
        assert together[0] == 40  # the lot, in the batch's transaction
        transactions = len(together) - 1 + len(alone)  # once it failed
        assert 7 in alone and transactions <= 2 * math.ceil(math.log2(40))
        assert isinstance(results[7], RuntimeError)
        assert all(results[i] == new_runs[i].id for i in range(40) if i != 7)
        stored = await storage.runs_page(limit=100, offset=0)
        assert stored.total == 39 and new_runs[7].id not in {r.id for r in stored.items}
        # the events of a bulk call are published once committed, in id order
        assert published.ids == sorted(published.ids) and len(published.ids) == 39


async def test_writes_waiting_when_the_writer_is_cancelled_fail_instead_of_hanging(tmp_path: Path) -> None:
    engines = create_engines(sa.make_url(f"sqlite:///{tmp_path / 'cut.db'}"))
    try:
        migrate.upgrade(engines.writer)
        gateway = Gateway(engines, inline=False, on_commit=None, loop_writes=False)  # PostgreSQL's writer
        bulk: Bulk[int, int] = Bulk(one=lambda tx, i: i, many=lambda tx, items: list(items))
        committing, release = threading.Event(), threading.Event()
        outcomes: list[object] = []

        def slow(tx: WriteTx) -> str:
            committing.set()
            release.wait(5)
            return "committed"

        async def wait(write: Callable[[], Awaitable[object]]) -> None:
            try:
                outcomes.append(await write())
            except StorageClosed as exc:
                outcomes.append(exc)

        with trio.fail_after(10):  # a hang would fail here
            async with trio.open_nursery() as waiters, trio.open_nursery() as writer:
                await writer.start(gateway._writer)
                waiters.start_soon(wait, lambda: gateway.write(slow))
                await trio.to_thread.run_sync(committing.wait)
                waiters.start_soon(wait, lambda: gateway.write(lambda tx: "plain"))  # queued behind
                for i in range(3):  # one gathered request, queued too
                    waiters.start_soon(wait, partial(gateway.write_bulk, bulk, i))
                await trio.testing.wait_all_tasks_blocked()
                writer.cancel_scope.cancel()  # the writer dies once the commit under way ends
                await trio.testing.wait_all_tasks_blocked()  # it has seen the cancel
                release.set()
            assert len(outcomes) == 5 and outcomes.count("committed") == 1
            assert sum(isinstance(o, StorageClosed) for o in outcomes) == 4
            with pytest.raises(StorageClosed):  # and later writes are refused, not parked
                await gateway.write_bulk(bulk, 9)
    finally:
        engines.dispose()


async def test_the_writer_commits_the_next_batch_while_the_event_loop_is_held(tmp_path: Path) -> None:
    # The writer thread takes its next batch as soon as one is committed: a busy event
    # loop delays the answers, not the commits.
    first_running, release_first, second_ran = threading.Event(), threading.Event(), threading.Event()

    committed: list[str] = []

    def first(tx: WriteTx) -> str:
        first_running.set()
        release_first.wait(5)
        committed.append("first")
        return "first"

    def second(tx: WriteTx) -> str:
        committed.append("second")
        second_ran.set()
        return "second"

    answers: list[str] = []

    async def write(op: Callable[[WriteTx], str]) -> None:
        answers.append(await gateway.write(op))

    with trio.fail_after(20):
        async with (
            # the writer thread (PostgreSQL's), here on a SQLite file
            open_gateway(sa.make_url(f"sqlite:///{tmp_path / 'busy.db'}"), loop_writes=False) as gateway,
            trio.open_nursery() as nursery,
        ):
            nursery.start_soon(write, first)
            await trio.to_thread.run_sync(first_running.wait)
            nursery.start_soon(write, second)
            await trio.testing.wait_all_tasks_blocked()  # queued behind the first
            release_first.set()
            held_loop_saw_it = second_ran.wait(5)  # the loop is held: no checkpoint here
    assert held_loop_saw_it
    assert committed == ["first", "second"]
    # Both answered; the two waiting tasks wake in the same turn of the loop, in any order.
    assert sorted(answers) == ["first", "second"]


async def test_a_full_queue_makes_writers_wait_for_room_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("termjobs.storage.gateway.QUEUE_SIZE", 2)  # queued or being committed
    committing, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def op(name: str, tx: WriteTx) -> None:
        if name == "a":
            committing.set()
            release.wait(5)
        ran.append(name)

    submitted: list[str] = []

    async def submit(name: str) -> None:
        await gateway.submit(partial(op, name))
        submitted.append(name)

    with trio.fail_after(20):
        # The writer thread (PostgreSQL's; the queue is the same for SQLite's writer on
        # the event loop), as a commit held here must not hold the event loop.
        full = sa.make_url(f"sqlite:///{tmp_path / 'full.db'}")
        async with open_gateway(full, loop_writes=False) as gateway:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(submit, "a")
                await trio.to_thread.run_sync(committing.wait)
                for name in "bcd":
                    nursery.start_soon(submit, name)
                    await trio.testing.wait_all_tasks_blocked()
                assert submitted == ["a", "b"]  # "c" and "d" wait for room
                release.set()
            last = await gateway.write(lambda tx: list(ran))
    assert sorted(submitted) == ["a", "b", "c", "d"]
    # Nothing lost; "a" and "b" committed in the order they were queued. "c" and "d"
    # waited side by side and are queued as their tasks wake (in any order).
    assert last[:2] == ["a", "b"] and sorted(last[2:]) == ["c", "d"]


async def test_a_driver_error_on_the_event_fast_path_is_a_storage_error(db_url: URL) -> None:
    async with open_storage(db_url) as storage:
        orphan = make_run(make_job("never-stored"))  # its run does not exist
        with pytest.raises(StorageRefused) as refused:
            await storage.add_event(orphan, EventType.OUTPUT, None, None, now=EPOCH)
        assert isinstance(refused.value.__cause__, sa.exc.IntegrityError)
        assert await storage.max_event_id() == 0  # nothing half-written


async def test_an_event_refused_only_as_its_transaction_ends_fails_its_own_write_alone(db_url: URL) -> None:
    # On PostgreSQL recorded events are held and inserted as the transaction ends, so
    # an event of a run that does not exist is refused then, not when it was recorded:
    # still only its own write fails, and the others of its batch are committed.
    published = Published()
    async with open_storage(db_url, on_commit=published) as storage:
        job = make_job("held")
        await storage.create_job(job)
        stored = [await storage.create_run(make_run(job)) for _ in range(12)]
        orphan = make_run(make_job("never-stored"))
        published.batches.clear()
        results: dict[int, object] = {}

        async def write(i: int) -> None:
            run = orphan if i == 5 else stored[i]

            def op(tx: WriteTx) -> str:
                events.record(tx, run, EventType.OUTPUT, f"line {i}", None, now=EPOCH)
                return run.id

            try:
                results[i] = await storage.gateway.write(op)
            except StorageRefused as exc:
                results[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(write, i)
        assert isinstance(results[5], StorageRefused)
        assert {i: r for i, r in results.items() if i != 5} == {i: stored[i].id for i in range(12) if i != 5}
        lines = await storage.events_after(0, limit=100)
        assert sorted(e.message or "" for e in lines if e.event_type is EventType.OUTPUT) == sorted(
            f"line {i}" for i in range(12) if i != 5
        )
        assert published.ids == [e.id for e in lines if e.event_type is EventType.OUTPUT]


async def test_a_write_that_keeps_failing_transiently_does_not_take_its_batch_down(
    db_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_storage(db_url, inline=True) as storage:
        job = make_job("batch")
        await storage.create_job(job)
        new_runs = [make_run(job) for _ in range(10)]
        results: dict[int, object] = {}

        async def write(i: int) -> None:
            def op(tx: WriteTx) -> RunEvent:
                if i == 3:
                    raise sa.exc.OperationalError("INSERT", {}, Exception("string or blob too big"))
                runs.insert(tx, new_runs[i])
                return events.insert(tx, new_runs[i], EventType.QUEUED, None, None, now=EPOCH)

            try:
                results[i] = await storage.gateway.write(op)
            except StorageUnavailable as exc:
                results[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(write, i)
        stored = await storage.runs_page(limit=100, offset=0)
    assert isinstance(results[3], StorageUnavailable)
    assert "string or blob" not in str(results[3])  # no driver details for clients
    assert stored.total == 9 and new_runs[3].id not in {r.id for r in stored.items}
    assert storage.gateway.statistics().max_batch > 1  # they were batched together


def test_the_migrations_build_exactly_the_declared_tables_and_undo_cleanly(db_url: URL) -> None:
    """The chain of migrations (written on different branches) ends at the schema
    ``tables.py`` declares, and every one of them can be undone and redone."""
    engines = create_engines(db_url)
    try:
        migrate.upgrade(engines.writer)
        with engines.writer.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), tables.metadata)
        assert differences == []
        config = Config()
        config.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
        with engines.writer.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        with engines.writer.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
        migrate.upgrade(engines.writer)
        assert migrate.current_revision(engines.writer) == migrate.head_revision()
    finally:
        engines.dispose()


async def test_the_job_count_the_database_keeps_is_exact_across_upgrade_and_writes(db_url: URL) -> None:
    """An unfiltered listing reads the number of jobs the database keeps (triggers)
    instead of counting them: it starts from the jobs already there at the upgrade
    and follows every insert and delete, one by one or in batches."""
    engines = create_engines(db_url)
    config = Config()
    config.set_main_option("script_location", str(Path(migrate.__file__).parent / "migrations"))
    try:
        with engines.writer.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0004")  # the revision before the count
        before = [make_job(f"old{i}") for i in range(3)]
        with engines.writer.begin() as conn:
            conn.execute(tables.jobs.insert(), [JOBS.values(job) for job in before])
    finally:
        engines.dispose()
    async with open_storage(db_url) as storage:  # upgrades to the head

        async def totals() -> tuple[int, int]:
            kept = await storage.jobs_page(limit=1, offset=0, filters=JobFilters())
            counted = await storage.jobs_page(limit=1, offset=0, filters=JobFilters(name="o"))
            return kept.total, counted.total

        assert await totals() == (3, 3)
        await storage.import_jobs([make_job(f"other{i}") for i in range(50)])
        await storage.create_job(make_job("new"))
        assert await totals() == (54, 53)
        assert await storage.delete_job(before[0].id)
        assert not await storage.delete_job(before[0].id)
        assert await totals() == (53, 52)
        wipe = "TRUNCATE jobs CASCADE" if db_url.get_backend_name() == "postgresql" else "DELETE FROM jobs"
        await storage.gateway.write(lambda tx: tx.conn.execute(sa.text(wipe)))  # an operator's clean-up
        assert await totals() == (0, 0)


async def test_a_read_the_database_does_not_answer_is_abandoned_as_unavailable(sqlite_url: URL) -> None:
    """A stalled database: the read is given up after the read timeout (heavy reads that
    outgrow the event loop's budget move to threads, where every PostgreSQL read runs)
    and reported as unavailable."""
    release = threading.Event()

    def stalled(conn: sa.Connection) -> int:
        if threading.current_thread() is threading.main_thread():
            return int(conn.execute(sa.text(_LONG_QUERY)).scalar_one())  # interrupted: too long
        release.wait(30)
        return 1

    with trio.fail_after(20):
        async with open_gateway(sqlite_url, read_timeout=0.5) as gw:
            try:
                start = trio.current_time()
                with pytest.raises(StorageUnavailable, match="did not answer within 0.5s"):
                    await gw.read(stalled, heavy=True)
                assert trio.current_time() - start < 5
            finally:
                release.set()
            # Once the database answers again, reads work.
            assert await gw.read(lambda conn: conn.execute(sa.text("SELECT 2")).scalar(), heavy=True) == 2


async def test_a_failing_point_read_is_a_storage_error_and_the_next_starts_afresh(sqlite_url: URL) -> None:
    """SQLite's point reads run on a DB-API connection the gateway keeps: a driver
    error there leaves as a storage error, and the connection is replaced."""
    seen: list[object] = []

    def broken(driver: object) -> int:
        seen.append(driver)
        return int(driver.execute("SELECT count(*) FROM no_such_table").fetchone()[0])  # type: ignore[attr-defined]

    def working(driver: object) -> int:
        seen.append(driver)
        return int(driver.execute("SELECT count(*) FROM jobs").fetchone()[0])  # type: ignore[attr-defined]

    def unused(conn: sa.Connection) -> int:
        raise AssertionError("the fallback is for other databases")

    async with open_gateway(sqlite_url) as gw:
        assert await gw.read_point(working, unused) == 0
        with pytest.raises(StorageUnavailable) as failed:
            await gw.read_point(broken, unused)
        assert "no_such_table" in str(failed.value.__cause__)
        assert await gw.read_point(working, unused) == 0
        assert seen[0] is seen[1] and seen[2] is not seen[1]


#: A query that takes SQLite far longer than the event loop's budget for a read.
_LONG_QUERY = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT count(*) FROM n"
)


async def test_heavy_sqlite_reads_run_on_the_event_loop_until_they_outgrow_its_budget(
    sqlite_url: URL,
) -> None:
    """A heavy read on SQLite starts on the event loop (a reader thread would wait for
    the GIL at every row); one still running after the budget is interrupted and run
    again in a reader thread, with the same answer."""

    def where(query: str) -> Callable[[sa.Connection], tuple[bool, int]]:
        def op(conn: sa.Connection) -> tuple[bool, int]:
            on_loop = threading.current_thread() is threading.main_thread()
            return on_loop, int(conn.execute(sa.text(query)).scalar_one())

        return op

    with trio.fail_after(30):
        async with open_gateway(sqlite_url) as gw:
            assert await gw.read(where("SELECT count(*) FROM jobs"), heavy=True) == (True, 0)
            assert gw.statistics().reads_moved == 0
            assert await gw.read(where(_LONG_QUERY), heavy=True) == (False, 3_000_000)
            assert gw.statistics().reads_moved == 1
            # The interrupted read left its connection usable: reads go on as before.
            assert await gw.read(where("SELECT 7"), heavy=True) == (True, 7)


async def test_a_runs_listing_that_outgrows_the_budget_is_read_again_in_a_thread(
    sqlite_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runs listing reads through the driver (``runs._Listings``): interrupted on
    the event loop, it is read again in a reader thread like any other heavy read."""
    async with open_storage(sqlite_url) as storage:
        job = make_job("many")
        await storage.create_job(job)
        async with trio.open_nursery() as nursery:
            for i in range(300):
                nursery.start_soon(storage.create_run, make_run(job, created=EPOCH + dt.timedelta(seconds=i)))
        # Every read is over its budget when the progress handler first looks, in its query.
        monkeypatch.setattr("termjobs.storage.gateway.INLINE_READ_BUDGET_S", -1.0)
        monkeypatch.setattr("termjobs.storage.gateway._PROGRESS_STEPS", 50)  # past BEGIN
        moved = storage.gateway.statistics().reads_moved
        for full in (False, True):
            page = await storage.runs_page(limit=50, offset=10, full=full)
            assert page.total == 300
            assert [run.created_at for run in page.items] == [
                EPOCH + dt.timedelta(seconds=i) for i in range(289, 239, -1)
            ]
        assert storage.gateway.statistics().reads_moved == moved + 2


async def test_event_loop_reads_never_wait_for_a_connection_the_reader_threads_hold(sqlite_url: URL) -> None:
    release = threading.Event()
    held = trio.Semaphore(0)
    token = trio.lowlevel.current_trio_token()

    def stalled(conn: sa.Connection) -> int:
        if threading.current_thread() is threading.main_thread():
            return int(conn.execute(sa.text(_LONG_QUERY)).scalar_one())  # moves to a thread
        trio.from_thread.run_sync(held.release, trio_token=token)
        release.wait(30)
        return 1

    def count_jobs(driver: Any) -> int:
        return int(driver.execute("SELECT count(*) FROM jobs").fetchone()[0])

    def unused(conn: sa.Connection) -> int:
        raise AssertionError("SQLite reads the driver's connection")

    with trio.fail_after(20):
        async with open_gateway(sqlite_url) as gw, trio.open_nursery() as nursery:
            try:
                for _ in range(gw.engines.readers):  # every reader thread busy
                    nursery.start_soon(partial(gw.read, stalled, heavy=True))
                for _ in range(gw.engines.readers):
                    await held.acquire()
                with trio.fail_after(5):
                    assert await gw.read_point(count_jobs, unused) == 0
                    assert await gw.read(lambda conn: conn.execute(sa.text("SELECT 1")).scalar()) == 1
                    assert (
                        await gw.read(lambda conn: conn.execute(sa.text("SELECT 2")).scalar(), heavy=True)
                        == 2
                    )
            finally:
                release.set()


# ---------------------------------------------------------------- SQLite's writer on the loop


def _on_loop() -> bool:
    return threading.current_thread() is threading.main_thread()


def _insert(value: int, where: list[bool]) -> Callable[[WriteTx], int]:
    """A write that notes where it ran and stores ``value`` in a scratch table."""

    def op(tx: WriteTx) -> int:
        where.append(_on_loop())
        tx.conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS scratch (x INTEGER)")
        tx.conn.exec_driver_sql("INSERT INTO scratch (x) VALUES (?)", (value,))
        return value

    return op


async def _scratch(gw: Gateway) -> list[int]:
    return [row[0] for row in await gw.read(lambda c: c.exec_driver_sql("SELECT x FROM scratch").all())]


async def test_sqlite_writes_commit_on_the_event_loop_and_big_batches_in_a_thread(
    sqlite_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    where: list[bool] = []
    with trio.fail_after(20):
        async with open_gateway(sqlite_url) as gw:
            assert await gw.write(_insert(1, where)) == 1
            assert where == [True] and gw.statistics().writes_moved == 0
            monkeypatch.setattr("termjobs.storage.gateway.LOOP_WRITE_MAX", 3)
            async with trio.open_nursery() as nursery:  # five writes queued in one turn
                for value in range(2, 7):
                    nursery.start_soon(gw.write, _insert(value, where))
            assert where[1:] == [False] * 5  # one batch of five: over the size, in a thread
            assert gw.statistics().writes_moved == 1
            assert sorted(await _scratch(gw)) == [1, 2, 3, 4, 5, 6]


async def test_a_batch_stepping_past_its_budget_is_rolled_back_and_committed_once_in_a_thread(
    sqlite_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    where: list[bool] = []

    def heavy(tx: WriteTx) -> int:
        _insert(7, where)(tx)
        return int(tx.conn.execute(sa.text(_LONG_QUERY)).scalar_one())

    with trio.fail_after(30):
        async with open_gateway(sqlite_url) as gw:
            await gw.write(_insert(1, where))
            monkeypatch.setattr("termjobs.storage.gateway.LOOP_WRITE_STEPS", 100_000)
            assert await gw.write(heavy) == 3_000_000
            assert where[1:] == [True, False]  # interrupted on the loop, then in a thread
            assert gw.statistics().writes_moved == 1
            assert sorted(await _scratch(gw)) == [1, 7]  # the first try left nothing behind
            assert await gw.write(_insert(8, where)) == 8  # and the next is on the loop again
            assert where[-1] is True


async def test_a_database_locked_by_another_process_keeps_the_loop_free_until_it_is_released(
    sqlite_url: URL,
) -> None:
    """A lock held elsewhere (a backup, a sqlite3 shell) would stall the event loop for
    the busy timeout: the loop's attempt gives up at once and the write waits in a
    thread instead, with the usual busy timeout."""
    where: list[bool] = []
    done: list[int] = []
    assert sqlite_url.database is not None
    with trio.fail_after(20):
        async with open_gateway(sqlite_url) as gw, trio.open_nursery() as nursery:
            await gw.write(_insert(1, where))
            other = sqlite3.connect(sqlite_url.database, isolation_level=None)
            try:
                other.execute("BEGIN IMMEDIATE")  # holds the write lock
                asked = trio.current_time()
                nursery.start_soon(_write_into, done, gw, _insert(2, where))
                await trio.testing.wait_all_tasks_blocked()  # the writer waits for its thread
                assert trio.current_time() - asked < 1  # the loop's try: not the 5 s busy timeout
                assert gw.statistics().writes_moved == 1 and done == []  # waiting for the lock
            finally:
                other.execute("COMMIT")
                other.close()
        assert done == [2] and where == [True, False]  # it never ran on the loop: locked at BEGIN
        with gw.engines.writer.connect() as conn:  # the writer's connection got its timeout back
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
        async with open_gateway(sqlite_url) as gw:
            assert sorted(await _scratch(gw)) == [1, 2]


async def _write_into(into: list[int], gw: Gateway, op: Callable[[WriteTx], int]) -> None:
    into.append(await gw.write(op))


def _blob(size: int) -> Callable[[WriteTx], None]:
    def op(tx: WriteTx) -> None:
        tx.conn.exec_driver_sql("CREATE TABLE blobs (b BLOB)")
        tx.conn.exec_driver_sql(f"INSERT INTO blobs (b) VALUES (zeroblob({size}))")

    return op


def _in_file_alone(database: str, tmp_path: Path, query: str) -> list[Any]:
    """``query``'s rows in a copy of the database file without its WAL: what the
    checkpoints carried into the file."""
    alone = tmp_path / "alone.db"
    shutil.copyfile(database, alone)
    copy = sqlite3.connect(alone)
    try:
        return [row[0] for row in copy.execute(query)]
    finally:
        copy.close()


async def test_checkpoints_carry_the_writes_into_the_database_file_from_a_thread(
    sqlite_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commits on the event loop do not checkpoint the WAL (that syncs the disk):
    the gateway does, in a thread, every CHECKPOINT_WRITES writes, and the commit after a
    complete checkpoint (which syncs the WAL's header) is made in the thread too."""

    where: list[bool] = []
    assert sqlite_url.database is not None
    monkeypatch.setattr("termjobs.storage.gateway.CHECKPOINT_WAL_GROWTH", 1 << 40)  # by writes here
    with trio.fail_after(20):
        async with open_gateway(sqlite_url) as gw:
            # ~1,500 pages in one commit: SQLite's own checkpoint (at 1,000) would have
            # copied them into the file at once
            await gw.write(_blob(6_000_000))
            tables = "SELECT count(*) FROM sqlite_master WHERE name = 'blobs'"
            assert _in_file_alone(sqlite_url.database, tmp_path, tables) == [0]
            monkeypatch.setattr("termjobs.storage.gateway.CHECKPOINT_WRITES", 3)
            for value in range(1, 10):  # checkpoints after the 3rd, 6th and 9th write
                await gw.write(_insert(value, where))
            assert gw.statistics().checkpoints == 3 and gw.statistics().writes_moved == 3
            assert where == [True, True, False] * 3  # the first commit after each in a thread
            stored = _in_file_alone(sqlite_url.database, tmp_path, "SELECT x FROM scratch")
            assert _in_file_alone(sqlite_url.database, tmp_path, tables) == [1]
    assert sorted(stored) == list(range(1, 9))


async def test_a_wal_grown_by_big_writes_is_checkpointed_at_once(
    sqlite_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A few big writes must not let the WAL take the disk before CHECKPOINT_WRITES
    writes have come: a WAL grown by CHECKPOINT_WAL_GROWTH is checkpointed at once."""
    monkeypatch.setattr("termjobs.storage.gateway.CHECKPOINT_WAL_GROWTH", 1 << 20)
    where: list[bool] = []
    assert sqlite_url.database is not None
    with trio.fail_after(20):
        async with open_gateway(sqlite_url) as gw:
            await gw.write(_blob(2_000_000))  # one write, about 500 pages
            await gw.write(_insert(1, where))  # committed after the checkpoint, in a thread
            assert gw.statistics().checkpoints == 1 and where == [False]
            tables = "SELECT count(*) FROM sqlite_master WHERE name = 'blobs'"
            assert _in_file_alone(sqlite_url.database, tmp_path, tables) == [1]
