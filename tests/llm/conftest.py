"""The llm runner end to end inside one process: real services on SQLite, the real
provider SDKs, and a scripted provider on loopback that speaks OpenAI's or Anthropic's
streaming wire format (each test runs against both). Real time, every test bounded."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from quart.testing import QuartClient
from sqlalchemy.engine import URL

from termjobs.config import Settings
from termjobs.http.app import create_app
from termjobs.runners.llm.settings import LLMSettings, ProviderConfig
from termjobs.service import open_services
from tests.http.conftest import TOKEN, Api
from tests.scripted_llm import ScriptedLLM, scripted_llm

KEY = "sk-scripted-SECRET-4f1c9a7e"
KEY_ENV = "SCRIPTED_PROVIDER_KEY"


@dataclass
class LLM(Api):
    """The API of a server whose only provider is ``scripted`` (the scripted model)."""

    model: ScriptedLLM
    kind: str
    workdir: Path
    outdir: Path
    tmp: Path

    def llm_job(self, name: str = "agent-job", **config: Any) -> dict[str, Any]:
        """A manual llm job body: agent ``developer``, cwd the work directory."""
        top = {key: config.pop(key) for key in list(config) if key in ("timeout_seconds", "trigger_type")}
        runner_config = {"agent_name": "developer", "instructions": "Do the thing.", "cwd": str(self.workdir)}
        runner_config.update(config)
        return {
            "name": name,
            "runner_type": "llm",
            "runner_config": runner_config,
            "trigger_type": "manual",
            **top,
        }

    async def run_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create the job, trigger it, and return the finished run."""
        job = await self.create(body)
        reply = await self.post(f"/v2/jobs/{job['id']}/trigger")
        assert reply.status == 202, reply.body
        return await self.wait_final(reply.body["id"])

    async def events(self, run_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.get(f"/v2/runs/{run_id}/events?limit=500")).body["data"]
        return found

    def request_texts(self) -> list[str]:
        """Each request the model received, as text (to look for what it was sent)."""
        import json

        return [json.dumps(request.body) for request in self.model.requests]


def provider_for(kind: str, model: ScriptedLLM, **overrides: Any) -> ProviderConfig:
    """The ``scripted`` provider: OpenAI-style base URLs carry ``/v1``, Anthropic's do not."""
    fields: dict[str, Any] = {
        "name": "scripted",
        "type": kind,
        "base_url": model.base_url + ("/v1" if kind == "openai" else ""),
        "api_key_env": KEY_ENV,
        "model": "scripted-model",
        "timeout": 10.0,
        "max_retries": 2,
    }
    fields.update(overrides)
    return ProviderConfig(**fields)


@asynccontextmanager
async def llm_server(
    kind: str,
    tmp_path: Path,
    url: URL,
    *,
    env: dict[str, str] | None = None,
    provider: dict[str, Any] | None = None,
    **llm_fields: Any,
) -> AsyncIterator[LLM]:
    """Services with the scripted provider (``provider`` overrides its settings,
    ``llm_fields`` the LLM settings)."""
    workdir, outdir = tmp_path / "work", tmp_path / "out"
    workdir.mkdir(exist_ok=True)
    outdir.mkdir(exist_ok=True)
    async with scripted_llm() as model:
        fields: dict[str, Any] = {
            "providers": (provider_for(kind, model, **(provider or {})),),
            "default_provider": "scripted",
            "agents_dir": str(tmp_path / "agents"),
            "write_dirs": (str(outdir.resolve()),),
            "shell_allow": ("echo *",),
            "config_path": str(tmp_path / "config.yaml"),
        }
        fields.update(llm_fields)
        settings = Settings(
            db_url=url,
            auth="bearer",
            token=TOKEN,
            token_source="flag",
            shutdown_grace=1,
            llm=LLMSettings(**fields),
        )
        base_env = {**os.environ, KEY_ENV: KEY} if env is None else env
        async with open_services(settings, base_env=base_env) as services:
            app = create_app(services)
            async with app.test_app() as test_app:
                client = cast(QuartClient, test_app.test_client())
                yield LLM(
                    client=client,
                    services=services,
                    model=model,
                    kind=kind,
                    workdir=workdir,
                    outdir=outdir,
                    tmp=tmp_path,
                )
        assert not model.failures, f"the scripted provider failed: {model.failures!r}"


@pytest.fixture(params=["openai", "anthropic"])
async def llm(request: pytest.FixtureRequest, tmp_path: Path, sqlite_url: URL) -> AsyncIterator[LLM]:
    """Each test runs against the OpenAI and the Anthropic wire format."""
    async with llm_server(request.param, tmp_path, sqlite_url) as api:
        yield api
