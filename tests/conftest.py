"""Shared fixtures: databases (SQLite always, PostgreSQL when configured)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from termjobs.storage.engine import resolve_url
from termjobs.testing import postgres_schema

POSTGRES_ENV = "TERMJOBS_TEST_POSTGRES_URL"
POSTGRES_SKIP = f"{POSTGRES_ENV} is not set: PostgreSQL tests skipped (set it to run them)"


def pytest_report_header() -> str:
    if os.environ.get(POSTGRES_ENV):
        return f"PostgreSQL tests: enabled ({POSTGRES_ENV} is set)"
    return f"PostgreSQL tests: SKIPPED ({POSTGRES_ENV} is not set)"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> URL:
    """A fresh SQLite database file."""
    return resolve_url(str(tmp_path / "jobs.db"))


@pytest.fixture
def postgres_url() -> Iterator[URL]:
    """A fresh, empty PostgreSQL schema (dropped afterwards)."""
    raw = os.environ.get(POSTGRES_ENV)
    if not raw:
        pytest.skip(POSTGRES_SKIP)
    with postgres_schema(raw) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> URL:
    """Each storage test runs on SQLite and on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: URL = request.getfixturevalue(name)
    return url
