"""The llm runner's API surface: agent checks on create and PATCH, GET /v2/agents,
GET /v2/sessions, notify_origin handling, and how configuration problems fail a run."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
import trio
from sqlalchemy.engine import URL

from termjobs.testing import free_port
from tests.http.conftest import AUTH
from tests.llm.conftest import KEY, KEY_ENV, LLM, llm_server
from tests.scripted_llm import Turn

LIMIT_S = 30
REVIEWER_YAML = """\
description: Reads the nightly notes
system_prompt: You review notes.
tools: [read_file]
provider: scripted
model: special-model
max_turns: 7
"""


async def test_unknown_agents_are_refused_on_create_and_on_patch(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        refused = await llm.post("/v2/jobs", llm.llm_job(agent_name="nobody"))
        assert refused.status == 400 and refused.error.startswith("load agent: agent not found: nobody")
        assert "built-in agents: developer, reviewer" in refused.error
        path = await llm.post("/v2/jobs", llm.llm_job(agent_name=str(llm.tmp / "missing.yaml")))
        assert path.status == 400 and path.error.startswith("load agent from path:")
        job = await llm.create(llm.llm_job())
        patched = await llm.call(
            "PATCH",
            f"/v2/jobs/{job['id']}",
            {"runner_config": llm.llm_job(agent_name="ghost")["runner_config"]},
        )
        assert patched.status == 400 and "agent not found: ghost" in patched.error
        provider = await llm.post("/v2/jobs", llm.llm_job(provider="elsewhere:model-x"))
        assert provider.status == 400 and "unknown provider 'elsewhere'" in provider.error
        missing = await llm.post("/v2/jobs", {**llm.llm_job(), "runner_config": {"agent_name": "developer"}})
        assert missing.status == 400 and missing.error == "llm runner_config.instructions is required"


async def test_a_job_whose_agent_file_went_away_can_still_be_paused(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        agents = llm.tmp / "agents"
        agents.mkdir()
        (agents / "notes.yaml").write_text(REVIEWER_YAML)
        job = await llm.create(llm.llm_job(agent_name="notes"))
        (agents / "notes.yaml").unlink()
        paused = await llm.post(f"/v2/jobs/{job['id']}/pause")
        assert paused.status == 200 and paused.body["enabled"] is False


async def test_agents_lists_built_ins_and_files(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        agents = llm.tmp / "agents"
        agents.mkdir()
        (agents / "notes.yaml").write_text(REVIEWER_YAML)
        (agents / "broken.yaml").write_text("tools: [fly]\n")
        reply = await llm.get("/v2/agents")
        assert reply.status == 200 and reply.body["object"] == "list"
        by_name = {agent["name"]: agent for agent in reply.body["data"]}
        assert sorted(by_name) == ["developer", "notes", "reviewer"]  # the broken file is left out
        assert by_name["notes"] == {
            "name": "notes",
            "description": "Reads the nightly notes",
            "tools": ["read_file"],
            "provider": "scripted",
            "model": "special-model",
            "source": str(agents / "notes.yaml"),
        }
        assert by_name["developer"]["tools"] == ["shell", "read_file", "write_file", "list_dir"]
        assert by_name["reviewer"]["tools"] == ["read_file", "list_dir"]
        assert by_name["reviewer"]["source"] == "builtin"


async def test_a_file_agent_sets_model_tools_and_turns(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        agents = llm.tmp / "agents"
        agents.mkdir()
        (agents / "notes.yaml").write_text(REVIEWER_YAML)
        llm.model.add(Turn(text="reviewed"))
        run = await llm.run_job(llm.llm_job(agent_name="notes"))
        assert run["status"] == "succeeded"
        body = llm.model.requests[0].body
        assert body["model"] == "special-model"
        names = [t["function"]["name"] if "function" in t else t["name"] for t in body["tools"]]
        assert names == ["read_file"]
        assert "You review notes." in json.dumps(body)


async def test_unknown_sessions_are_a_json_404(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        reply = await llm.get("/v2/sessions/no-such-session")
        assert reply.status == 404 and reply.body == {
            "error": {"message": "session not found", "type": "invalid_request_error"}
        }


async def _create_from(llm: LLM, body: dict[str, Any], peer: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await llm.client.open(
        "/v2/jobs",
        method="POST",
        headers={**AUTH, "Content-Type": "application/json", **headers},
        data=json.dumps(body).encode(),
        scope_base={"client": (peer, 50000)},
    )
    assert response.status_code == 201, await response.get_data(as_text=True)
    created: dict[str, Any] = json.loads(await response.get_data(as_text=True))
    return created


async def test_notify_origin_comes_only_from_loopback_headers(llm: LLM) -> None:
    with trio.fail_after(LIMIT_S):
        web = {"X-Term-LLM-Queue-Agent-Origin": "web", "X-Term-LLM-Queue-Agent-Session-ID": "chat-7"}
        planted = {"origin": "web", "session_id": "someone-else"}
        body = llm.llm_job("a", notify_when_done=True, notify_origin=planted)
        job = await _create_from(llm, body, "127.0.0.1", web)
        config = job["runner_config"]
        assert config["notify_origin"] == {"origin": "web", "session_id": "chat-7"}
        assert list(config) == sorted(config)  # rewritten: keys sorted
        remote = await _create_from(
            llm, llm.llm_job("b", notify_when_done=True, notify_origin=planted), "10.1.2.3", web
        )
        assert (
            "notify_origin" not in remote["runner_config"]
            and remote["runner_config"]["notify_when_done"] is True
        )
        telegram = {
            "X-Term-LLM-Queue-Agent-Origin": "telegram",
            "X-Term-LLM-Queue-Agent-Telegram-Chat-ID": "-100",
        }
        chat = await _create_from(llm, llm.llm_job("c", notify_when_done=True), "::1", telegram)
        assert chat["runner_config"]["notify_origin"] == {"origin": "telegram", "telegram_chat_id": -100}
        quiet = await _create_from(llm, llm.llm_job("d", notify_origin=planted), "127.0.0.1", web)
        assert "notify_origin" not in quiet["runner_config"]  # no notify_when_done: no origin
        untouched = llm.llm_job("e")
        kept = await _create_from(llm, untouched, "127.0.0.1", {})
        assert list(kept["runner_config"]) == list(untouched["runner_config"])  # not rewritten
        patched = await llm.call(
            "PATCH",
            f"/v2/jobs/{kept['id']}",
            {"runner_config": {**untouched["runner_config"], "notify_origin": planted}},
        )
        assert patched.status == 200 and "notify_origin" not in patched.body["runner_config"]


async def _run_once(llm: LLM) -> dict[str, Any]:
    with trio.fail_after(LIMIT_S):
        # A new name each time: some tests open several servers on one database.
        return await llm.run_job(llm.llm_job(f"job-{secrets.token_hex(4)}"))


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_configuration_problems_fail_runs_with_a_fix(
    kind: str, tmp_path: Path, sqlite_url: URL
) -> None:
    async with llm_server(kind, tmp_path, sqlite_url, providers=(), default_provider=None) as llm:
        run = await _run_once(llm)
        assert run["status"] == "failed" and run["error"].startswith("no LLM provider configured: add one")
        assert "Configuring providers" in run["error"]
    async with llm_server(kind, tmp_path, sqlite_url, env={}) as llm:
        run = await _run_once(llm)
        assert run["status"] == "failed"
        assert run["error"] == (
            f'provider "scripted": the environment variable {KEY_ENV} is not set; '
            f"export {KEY_ENV} in the environment of term-llm serve and restart it"
        )
        assert llm.model.requests == []


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_provider_errors_name_the_provider_and_the_fix(
    kind: str, tmp_path: Path, sqlite_url: URL
) -> None:
    async with llm_server(kind, tmp_path, sqlite_url) as llm:
        llm.model.add(Turn(status=401, error=f"invalid x-api-key {KEY}"))
        run = await _run_once(llm)
        assert run["error"] == (
            f'provider "scripted": 401 invalid x-api-key [redacted]; check the key in ${KEY_ENV}'
        )
        llm.model.add(Turn(status=429, error="rate limited", headers={"retry-after-ms": "10"}, repeat=True))
        run = await _run_once(llm)
        assert run["error"] == (
            'provider "scripted": 429 rate limited; still rate-limited after 2 retries; '
            "try later or raise max_retries"
        )
        llm.model.script.clear()
        llm.model.add(Turn(status=404, error="model not found"))
        run = await _run_once(llm)
        assert run["error"].startswith('provider "scripted": 404 model not found; check the model name')
        assert 'model "scripted-model"' in run["error"]
    closed = free_port()
    unreachable = {"base_url": f"http://127.0.0.1:{closed}", "max_retries": 0}
    async with llm_server(kind, tmp_path, sqlite_url, provider=unreachable) as llm:
        run = await _run_once(llm)
        assert run["status"] == "failed"
        assert run["error"].startswith(f'provider "scripted": cannot reach http://127.0.0.1:{closed}')
        assert run["error"].endswith("is the server running and is base_url right?")


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_keyless_provider_sends_no_key(kind: str, tmp_path: Path, sqlite_url: URL) -> None:
    leaky = {KEY_ENV: KEY, "OPENAI_API_KEY": "sk-env-openai", "ANTHROPIC_API_KEY": "sk-env-anthropic"}
    async with llm_server(kind, tmp_path, sqlite_url, env=leaky, provider={"api_key_env": None}) as llm:
        llm.model.add(Turn(text="local answer"))
        run = await _run_once(llm)
        assert run["status"] == "succeeded" and run["response"] == "local answer"
        (request,) = llm.model.requests
        assert not {"authorization", "x-api-key"} & set(request.headers)


async def test_servers_that_report_no_usage_get_an_estimate(tmp_path: Path, sqlite_url: URL) -> None:
    async with llm_server("openai", tmp_path, sqlite_url) as llm:
        llm.model.add(Turn(text="one two three", chunks=3, usage=None))
        run = await _run_once(llm)
        assert run["status"] == "succeeded" and run["output_tokens"] == 3 and run["input_tokens"] > 50
        (turn,) = [e for e in await llm.events(run["id"]) if e["event_type"] == "turn_complete"]
        assert turn["data"] == {
            "turn": 1,
            "input_tokens": run["input_tokens"],
            "output_tokens": 3,
            "estimated": True,
        }
        assert turn["message"].endswith("out tokens, estimated)")
