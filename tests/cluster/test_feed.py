"""The event feed of a cluster: this server's commits and other servers' rows reach the
hub once each, in id order (virtual time)."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from termjobs.cluster.feed import EventFeed
from termjobs.model import EventType, RunEvent
from termjobs.storage.memory import MemoryStorage
from tests.helpers import EPOCH, make_job, make_run


class Shared:
    """One database written by this server and by others."""

    def __init__(self) -> None:
        self.storage = MemoryStorage()
        self.published: list[int] = []

    async def setup(self) -> None:
        job = make_job("feed")
        await self.storage.create_job(job)
        self.run = make_run(job)
        await self.storage.create_run(self.run)  # its queued event is id 1

    async def write(self, count: int) -> list[RunEvent]:
        return [
            await self.storage.add_event(self.run, EventType.OUTPUT, f"line {i}", None, now=EPOCH)
            for i in range(count)
        ]

    def publish(self, events: Sequence[RunEvent]) -> None:
        self.published.extend(event.id for event in events)


async def settle() -> None:
    await trio.testing.wait_all_tasks_blocked()


async def test_events_reach_the_hub_once_each_in_id_order(autojump_clock: trio.testing.MockClock) -> None:
    db = Shared()
    await db.setup()
    feed = EventFeed(db.storage, db.publish, poll_s=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(feed.run)
        assert feed.published_up_to == 1  # starts from what is stored

        others = await db.write(2)  # another server commits 2, 3 (no notice yet)
        mine = await db.write(1)  # then this server commits 4
        feed.committed(mine)
        await settle()
        assert db.published == [2, 3, 4]  # the others' rows are read before ours

        later = await db.write(2)  # another server: 5, 6, announced
        feed.announced(str(later[-1].id))
        await settle()
        assert db.published == [2, 3, 4, 5, 6]

        ours = await db.write(1)  # 7: read back through an announcement first...
        feed.announced(str(ours[-1].id))
        await settle()
        feed.committed(ours)  # ...then our own commit notice arrives: not twice
        await settle()
        assert db.published == [2, 3, 4, 5, 6, 7]

        lost = await db.write(1)  # 8: its notification was lost
        await trio.sleep(1.5)  # the poll finds it
        assert db.published[-1] == lost[0].id
        nursery.cancel_scope.cancel()
    assert others[0].id == 2
