"""The fence on PostgreSQL: a server's writes to a job hold only while it owns the job
and its lease is fresh, checked as the transaction commits; a refused write in a group
commit leaves the others of its batch in place."""

from __future__ import annotations

import dataclasses
import secrets

import psycopg
import pytest
import trio
from sqlalchemy.engine import URL

from termjobs.jobdef import Job
from termjobs.model import EventType
from termjobs.storage import NotOwner
from termjobs.storage.database import SqlStorage, open_storage
from termjobs.storage.sql import events
from termjobs.storage.transactions import Fence
from tests.helpers import EPOCH, make_job, make_run

pytestmark = pytest.mark.postgres
LEASE_S = 30.0


async def fenced_as_a(storage: SqlStorage) -> tuple[Job, Job]:
    """Servers a and b, a job owned by each; the storage writes as a."""
    for worker_id in ("a", "b"):
        url = "http://127.0.0.1:1"
        await storage.join_cluster(worker_id, host="h", pid=1, namespace="n", url=url, version="t")
    mine, theirs = make_job("mine"), make_job("theirs")
    await storage.create_job(mine, owner="a")
    await storage.create_job(theirs, owner="b")
    storage.fence = Fence("a", LEASE_S)
    return mine, theirs


async def test_only_the_owner_with_a_fresh_lease_writes_to_a_job(postgres_url: URL) -> None:
    async with open_storage(postgres_url) as storage:
        owned, other = await fenced_as_a(storage)

        run = await storage.create_run(make_run(owned))  # a owns it: stored
        with pytest.raises(NotOwner):
            await storage.create_run(make_run(other))
        with pytest.raises(NotOwner):
            await storage.update_job(dataclasses.replace(other, next_run_at=EPOCH))
        with pytest.raises(NotOwner):
            await storage.delete_job(other.id)
        assert await storage.get_job(other.id) is not None
        assert [r.id for r in await storage.active_runs([owned.id, other.id])] == [run.id]

        await storage.mark_gone(["a"])  # a's lease is gone: not even its own job
        with pytest.raises(NotOwner):
            await storage.create_run(make_run(owned))
        assert len(await storage.active_runs([owned.id])) == 1


async def test_a_refused_write_in_a_batch_leaves_the_others_committed(postgres_url: URL) -> None:
    async with open_storage(postgres_url) as storage:
        mine, theirs = await fenced_as_a(storage)
        outcomes: dict[int, str] = {}

        async def create(i: int) -> None:
            job = theirs if i == 5 else mine
            try:
                run = await storage.create_run(make_run(job))
                await storage.gateway.write(
                    lambda tx: events.insert(tx, run, EventType.OUTPUT, f"line {i}", None, now=EPOCH)
                )
                outcomes[i] = "stored"
            except NotOwner:
                outcomes[i] = "refused"

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(create, i)
        assert outcomes == {i: "refused" if i == 5 else "stored" for i in range(20)}
        assert len(await storage.active_runs([mine.id])) == 19
        assert await storage.active_runs([theirs.id]) == []


async def test_runs_started_together_are_refused_only_where_the_server_lost_the_job(
    postgres_url: URL,
) -> None:
    async with open_storage(postgres_url) as storage:
        mine, theirs = await fenced_as_a(storage)
        storage.fence = None  # runs queued before the fence applies
        queued = [await storage.create_run(make_run(theirs if i == 3 else mine)) for i in range(10)]
        storage.fence = Fence("a", LEASE_S)
        outcomes: dict[int, str] = {}

        async def start(i: int) -> None:
            try:
                running = await storage.start_run(queued[i], worker_id="a", now=EPOCH)
                outcomes[i] = "started" if running is not None else "not queued"
            except NotOwner:
                outcomes[i] = "refused"

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(start, i)
        assert outcomes == {i: "refused" if i == 3 else "started" for i in range(10)}
        assert [r.id for r in await storage.active_runs([theirs.id])] == [queued[3].id]
        still = await storage.get_run(queued[3].id)
        assert still is not None and still.status.value == "queued"


async def test_a_commit_announces_the_newest_event_it_wrote(postgres_url: URL) -> None:
    # The announcement goes out with the commit's held events and fence, in one round
    # trip; its payload is the newest event id of the commit.
    channel = f"test_announce_{secrets.token_hex(4)}"
    raw = postgres_url.set(drivername="postgresql").render_as_string(hide_password=False)
    async with open_storage(postgres_url) as storage:
        mine, _ = await fenced_as_a(storage)
        storage.gateway.events_channel = channel
        with psycopg.connect(raw, autocommit=True) as listener:
            listener.execute(f"LISTEN {channel}")
            run = await storage.create_run(make_run(mine))  # its queued event
            running = await storage.start_run(run, worker_id="a", now=EPOCH)  # claimed, running
            assert running is not None
            payloads = [int(note.payload) for note in listener.notifies(timeout=1, stop_after=2)]
        stored = await storage.events_after(0, run_id=run.id)
        assert [event.event_type for event in stored] == [
            EventType.QUEUED,
            EventType.CLAIMED,
            EventType.RUNNING,
        ]
        assert payloads == [stored[0].id, stored[2].id]
