"""The storage facade under test: on SQLite, PostgreSQL (when configured) and in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from termjobs.model import RunEvent
from termjobs.storage import Storage
from termjobs.storage.database import open_storage
from termjobs.storage.memory import MemoryStorage


@dataclass
class Published:
    """What storage handed to live subscribers, batch by batch."""

    batches: list[Sequence[RunEvent]] = field(default_factory=list)

    def __call__(self, events: Sequence[RunEvent]) -> None:
        self.batches.append(events)

    @property
    def ids(self) -> list[int]:
        return [event.id for batch in self.batches for event in batch]


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def storage(request: pytest.FixtureRequest, published: Published) -> AsyncIterator[Storage]:
    """Each contract test runs on every implementation of the facade."""
    if request.param == "memory":
        yield MemoryStorage(on_commit=published)
        return
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    async with open_storage(url, on_commit=published) as opened:
        yield opened
