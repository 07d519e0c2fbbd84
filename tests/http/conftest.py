"""An in-process API (quart test client) over real services and real programs."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest
import trio
from quart.testing import QuartClient
from sqlalchemy.engine import URL

from termjobs.clock import VirtualClock
from termjobs.config import Settings
from termjobs.http.app import create_app
from termjobs.service import open_services
from termjobs.services import Services
from tests.helpers import EPOCH

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> str:
        message: str = self.body["error"]["message"]
        return message


@dataclass
class Api:
    """Sends requests with the bearer token unless told otherwise."""

    client: QuartClient
    services: Services

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Reply:
        sent = dict(AUTH) if auth else {}
        if body is not None:
            raw = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        response = await self.client.open(path, method=method, headers=sent, data=raw)
        text = await response.get_data(as_text=True)
        assert response.content_type == "application/json", text
        assert text.endswith("\n")
        headers = {key.lower(): value for key, value in response.headers.items()}
        return Reply(response.status_code, json.loads(text), headers)

    async def get(self, path: str, **kw: Any) -> Reply:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return await self.call("POST", path, body, **kw)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self.post("/v2/jobs", body)
        assert reply.status == 201, reply.body
        created: dict[str, Any] = reply.body
        return created

    async def wait_event(self, run_id: str, event_type: str) -> None:
        """Wait until the run has an event of this type (event-driven, bounded)."""
        with trio.fail_after(20), self.services.hub.subscribe(run_id=run_id) as sub:
            page = await self.services.storage.events_page(run_id, since_id=0, limit=1000, offset=0)
            if page is not None and any(event.event_type.value == event_type for event in page.items):
                return
            async for event in sub.receive:
                if event.event_type.value == event_type:
                    return

    async def wait_final(self, run_id: str) -> dict[str, Any]:
        """Wait for the run's terminal event (event-driven, bounded), then GET it."""
        with trio.fail_after(20), self.services.hub.subscribe(run_id=run_id) as sub:
            run = await self.services.storage.get_run(run_id)
            if run is not None and not run.status.terminal:
                async for event in sub.receive:
                    if event.event_type.value in ("succeeded", "failed", "timed_out", "cancelled", "skipped"):
                        break
        reply = await self.get(f"/v2/runs/{run_id}")
        final: dict[str, Any] = reply.body
        return final


@pytest.fixture
async def api(sqlite_url: URL) -> AsyncIterator[Api]:
    settings = Settings(db_url=sqlite_url, auth="bearer", token=TOKEN, token_source="flag", shutdown_grace=1)
    async with open_services(settings, clock=VirtualClock(EPOCH), base_env=dict(os.environ)) as services:
        app = create_app(services)
        async with app.test_app() as test_app:
            # quart's protocol type declares ``json`` as required; the client is a QuartClient
            client = cast(QuartClient, test_app.test_client())
            yield Api(client=client, services=services)
