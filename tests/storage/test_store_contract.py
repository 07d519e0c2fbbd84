"""The store contract, run on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

import pytest
import sqlalchemy as sa
import trio
import trio.testing
from sqlalchemy.engine import URL

from termjobs.errors import Conflict
from termjobs.jobspec import build_job, definition_for_create
from termjobs.model import EventType, ExitReason, Job, Run, RunEvent, RunStatus, RunTrigger, TriggerType
from termjobs.storage import migrate, runops, store
from termjobs.storage.gateway import Gateway, open_gateway
from termjobs.storage.store import JobFilters, WriteTx
from tests.helpers import EPOCH, cron_body, make_job, make_run

SECOND = dt.timedelta(seconds=1)


async def add_job(gw: Gateway, job: Job) -> Job:
    await gw.write(lambda tx: store.insert_job(tx, job))
    return job


async def add_run(gw: Gateway, run: Run) -> Run:
    return await gw.write(lambda tx: runops.create_run(tx, run, now=run.created_at))


async def test_migrations_create_the_schema_and_are_idempotent(db_url: URL) -> None:
    async with open_gateway(db_url):
        pass
    async with open_gateway(db_url) as gw:
        assert migrate.current_revision(gw.engines.writer) == migrate.head_revision()
        names = await gw.read(lambda conn: set(sa.inspect(conn).get_table_names()))
        assert {"jobs", "runs", "run_events", "alembic_version"} <= names


async def test_job_round_trip_keeps_every_field(db_url: URL) -> None:
    body = cron_body("nightly", "30 2 * * 1-5", "Europe/Berlin", labels={"team": "ops", "n": [1, 2]})
    valid = definition_for_create(body)
    created = EPOCH.replace(microsecond=123456)
    job = build_job(
        valid.definition,
        job_id="job_n",
        created_at=created,
        updated_at=created,
        next_run_at=created + SECOND,
        last_fire_at=None,
    )
    async with open_gateway(db_url) as gw:
        await add_job(gw, job)
        assert await gw.read(lambda conn: store.get_job(conn, "job_n")) == job
        assert await gw.read(lambda conn: store.find_job(conn, "nightly")) == job
        assert await gw.read(lambda conn: store.find_job(conn, "missing")) is None


async def test_find_prefers_an_id_over_a_name(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        first = await add_job(gw, make_job("first"))
        await add_job(gw, dataclasses.replace(make_job("second"), name=first.id))
        found = await gw.read(lambda conn: store.find_job(conn, first.id))
        assert found is not None and found.name == "first"


async def test_duplicate_names_are_a_conflict_and_nothing_is_written(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        await add_job(gw, make_job("a"))
        b = await add_job(gw, make_job("b"))
        with pytest.raises(Conflict, match="a job named 'a' already exists"):
            await add_job(gw, dataclasses.replace(make_job("a"), id="job_other"))
        with pytest.raises(Conflict):
            await gw.write(lambda tx: store.update_job(tx, dataclasses.replace(b, name="a")))
        page = await gw.read(lambda conn: store.list_jobs(conn, limit=10, offset=0, filters=JobFilters()))
        assert sorted(job.name for job in page.items) == ["a", "b"]


async def test_job_list_order_paging_and_filters(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        for i in range(5):
            await add_job(gw, make_job(f"job{i}", created=EPOCH + i * SECOND))
        await add_job(gw, make_job("50%_off", created=EPOCH + 9 * SECOND, enabled=False))
        await add_job(gw, dataclasses.replace(make_job("cronny", created=EPOCH + 10 * SECOND)))

        async def listing(
            limit: int = 50,
            offset: int = 0,
            name: str | None = None,
            enabled: bool | None = None,
            trigger_type: TriggerType | None = None,
        ) -> tuple[list[str], int]:
            filters = JobFilters(name=name, enabled=enabled, trigger_type=trigger_type)
            page = await gw.read(
                lambda conn: store.list_jobs(conn, limit=limit, offset=offset, filters=filters)
            )
            return [job.name for job in page.items], page.total

        assert await listing(limit=3) == (["cronny", "50%_off", "job4"], 7)
        assert await listing(limit=3, offset=5) == (["job1", "job0"], 7)
        assert await listing(name="%") == (["50%_off"], 1)
        assert await listing(name="JOB") == (["job4", "job3", "job2", "job1", "job0"], 5)
        assert await listing(enabled=False) == (["50%_off"], 1)
        assert await listing(trigger_type=TriggerType.CRON) == ([], 0)


async def test_job_list_id_prefix_is_literal_and_case_sensitive(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        for name in ("abc", "abd", "ABe", "a_x", "a%y", "aXz"):
            await add_job(gw, make_job(name))

        async def ids(prefix: str) -> tuple[list[str], int]:
            filters = JobFilters(id_prefix=prefix)
            page = await gw.read(lambda conn: store.list_jobs(conn, limit=3, offset=0, filters=filters))
            return sorted(job.id for job in page.items), page.total

        assert await ids("job_ab") == (["job_abc", "job_abd"], 2)
        assert await ids("job_AB") == (["job_ABe"], 1)  # SQLite's LIKE alone would also match job_abc
        assert await ids("job_a_") == (["job_a_x"], 1)  # ``_`` is not a wildcard
        assert await ids("job_a%") == (["job_a%y"], 1)  # nor is ``%``
        assert await ids("job_abc") == (["job_abc"], 1)
        assert await ids("job_abcd") == ([], 0)
        assert (await ids("job_"))[1] == 6
        assert await ids("b") == ([], 0)


async def test_deleting_a_job_removes_its_runs_and_events(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        job = await add_job(gw, make_job("doomed"))
        other = await add_job(gw, make_job("kept"))
        run = await add_run(gw, make_run(job))
        kept = await add_run(gw, make_run(other))
        assert await gw.write(lambda tx: store.delete_job(tx, job.id))
        assert not await gw.write(lambda tx: store.delete_job(tx, job.id))
        assert await gw.read(lambda conn: store.get_run(conn, run.id)) is None
        page = await gw.read(lambda conn: store.list_events(conn, run.id, since_id=0, limit=10, offset=0))
        assert page.total == 0
        assert await gw.read(lambda conn: store.get_run(conn, kept.id)) is not None


async def test_status_changes_are_guarded_by_the_transition_table(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        job = await add_job(gw, make_job("g"))
        run = await add_run(gw, make_run(job))
        later = EPOCH + SECOND

        async def move(status: RunStatus) -> Run | None:
            return await gw.write(lambda tx: store.update_run(tx, run.id, status=status, now=later))

        assert await move(RunStatus.SUCCEEDED) is None  # queued -> succeeded is not allowed
        running = await gw.write(lambda tx: runops.start_run(tx, run, worker_id="worker_1", now=later))
        assert running is not None and running.status is RunStatus.RUNNING
        assert running.started_at == later and running.worker_id == "worker_1"
        outcome = runops.Outcome(RunStatus.SUCCEEDED, ExitReason.NATURAL_COMPLETION, exit_code=0)
        final = await gw.write(lambda tx: runops.finish_run(tx, running, outcome, now=later))
        assert final is not None and final.status is RunStatus.SUCCEEDED
        again = await gw.write(lambda tx: runops.finish_run(tx, running, outcome, now=later))
        assert again is None  # a terminal run is never overwritten
        types = await gw.read(lambda conn: store.list_events(conn, run.id, since_id=0, limit=10, offset=0))
        assert [e.event_type for e in types.items] == [
            EventType.QUEUED,
            EventType.CLAIMED,
            EventType.RUNNING,
            EventType.SUCCEEDED,
        ]


async def test_finishing_a_cancel_requested_run_forces_cancelled_and_no_retry(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        job = await add_job(gw, make_job("c"))
        run = await add_run(gw, make_run(job))
        now = EPOCH + SECOND
        running = await gw.write(lambda tx: runops.start_run(tx, run, worker_id="w", now=now))
        assert running is not None
        await gw.write(
            lambda tx: runops.request_cancel(tx, running, now=now, message="cancellation requested")
        )
        failed = runops.Outcome(RunStatus.FAILED, ExitReason.EXCEPTION, "boom", response="partial")
        retry = runops.Retry(run=make_run(job, created=now), delay="10s")
        final = await gw.write(lambda tx: runops.finish_run(tx, running, failed, now=now, retry=retry))
        assert final is not None and final.status is RunStatus.CANCELLED
        assert final.exit_reason is ExitReason.CANCELLED and final.response == "partial"
        assert await gw.read(lambda conn: store.get_run(conn, retry.run.id)) is None


async def test_nul_characters_in_output_are_stored_as_replacement_characters(db_url: URL) -> None:
    # A program may print NUL bytes; PostgreSQL text columns refuse them.
    async with open_gateway(db_url) as gw:
        job = await add_job(gw, make_job("nul"))
        run = await add_run(gw, make_run(job))
        running = await gw.write(lambda tx: runops.start_run(tx, run, worker_id="w", now=EPOCH))
        assert running is not None
        outcome = runops.Outcome(
            RunStatus.SUCCEEDED, ExitReason.NATURAL_COMPLETION, stdout="a\x00b\n", exit_code=0
        )
        final = await gw.write(lambda tx: runops.finish_run(tx, running, outcome, now=EPOCH))
        assert final is not None and final.stdout == "a\ufffdb\n" and final.status is RunStatus.SUCCEEDED


async def test_run_listing_order_summary_and_last_runs(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        a = await add_job(gw, make_job("a"))
        b = await add_job(gw, make_job("b"))
        same_time = [await add_run(gw, make_run(a)) for _ in range(3)]  # identical created_at
        newer = await add_run(gw, make_run(b, created=EPOCH + SECOND))
        page = await gw.read(lambda conn: store.list_runs(conn, limit=10, offset=0))
        # newest first; ties broken by insertion order (newest insert first)
        assert [r.id for r in page.items] == [newer.id] + [r.id for r in reversed(same_time)]
        assert page.total == 4
        only_a = await gw.read(lambda conn: store.list_runs(conn, limit=2, offset=1, job_id=a.id))
        assert [r.id for r in only_a.items] == [same_time[1].id, same_time[0].id] and only_a.total == 3
        queued = await gw.read(
            lambda conn: store.list_runs(conn, limit=9, offset=0, statuses=[RunStatus.QUEUED])
        )
        assert queued.total == 4
        last = await gw.read(lambda conn: store.last_runs(conn, [a.id, b.id, "job_none"]))
        assert last[a.id].id == same_time[-1].id and last[b.id].id == newer.id and "job_none" not in last


async def test_summaries_do_not_carry_output(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        job = await add_job(gw, make_job("out"))
        run = await add_run(gw, make_run(job))
        running = await gw.write(lambda tx: runops.start_run(tx, run, worker_id="w", now=EPOCH))
        assert running is not None
        outcome = runops.Outcome(
            RunStatus.FAILED, ExitReason.EXCEPTION, "boom", stdout="x" * 70_000, stderr="err"
        )
        await gw.write(lambda tx: runops.finish_run(tx, running, outcome, now=EPOCH))
        full = await gw.read(lambda conn: store.get_run(conn, run.id))
        summary = await gw.read(lambda conn: store.get_run(conn, run.id, full=False))
        assert full is not None and full.stdout == "x" * 70_000 and full.stderr == "err"
        assert summary is not None and summary.stdout is None and summary.error == "boom"


async def test_event_ids_increase_and_since_id_pages_by_insertion(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        job = await add_job(gw, make_job("ev"))
        run = await add_run(gw, make_run(job))

        async def add(i: int, created: dt.datetime) -> RunEvent:
            return await gw.write(
                lambda tx: store.insert_event(
                    tx,
                    run=run,
                    event_type=EventType.OUTPUT,
                    message=f" line {i} ",
                    now=created,
                    data={"i": i},
                )
            )

        # created_at deliberately out of order: listing follows ids, not timestamps
        events = [await add(i, EPOCH - i * SECOND) for i in range(5)]
        ids = [e.id for e in events]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert events[0].message == "line 0"  # trimmed
        page = await gw.read(lambda conn: store.list_events(conn, run.id, since_id=ids[1], limit=2, offset=0))
        assert [e.id for e in page.items] == ids[2:4] and page.total == 3
        after = await gw.read(lambda conn: store.events_after(conn, ids[3], job_id=job.id))
        assert [e.data for e in after] == [{"i": 4}]


async def test_scheduled_fires_are_unique_per_nominal_time(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        job = await add_job(gw, make_job("s"))
        await add_run(gw, make_run(job, trigger=RunTrigger.SCHEDULE))
        with pytest.raises(sa.exc.IntegrityError):
            await add_run(gw, make_run(job, trigger=RunTrigger.SCHEDULE))
        await add_run(gw, make_run(job, trigger=RunTrigger.MANUAL))  # manual runs may share the time


async def test_group_commit_isolates_a_failing_write_and_publishes_after_commit(db_url: URL) -> None:
    published: list[Sequence[RunEvent]] = []
    async with open_gateway(db_url, on_commit=published.append) as gw:
        job = await add_job(gw, make_job("batch"))
        runs = [make_run(job) for _ in range(40)]
        results: dict[int, object] = {}

        async def write(i: int) -> None:
            def op(tx: WriteTx) -> object:
                if i == 7:
                    store.insert_run(tx, runs[i])
                    raise RuntimeError("boom")  # after a partial write
                return runops.create_run(tx, runs[i], now=EPOCH)

            try:
                results[i] = await gw.write(op)
            except RuntimeError as exc:
                results[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(write, i)
        assert isinstance(results[7], RuntimeError)
        stored = await gw.read(lambda conn: store.list_runs(conn, limit=100, offset=0))
        assert stored.total == 39  # the failing write left nothing behind
        assert runs[7].id not in {r.id for r in stored.items}
        stats = gw.statistics()
        assert stats.writes == 41 and stats.batches < 41  # batched
        ids = [event.id for batch in published for event in batch]
        assert ids == sorted(ids) and len(ids) == 39


async def test_events_written_on_the_fast_path_read_back_exactly(db_url: URL) -> None:
    moment = dt.datetime(2026, 7, 1, 23, 59, 59, 123_456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    async with open_gateway(db_url) as gw:
        job = await add_job(gw, make_job("fast"))
        run = await add_run(gw, make_run(job))
        written = await gw.write(
            lambda tx: store.insert_event(
                tx, run=run, event_type=EventType.OUTPUT, message=None, now=moment, data={"text": "é\n"}
            )
        )
        (read,) = await gw.read(lambda conn: store.events_after(conn, written.id - 1, run_id=run.id))
    assert read == written and read.created_at == moment and read.data == {"text": "é\n"}


async def test_timestamps_keep_microseconds_and_utc(db_url: URL) -> None:
    moment = dt.datetime(2026, 7, 1, 23, 59, 59, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    async with open_gateway(db_url) as gw:
        job = await add_job(gw, make_job("t", created=moment))
        got = await gw.read(lambda conn: store.get_job(conn, job.id))
        assert got is not None and got.created_at == moment and got.created_at.tzinfo == dt.UTC


async def test_a_driver_error_on_the_event_fast_path_is_a_sqlalchemy_error(db_url: URL) -> None:
    async with open_gateway(db_url) as gw:
        orphan = make_run(make_job("never-stored"))  # its run does not exist
        with pytest.raises(sa.exc.IntegrityError):
            await gw.write(
                lambda tx: store.insert_event(
                    tx, run=orphan, event_type=EventType.OUTPUT, message=None, now=EPOCH, data=None
                )
            )
        assert await gw.read(store.max_event_id) == 0  # nothing half-written


async def test_a_write_that_keeps_failing_transiently_does_not_take_its_batch_down(
    db_url: URL, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_gateway(db_url, inline=True) as gw:
        job = await add_job(gw, make_job("batch"))
        runs = [make_run(job) for _ in range(10)]
        results: dict[int, object] = {}

        async def write(i: int) -> None:
            def op(tx: WriteTx) -> object:
                if i == 3:
                    raise sa.exc.OperationalError("INSERT", {}, Exception("string or blob too big"))
                return runops.create_run(tx, runs[i], now=EPOCH)

            try:
                results[i] = await gw.write(op)
            except sa.exc.OperationalError as exc:
                results[i] = exc

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(write, i)
        stored = await gw.read(lambda conn: store.list_runs(conn, limit=100, offset=0))
    assert isinstance(results[3], sa.exc.OperationalError)
    assert stored.total == 9 and runs[3].id not in {r.id for r in stored.items}
    assert gw.statistics().max_batch > 1  # they were batched together
