"""Liveness and readiness: what a load balancer and an orchestrator see."""

from __future__ import annotations

import pytest

from termjobs.storage import StorageUnavailable
from tests.http.conftest import Api


async def test_ready_when_storage_answers_and_the_scheduler_runs(api: Api) -> None:
    ready = await api.get("/readyz", auth=False)
    health = await api.get("/healthz", auth=False)
    detailed = await api.get("/healthz")
    assert (ready.status, ready.body) == (200, {"status": "ready"})
    assert (health.status, health.body) == (200, {"status": "ok"})
    assert detailed.body["capabilities"] == ["jobs"] and detailed.body["version"]


async def test_not_ready_while_storage_is_down_but_still_alive(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> bool:
        raise StorageUnavailable()

    monkeypatch.setattr(api.services.storage, "schema_is_current", down)
    ready = await api.get("/readyz", auth=False)
    health = await api.get("/healthz", auth=False)
    assert (ready.status, ready.body) == (503, {"status": "not_ready", "failing": ["storage"]})
    assert health.status == 200  # a restart would not bring the database back


async def test_not_ready_on_an_outdated_schema(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def behind() -> bool:
        return False

    monkeypatch.setattr(api.services.storage, "schema_is_current", behind)
    ready = await api.get("/readyz", auth=False)
    assert (ready.status, ready.body["failing"]) == (503, ["migrations"])


async def test_not_ready_from_the_moment_a_shutdown_begins(api: Api) -> None:
    api.services.state.shutting_down = True
    ready = await api.get("/readyz", auth=False)
    assert (ready.status, ready.body["failing"]) == (503, ["shutting_down"])
