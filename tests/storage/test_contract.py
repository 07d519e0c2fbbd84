"""The storage facade's contract, on SQLite, PostgreSQL (when configured) and in memory."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
import trio

from termjobs.jobdef import Job
from termjobs.jobspec import definition_for_create
from termjobs.model import (
    EventType,
    ExitReason,
    Run,
    RunEvent,
    RunnerType,
    RunOutput,
    RunStatus,
    RunTrigger,
    Session,
    SessionMessage,
    TriggerType,
)
from termjobs.rundomain import Ending, Enqueue, FireDecision, Outcome, Retry, Skip
from termjobs.storage import DuplicateRun, JobFilters, NameTaken, Receipt, RunFilters, Storage
from tests.helpers import EPOCH, cron_body, make_job, make_run
from tests.storage.conftest import Published

SECOND = dt.timedelta(seconds=1)


async def add_job(storage: Storage, job: Job) -> Job:
    await storage.create_job(job)
    return job


async def add_run(storage: Storage, run: Run) -> Run:
    return await storage.create_run(run)


async def finish(storage: Storage, ending: Ending, now: dt.datetime = EPOCH) -> Run | None:
    (final,) = await storage.finish_runs([ending], now=now)
    return final


async def event_types(storage: Storage, run_id: str) -> list[EventType]:
    page = await storage.events_page(run_id, since_id=0, limit=100, offset=0)
    assert page is not None
    return [event.event_type for event in page.items]


async def test_job_round_trip_keeps_every_field(storage: Storage) -> None:
    body = cron_body("nightly", "30 2 * * 1-5", "Europe/Berlin", labels={"team": "ops", "n": [1, 2]})
    created = EPOCH.replace(microsecond=123456)
    job = Job(
        id="job_n",
        spec=definition_for_create(body),
        next_run_at=created + SECOND,
        last_fire_at=None,
        created_at=created,
        updated_at=created,
    )
    await add_job(storage, job)
    assert await storage.get_job("job_n") == job
    assert await storage.resolve_job("nightly") == job
    assert await storage.resolve_job("missing") is None
    view = await storage.job_view("nightly")
    assert view is not None and view.job == job and view.last_run is None


async def test_resolving_prefers_an_id_over_a_name(storage: Storage) -> None:
    first = await add_job(storage, make_job("first"))
    second = make_job("second")
    await add_job(storage, dataclasses.replace(second, spec=dataclasses.replace(second.spec, name=first.id)))
    found = await storage.resolve_job(first.id)
    assert found is not None and found.spec.name == "first"
    view = await storage.job_view(first.id)
    assert view is not None and view.job.spec.name == "first"


async def test_duplicate_names_are_refused_and_nothing_is_written(storage: Storage) -> None:
    await add_job(storage, make_job("a"))
    b = await add_job(storage, make_job("b"))
    with pytest.raises(NameTaken, match="a job named 'a' already exists"):
        await add_job(storage, dataclasses.replace(make_job("a"), id="job_other"))
    with pytest.raises(NameTaken):
        await storage.update_job(dataclasses.replace(b, spec=dataclasses.replace(b.spec, name="a")))
    page = await storage.jobs_page(limit=10, offset=0, filters=JobFilters())
    assert sorted(view.job.spec.name for view in page.items) == ["a", "b"]


async def test_job_list_order_paging_filters_and_last_runs(storage: Storage) -> None:
    for i in range(5):
        await add_job(storage, make_job(f"job{i}", created=EPOCH + i * SECOND))
    await add_job(storage, make_job("50%_off", created=EPOCH + 9 * SECOND, enabled=False))
    cronny = await add_job(storage, make_job("cronny", created=EPOCH + 10 * SECOND))
    run = await add_run(storage, make_run(cronny))

    async def listing(
        limit: int = 50,
        offset: int = 0,
        name: str | None = None,
        enabled: bool | None = None,
        trigger_type: TriggerType | None = None,
    ) -> tuple[list[str], int]:
        filters = JobFilters(name=name, enabled=enabled, trigger_type=trigger_type)
        page = await storage.jobs_page(limit=limit, offset=offset, filters=filters)
        return [view.job.spec.name for view in page.items], page.total

    assert await listing(limit=3) == (["cronny", "50%_off", "job4"], 7)
    assert await listing(limit=3, offset=5) == (["job1", "job0"], 7)
    assert await listing(name="%") == (["50%_off"], 1)
    assert await listing(name="JOB") == (["job4", "job3", "job2", "job1", "job0"], 5)
    assert await listing(enabled=False) == (["50%_off"], 1)
    assert await listing(trigger_type=TriggerType.CRON) == ([], 0)
    first = (await storage.jobs_page(limit=1, offset=0, filters=JobFilters())).items[0]
    assert first.last_run is not None and first.last_run.id == run.id


async def test_job_list_id_prefix_is_literal_and_case_sensitive(storage: Storage) -> None:
    for name in ("abc", "abd", "ABe", "a_x", "a%y", "aXz"):
        await add_job(storage, make_job(name))

    async def ids(prefix: str) -> tuple[list[str], int]:
        page = await storage.jobs_page(limit=3, offset=0, filters=JobFilters(id_prefix=prefix))
        return sorted(view.job.id for view in page.items), page.total

    assert await ids("job_ab") == (["job_abc", "job_abd"], 2)
    assert await ids("job_AB") == (["job_ABe"], 1)  # SQLite's LIKE alone would also match job_abc
    assert await ids("job_a_") == (["job_a_x"], 1)  # ``_`` is not a wildcard
    assert await ids("job_a%") == (["job_a%y"], 1)  # nor is ``%``
    assert await ids("job_abc") == (["job_abc"], 1)
    assert await ids("job_abcd") == ([], 0)
    assert (await ids("job_"))[1] == 6
    assert await ids("b") == ([], 0)


async def test_deleting_a_job_removes_its_runs_and_events(storage: Storage) -> None:
    job = await add_job(storage, make_job("doomed"))
    other = await add_job(storage, make_job("kept"))
    run = await add_run(storage, make_run(job))
    kept = await add_run(storage, make_run(other))
    assert await storage.delete_job(job.id)
    assert not await storage.delete_job(job.id)
    assert await storage.get_run(run.id) is None
    assert await storage.events_page(run.id, since_id=0, limit=10, offset=0) is None
    assert await storage.events_after(0, run_id=run.id) == []
    assert await storage.get_run(kept.id) is not None


async def test_status_changes_are_guarded_by_the_transition_table(storage: Storage) -> None:
    job = await add_job(storage, make_job("g"))
    run = await add_run(storage, make_run(job))
    later = EPOCH + SECOND
    succeeded = Outcome(RunStatus.SUCCEEDED, ExitReason.NATURAL_COMPLETION, output=RunOutput(exit_code=0))
    assert await finish(storage, Ending(run, succeeded), later) is None  # queued -> succeeded is refused
    assert await storage.request_cancel(run, now=later, message="no") is None  # only a running run
    running = await storage.start_run(run, worker_id="worker_1", now=later)
    assert running is not None and running.status is RunStatus.RUNNING
    assert running.started_at == later and running.worker_id == "worker_1"
    assert await storage.start_run(run, worker_id="worker_2", now=later) is None  # started once
    final = await finish(storage, Ending(running, succeeded), later)
    assert final is not None and final.status is RunStatus.SUCCEEDED and final.finished_at == later
    assert await finish(storage, Ending(running, succeeded), later) is None  # never overwritten
    assert await event_types(storage, run.id) == [
        EventType.QUEUED,
        EventType.CLAIMED,
        EventType.RUNNING,
        EventType.SUCCEEDED,
    ]


async def test_a_failed_run_and_its_retry_are_written_together(storage: Storage) -> None:
    job = await add_job(storage, make_job("r"))
    run = await add_run(storage, make_run(job))
    running = await storage.start_run(run, worker_id="w", now=EPOCH)
    assert running is not None
    failed = Outcome(RunStatus.FAILED, ExitReason.EXCEPTION, "boom", RunOutput(exit_code=2, stdout="x"))
    retry = Retry(
        run=dataclasses.replace(make_run(job, trigger=RunTrigger.RETRY), retry_of=run.id), delay="10s"
    )
    final = await finish(storage, Ending(running, failed, retry))
    assert final is not None and final.output == RunOutput(exit_code=2, stdout="x") and final.error == "boom"
    stored_retry = await storage.get_run(retry.run.id)
    assert stored_retry is not None and stored_retry.status is RunStatus.QUEUED
    assert await event_types(storage, run.id) == [
        EventType.QUEUED,
        EventType.CLAIMED,
        EventType.RUNNING,
        EventType.FAILED,
        EventType.RETRY_SCHEDULED,
    ]
    page = await storage.events_page(run.id, since_id=0, limit=10, offset=0)
    assert page is not None and page.items[3].data == {
        "status": "failed",
        "attempt": 1,
        "error": "boom",
        "exit_reason": "exception",
        "exit_code": 2,
        "session_id": "",
        "truncated": False,
        "turn_count": 0,
        "input_tokens": 0,
        "output_tokens": 0,
    }


async def test_finishing_a_cancel_requested_run_forces_cancelled_and_no_retry(storage: Storage) -> None:
    job = await add_job(storage, make_job("c"))
    run = await add_run(storage, make_run(job))
    now = EPOCH + SECOND
    running = await storage.start_run(run, worker_id="w", now=now)
    assert running is not None
    assert await storage.request_cancel(running, now=now, message="cancellation requested") is not None
    failed = Outcome(RunStatus.FAILED, ExitReason.EXCEPTION, "boom", RunOutput(response="partial"))
    retry = Retry(run=make_run(job, created=now), delay="10s")
    final = await finish(storage, Ending(running, failed, retry), now)
    assert final is not None and final.status is RunStatus.CANCELLED
    assert final.exit_reason is ExitReason.CANCELLED and final.output.response == "partial"
    assert await storage.get_run(retry.run.id) is None


async def test_queued_runs_end_cancelled_or_skipped_with_their_event(storage: Storage) -> None:
    job = await add_job(storage, make_job("q"))
    first, second = await add_run(storage, make_run(job)), await add_run(storage, make_run(job))
    cancelled = await storage.cancel_queued(first, now=EPOCH, message="run cancelled before start")
    skipped = await storage.skip_queued(
        second, now=EPOCH, message="skipped: paused", data={"reason": "paused"}
    )
    assert cancelled is not None and cancelled.status is RunStatus.CANCELLED and cancelled.error is None
    assert skipped is not None and skipped.status is RunStatus.SKIPPED and skipped.error == "skipped: paused"
    assert await storage.cancel_queued(first, now=EPOCH, message="again") is None
    assert await event_types(storage, second.id) == [EventType.QUEUED, EventType.SKIPPED]


async def test_nul_characters_in_output_are_stored_as_replacement_characters(storage: Storage) -> None:
    # A program may print NUL bytes; PostgreSQL text columns refuse them.
    job = await add_job(storage, make_job("nul"))
    run = await add_run(storage, make_run(job))
    running = await storage.start_run(run, worker_id="w", now=EPOCH)
    assert running is not None
    outcome = Outcome(RunStatus.SUCCEEDED, ExitReason.NATURAL_COMPLETION, output=RunOutput(stdout="a\x00b\n"))
    final = await finish(storage, Ending(running, outcome))
    assert final is not None and final.output.stdout == "a\ufffdb\n" and final.status is RunStatus.SUCCEEDED


async def test_run_listing_order_summary_and_job_names(storage: Storage) -> None:
    a = await add_job(storage, make_job("a"))
    b = await add_job(storage, make_job("b"))
    same_time = [await add_run(storage, make_run(a)) for _ in range(3)]  # identical created_at
    newer = await add_run(storage, make_run(b, created=EPOCH + SECOND))
    page = await storage.runs_page(limit=10, offset=0)
    # newest first; ties broken by insertion order (newest insert first)
    assert [r.id for r in page.items] == [newer.id] + [r.id for r in reversed(same_time)]
    assert page.total == 4
    only_a = await storage.runs_page(limit=2, offset=1, filters=RunFilters(job_ref=a.id))
    assert [r.id for r in only_a.items] == [same_time[1].id, same_time[0].id] and only_a.total == 3
    by_name = await storage.runs_page(limit=10, offset=0, filters=RunFilters(job_ref="a"))
    assert by_name.total == 3
    queued = await storage.runs_page(limit=9, offset=0, filters=RunFilters(statuses=(RunStatus.QUEUED,)))
    assert queued.total == 4
    view = await storage.job_view("a")
    assert view is not None and view.last_run is not None and view.last_run.id == same_time[-1].id


async def test_a_run_listed_again_after_it_changed_is_listed_as_it_is_now(storage: Storage) -> None:
    # Listings keep the runs they loaded (SQLite, by the row's values): never a stale one.
    job = await add_job(storage, make_job("again"))
    run = await add_run(storage, make_run(job))
    for _ in range(2):  # the second listing finds the run kept
        (listed,) = (await storage.runs_page(limit=10, offset=0, full=False)).items
        assert listed.status is RunStatus.QUEUED and listed.error is None
    await storage.cancel_queued(run, now=EPOCH + SECOND, message="changed my mind")
    for filters in (RunFilters(), RunFilters(job_ref=job.id)):
        (listed,) = (await storage.runs_page(limit=10, offset=0, filters=filters, full=False)).items
        assert listed.status is RunStatus.CANCELLED and listed.finished_at == EPOCH + SECOND
        (full,) = (await storage.runs_page(limit=10, offset=0, filters=filters)).items
        assert full == await storage.get_run(run.id)


async def test_run_filters_combine(storage: Storage) -> None:
    job = await add_job(storage, make_job("rf"))
    early = await add_run(storage, make_run(job, created=EPOCH))
    late = await add_run(storage, make_run(job, created=EPOCH + 10 * SECOND, trigger=RunTrigger.SCHEDULE))
    await storage.cancel_queued(early, now=EPOCH, message="x")

    async def ids(filters: RunFilters) -> list[str]:
        page = await storage.runs_page(limit=10, offset=0, filters=filters)
        return [run.id for run in page.items]

    assert await ids(RunFilters(trigger=RunTrigger.SCHEDULE)) == [late.id]
    assert await ids(RunFilters(created_after=EPOCH + SECOND)) == [late.id]
    assert await ids(RunFilters(created_after=EPOCH + 10 * SECOND)) == [late.id]  # at or after
    assert await ids(RunFilters(created_before=EPOCH + 10 * SECOND)) == [early.id]  # strictly before
    both = RunFilters(statuses=(RunStatus.CANCELLED, RunStatus.FAILED), trigger=RunTrigger.MANUAL)
    assert await ids(both) == [early.id]
    assert await ids(RunFilters(statuses=(RunStatus.CANCELLED,), trigger=RunTrigger.SCHEDULE)) == []


async def test_jobs_are_filtered_by_runner_type_and_labels(storage: Storage) -> None:
    await add_job(storage, make_job("a", labels={"team": "data", "tier": 1, "on": True, "x": None}))
    await add_job(storage, make_job("b", labels={"team": "data", "tier": "2"}))
    await add_job(storage, make_job("c", labels=["team=data"]))
    await add_job(storage, make_job("d"))

    async def names(filters: JobFilters) -> list[str]:
        page = await storage.jobs_page(limit=10, offset=0, filters=filters)
        return sorted(view.job.spec.name for view in page.items)

    assert await names(JobFilters(labels=(("team", "data"),))) == ["a", "b"]
    assert await names(JobFilters(labels=(("team", "data"), ("tier", "1")))) == ["a"]
    assert await names(JobFilters(labels=(("tier", "2"),))) == ["b"]
    assert await names(JobFilters(labels=(("on", "true"),))) == ["a"]
    assert await names(JobFilters(labels=(("x", "null"),))) == []  # only strings, numbers, booleans
    assert await names(JobFilters(labels=(("team", "Data"),))) == []  # exact
    assert await names(JobFilters(runner_type=RunnerType.PROGRAM)) == ["a", "b", "c", "d"]
    assert await names(JobFilters(runner_type=RunnerType.LLM)) == []


async def test_summaries_do_not_carry_output(storage: Storage) -> None:
    job = await add_job(storage, make_job("out"))
    run = await add_run(storage, make_run(job))
    running = await storage.start_run(run, worker_id="w", now=EPOCH)
    assert running is not None
    output = RunOutput(stdout="x" * 70_000, stderr="err", exit_code=1)
    await finish(storage, Ending(running, Outcome(RunStatus.FAILED, ExitReason.EXCEPTION, "boom", output)))
    full = await storage.get_run(run.id)
    summary = await storage.get_run(run.id, full=False)
    assert full is not None and full.output == output
    assert summary is not None and summary.output == RunOutput(exit_code=1) and summary.error == "boom"
    (listed,) = (await storage.runs_page(limit=1, offset=0, full=False)).items
    assert listed == summary


async def test_active_runs_are_each_jobs_oldest_first(storage: Storage) -> None:
    a, b = await add_job(storage, make_job("a")), await add_job(storage, make_job("b"))
    late = await add_run(storage, make_run(a, created=EPOCH + SECOND))
    early = await add_run(storage, make_run(a))
    other = await add_run(storage, make_run(b))
    done = await storage.cancel_queued(other, now=EPOCH, message="x")
    assert done is not None
    assert [r.id for r in await storage.active_runs()] == [early.id, late.id]
    assert [r.id for r in await storage.active_runs([b.id])] == []


async def test_event_ids_increase_and_since_id_pages_by_insertion(storage: Storage) -> None:
    job = await add_job(storage, make_job("ev"))
    run = await add_run(storage, make_run(job))

    async def add(i: int, created: dt.datetime) -> RunEvent:
        return await storage.add_event(run, EventType.OUTPUT, f" line {i} ", {"i": i}, now=created)

    # created_at deliberately out of order: listing follows ids, not timestamps
    events = [await add(i, EPOCH - i * SECOND) for i in range(5)]
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == 5
    assert events[0].message == "line 0"  # trimmed
    page = await storage.events_page(run.id, since_id=ids[1], limit=2, offset=0)
    assert page is not None and [e.id for e in page.items] == ids[2:4] and page.total == 3
    after = await storage.events_after(ids[3], job_id=job.id)
    assert [e.data for e in after] == [{"i": 4}]
    assert await storage.max_event_id() == ids[-1]


async def test_events_read_back_exactly(storage: Storage) -> None:
    moment = dt.datetime(2026, 7, 1, 23, 59, 59, 123_456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    job = await add_job(storage, make_job("fast"))
    run = await add_run(storage, make_run(job))
    written = await storage.add_event(run, EventType.OUTPUT, None, {"text": "é\n"}, now=moment)
    await storage.submit_event(run, EventType.OUTPUT, "queued", None, now=moment)
    # A submitted event is not waited for; a later waited write is committed after it.
    last = await storage.add_event(run, EventType.OUTPUT, "last", None, now=moment)
    read, queued, after = await storage.events_after(written.id - 1, run_id=run.id)
    assert read == written and read.created_at == moment and read.data == {"text": "é\n"}
    assert queued.message == "queued" and queued.data is None and after == last


async def test_scheduled_fires_are_unique_per_nominal_time(storage: Storage) -> None:
    job = await add_job(storage, make_job("s"))
    await add_run(storage, make_run(job, trigger=RunTrigger.SCHEDULE))
    with pytest.raises(DuplicateRun):
        await add_run(storage, make_run(job, trigger=RunTrigger.SCHEDULE))
    await add_run(storage, make_run(job, trigger=RunTrigger.MANUAL))  # manual runs may share the time


async def test_runs_created_side_by_side_are_each_stored_with_their_event(storage: Storage) -> None:
    # Triggers arriving together reach the store together (the SQL store inserts their
    # rows at once); a scheduled duplicate among them is refused alone, and a run made
    # with an idempotency key keeps its receipt.
    job = await add_job(storage, make_job("side-by-side"))
    scheduled = await add_run(storage, make_run(job, trigger=RunTrigger.SCHEDULE))
    manual = [make_run(job) for _ in range(8)]
    receipt = Receipt("key-1", "fingerprint", 202, "{}", EPOCH)
    keyed = make_run(job)
    outcomes: dict[str, str] = {}

    async def create(run: Run, receipt: Receipt | None = None) -> None:
        try:
            stored = await storage.create_run(run, receipt=receipt)
            outcomes[run.id] = "stored" if stored == run else "changed"
        except DuplicateRun:
            outcomes[run.id] = "duplicate"

    again = make_run(job, trigger=RunTrigger.SCHEDULE)  # the same nominal time
    async with trio.open_nursery() as nursery:
        for run in manual:
            nursery.start_soon(create, run)
        nursery.start_soon(create, again)
        nursery.start_soon(create, keyed, receipt)
    assert outcomes == {**{run.id: "stored" for run in [*manual, keyed]}, again.id: "duplicate"}
    assert await storage.get_run(again.id) is None
    for run in [*manual, keyed]:
        assert await storage.get_run(run.id) == run
        assert await event_types(storage, run.id) == [EventType.QUEUED]
    assert await storage.receipt("key-1", since=EPOCH - SECOND) == receipt
    assert (await storage.runs_page(limit=100, offset=0)).total == 10
    active = await storage.active_runs([job.id])
    assert len(active) == 10 and active[0].id == scheduled.id  # the oldest first


async def test_recorded_fires_queue_skip_and_advance_the_schedule_at_once(storage: Storage) -> None:
    job = await add_job(storage, make_job("f"))
    on_time = make_run(job, trigger=RunTrigger.SCHEDULE, created=EPOCH + SECOND)
    missed = make_run(job, trigger=RunTrigger.SCHEDULE)
    advanced = dataclasses.replace(job, next_run_at=EPOCH + 60 * SECOND, last_fire_at=EPOCH + SECOND)
    decisions: list[FireDecision] = [
        Skip(missed, "skipped 1 missed fire(s)", {"reason": "misfire"}),
        Enqueue(on_time, {"x": 1}),
    ]
    queued = await storage.record_fires(advanced, decisions, now=EPOCH + SECOND)
    assert queued == [on_time]
    assert await storage.get_job(job.id) == advanced
    stored_missed = await storage.get_run(missed.id)
    assert stored_missed is not None and stored_missed.status is RunStatus.SKIPPED
    # The same nominal times again (a clock stepped back): nothing new is recorded.
    again = [Enqueue(dataclasses.replace(on_time, id="run_other"))]
    assert await storage.record_fires(advanced, again, now=EPOCH + 2 * SECOND) == []
    assert (await storage.runs_page(limit=10, offset=0)).total == 2


async def test_fires_of_many_jobs_due_at_once_are_each_recorded_once(storage: Storage) -> None:
    # Many jobs falling due together reach the store side by side (the SQL store
    # writes them in one batch); each gets exactly its own runs and schedule.
    jobs = [await add_job(storage, make_job(f"due{i}")) for i in range(30)]
    at = EPOCH + 60 * SECOND
    fired = {job.id: make_run(job, trigger=RunTrigger.SCHEDULE, created=at) for job in jobs}
    # One job's fire is already stored (recorded before a restart): not recorded again.
    await add_run(storage, fired[jobs[3].id])
    results: dict[str, list[Run]] = {}

    async def fire(job: Job) -> None:
        advanced = dataclasses.replace(job, next_run_at=at + 60 * SECOND, last_fire_at=at, updated_at=at)
        run = fired[job.id]
        decision: FireDecision = (
            Skip(run, "skipped: busy", {"reason": "busy"}) if job is jobs[5] else Enqueue(run, None)
        )
        results[job.id] = await storage.record_fires(advanced, [decision], now=at)

    async with trio.open_nursery() as nursery:
        for job in jobs:
            nursery.start_soon(fire, job)
    for job in jobs:
        expected = [] if job in (jobs[3], jobs[5]) else [fired[job.id]]
        assert results[job.id] == expected, job.spec.name
        stored = await storage.get_job(job.id)
        assert stored is not None and stored.next_run_at == at + 60 * SECOND and stored.last_fire_at == at
    skipped = await storage.get_run(fired[jobs[5].id].id)
    assert skipped is not None and skipped.status is RunStatus.SKIPPED and skipped.error == "skipped: busy"
    assert await event_types(storage, fired[jobs[5].id].id) == [EventType.SKIPPED]
    assert await event_types(storage, fired[jobs[0].id].id) == [EventType.QUEUED]
    assert await event_types(storage, fired[jobs[3].id].id) == [EventType.QUEUED]  # not twice
    assert (await storage.runs_page(limit=100, offset=0)).total == 30


async def test_runs_started_and_finished_together_each_get_their_own_outcome(
    storage: Storage, published: Published
) -> None:
    # Runs started and finished side by side reach the store together (the SQL store
    # moves them with one statement per kind of move); each run gets exactly what
    # starting or finishing it alone would have given.
    jobs = [await add_job(storage, make_job(f"batch{i}")) for i in range(3)]
    queued = [await add_run(storage, make_run(jobs[i % 3])) for i in range(12)]
    gone = await storage.cancel_queued(queued[11], now=EPOCH, message="run cancelled before start")
    assert gone is not None
    later = EPOCH + SECOND
    started: dict[int, list[Run | None]] = {}

    async def start(index: int) -> None:
        started.setdefault(index, []).append(await storage.start_run(queued[index], worker_id="w", now=later))

    async with trio.open_nursery() as nursery:
        for index in [*range(12), 0]:  # run 0 twice: started once, then refused
            nursery.start_soon(start, index)
    assert all(run is not None and run.status is RunStatus.RUNNING for run in started[1][:1] + started[5])
    assert sorted(run is None for run in started[0]) == [False, True]
    assert started[11] == [None]  # cancelled before it started
    running = {i: next(run for run in started[i] if run is not None) for i in range(11)}
    assert await storage.request_cancel(running[4], now=later, message="cancellation requested") is not None

    ok = Outcome(
        RunStatus.SUCCEEDED, ExitReason.NATURAL_COMPLETION, output=RunOutput(exit_code=0, stdout="hi")
    )
    failed = Outcome(RunStatus.FAILED, ExitReason.EXCEPTION, "boom", RunOutput(exit_code=3))
    retries = {i: Retry(run=make_run(jobs[i % 3], trigger=RunTrigger.RETRY), delay="5s") for i in (2, 4)}
    endings = {i: Ending(running[i], failed if i in (2, 4, 7) else ok, retries.get(i)) for i in range(11)}
    finished: dict[int, list[Run | None]] = {}
    end = later + SECOND

    async def finish_one(index: int) -> None:
        (final,) = await storage.finish_runs([endings[index]], now=end)
        finished.setdefault(index, []).append(final)

    async with trio.open_nursery() as nursery:
        for index in [*range(11), 3]:  # run 3 twice: ended once, then refused
            nursery.start_soon(finish_one, index)
    assert sorted(run is None for run in finished[3]) == [False, True]
    for index in range(11):
        final = next(run for run in finished[index] if run is not None)
        stored = await storage.get_run(queued[index].id)
        assert stored == final and stored.finished_at == end, index
        if index == 4:  # its cancel was requested: cancelled, not retried
            assert stored.status is RunStatus.CANCELLED and stored.output.exit_code == 3
            assert await storage.get_run(retries[4].run.id) is None
        elif index in (2, 7):
            assert stored.status is RunStatus.FAILED and stored.error == "boom"
        else:
            assert stored.status is RunStatus.SUCCEEDED and stored.output.stdout == "hi"
    retried = await storage.get_run(retries[2].run.id)
    assert retried is not None and retried.status is RunStatus.QUEUED
    assert await event_types(storage, queued[2].id) == [
        EventType.QUEUED,
        EventType.CLAIMED,
        EventType.RUNNING,
        EventType.FAILED,
        EventType.RETRY_SCHEDULED,
    ]
    assert await event_types(storage, queued[4].id) == [
        EventType.QUEUED,
        EventType.CLAIMED,
        EventType.RUNNING,
        EventType.CANCEL_REQUESTED,
        EventType.CANCELLED,
    ]
    assert await event_types(storage, queued[0].id) == [
        EventType.QUEUED,
        EventType.CLAIMED,
        EventType.RUNNING,
        EventType.SUCCEEDED,
    ]
    stored_events = await storage.events_after(0, limit=1000)
    assert [event.id for event in stored_events] == published.ids == sorted(published.ids)


async def test_a_job_deleted_beside_its_runs_last_writes_leaves_nothing_behind(storage: Storage) -> None:
    # Whichever of the two the store commits first, the job ends deleted with its runs
    # and their events; neither write fails.
    job = await add_job(storage, make_job("short-lived"))
    run = await add_run(storage, make_run(job))
    running = await storage.start_run(run, worker_id="w", now=EPOCH)
    assert running is not None
    deleted: list[bool] = []

    async def finish_it() -> None:
        await finish(storage, Ending(running, Outcome(RunStatus.SUCCEEDED, ExitReason.NATURAL_COMPLETION)))

    async def delete_it() -> None:
        deleted.append(await storage.delete_job(job.id))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(finish_it)
        nursery.start_soon(delete_it)
    assert deleted == [True]
    assert await storage.get_job(job.id) is None and await storage.get_run(run.id) is None
    assert await storage.events_after(0, run_id=run.id) == []


async def test_events_are_published_after_commit_in_id_order(storage: Storage, published: Published) -> None:
    job = await add_job(storage, make_job("p"))
    run = await add_run(storage, make_run(job))
    running = await storage.start_run(run, worker_id="w", now=EPOCH)
    assert running is not None
    await finish(storage, Ending(running, Outcome(RunStatus.SUCCEEDED, ExitReason.NATURAL_COMPLETION)))
    assert published.ids == sorted(published.ids) and len(published.ids) == 4
    stored = await storage.events_after(0)
    assert [event.id for event in stored] == published.ids


async def test_timestamps_keep_microseconds_and_utc(storage: Storage) -> None:
    moment = dt.datetime(2026, 7, 1, 23, 59, 59, 999_999, tzinfo=dt.timezone(dt.timedelta(hours=-7)))
    job = await add_job(storage, make_job("t", created=moment))
    got = await storage.get_job(job.id)
    assert got is not None and got.created_at == moment


async def test_retention_finds_and_deletes_only_terminal_runs(storage: Storage) -> None:
    job = await add_job(storage, make_job("old"))
    runs = [await add_run(storage, make_run(job, created=EPOCH + i * SECOND)) for i in range(4)]
    for run in runs[:3]:
        await storage.cancel_queued(run, now=run.created_at, message="x")
    assert await storage.expired_runs(before=EPOCH + 2 * SECOND, limit=10) == [runs[0].id, runs[1].id]
    assert await storage.jobs_over_run_cap(cap=2) == [job.id]
    assert await storage.runs_beyond_cap(job.id, cap=2, limit=10) == [runs[0].id]
    assert await storage.delete_terminal_runs([runs[0].id, runs[3].id]) == 1  # runs[3] is active
    assert await storage.get_run(runs[0].id) is None and await storage.get_run(runs[3].id) is not None


# ---------------------------------------------------------------- LLM runs and sessions


def a_session(
    session_id: str, *, at: dt.datetime = EPOCH, turns: int = 1, job_id: str | None = "job_x"
) -> Session:
    return Session(
        id=session_id,
        job_id=job_id,
        name="nightly",
        agent="developer",
        provider="local",
        model="llama3.2",
        turn_count=turns,
        input_tokens=10 * turns,
        output_tokens=5 * turns,
        created_at=at,
        updated_at=at,
    )


def a_message(role: str, text: str, *, run_id: str | None = None) -> SessionMessage:
    return SessionMessage(
        session_id="", run_id=run_id, role=role, content={"role": role, "text": text}, created_at=EPOCH
    )


async def test_run_output_updates_apply_only_while_the_run_runs(storage: Storage) -> None:
    job = await add_job(storage, make_job("llm"))
    queued = await add_run(storage, make_run(job))
    partial = RunOutput(
        response="first turn\x00", turn_count=1, input_tokens=12, output_tokens=3, session_id="s1"
    )
    assert await storage.update_run_output(queued.id, partial, now=EPOCH) is None  # not started yet
    running = await storage.start_run(queued, worker_id="w", now=EPOCH)
    assert running is not None
    updated = await storage.update_run_output(running.id, partial, now=EPOCH + SECOND)
    assert updated is not None and updated.output.response == "first turn\ufffd"
    stored = await storage.get_run(running.id)
    assert stored is not None and stored.output == updated.output and stored.updated_at == EPOCH + SECOND
    assert stored.status is RunStatus.RUNNING
    await storage.request_cancel(running, now=EPOCH + SECOND, message="x")
    assert await storage.update_run_output(running.id, partial, now=EPOCH + 2 * SECOND) is not None
    final = RunOutput(response="final", turn_count=2, exit_code=0)
    ended = await finish(
        storage, Ending(running, Outcome(RunStatus.CANCELLED, ExitReason.CANCELLED, "x", final))
    )
    assert ended is not None
    # A late update never touches the final state.
    assert await storage.update_run_output(running.id, partial, now=EPOCH + 3 * SECOND) is None
    after = await storage.get_run(running.id)
    assert after is not None and after.output == final and after.status is RunStatus.CANCELLED


async def test_sessions_keep_their_transcript_in_order_across_saves(storage: Storage) -> None:
    assert await storage.get_session("nope") is None
    first = a_session("s1")
    await storage.save_session(
        first, [a_message("user", "hi", run_id="run_a"), a_message("assistant", "hello")]
    )
    later = dataclasses.replace(
        first, turn_count=3, input_tokens=99, updated_at=EPOCH + SECOND, job_id="job_y"
    )
    await storage.save_session(later, [a_message("user", "more \x00")])
    await storage.save_session(dataclasses.replace(later, updated_at=EPOCH + 2 * SECOND), [])
    got = await storage.get_session("s1")
    assert got is not None
    # The counters and updated_at change; where and when it started do not.
    assert got.session == dataclasses.replace(later, job_id="job_x", updated_at=EPOCH + 2 * SECOND)
    assert [m.content for m in got.messages] == [
        {"role": "user", "text": "hi"},
        {"role": "assistant", "text": "hello"},
        {"role": "user", "text": "more \x00"},
    ]
    ids = [m.id for m in got.messages]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert [m.run_id for m in got.messages] == ["run_a", None, None]
    assert all(m.session_id == "s1" for m in got.messages)


async def test_retention_deletes_only_old_sessions_no_run_refers_to(storage: Storage) -> None:
    job = await add_job(storage, make_job("sessions"))
    run = await add_run(storage, make_run(job))
    running = await storage.start_run(run, worker_id="w", now=EPOCH)
    assert running is not None
    await finish(
        storage,
        Ending(
            running,
            Outcome(RunStatus.SUCCEEDED, ExitReason.NATURAL_COMPLETION, None, RunOutput(session_id="kept")),
        ),
    )
    for name in ("kept", "orphan", "recent"):
        at = EPOCH + 10 * SECOND if name == "recent" else EPOCH
        await storage.save_session(a_session(name, at=at), [a_message("user", name)])
    assert await storage.delete_orphan_sessions(before=EPOCH + 5 * SECOND, limit=10) == 1
    assert await storage.get_session("orphan") is None
    assert await storage.get_session("kept") is not None and await storage.get_session("recent") is not None
    # Once the run that refers to it is gone, the session goes too.
    await storage.delete_terminal_runs([run.id])
    assert await storage.delete_orphan_sessions(before=EPOCH + 5 * SECOND, limit=10) == 1
    assert await storage.get_session("kept") is None
