"""The provider key never appears in a run, an event, a session, the database or a log
line: not when the provider echoes it in an error, not from a shell tool, not from a
program job."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import trio
from sqlalchemy.engine import URL

from tests.llm.conftest import KEY, KEY_ENV, LLM, llm_server
from tests.scripted_llm import ToolCall, Turn

LIMIT_S = 30


async def test_the_key_is_never_stored_or_logged(llm: LLM, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(LIMIT_S):
        llm.model.add(
            Turn(tool_calls=[ToolCall("s", "shell", {"command": f"echo key=${KEY_ENV} env-done"})]),
            Turn(text="The key is not visible to me."),
            Turn(status=401, error=f"Incorrect API key provided: {KEY}. Check it."),
        )
        first = await llm.run_job(llm.llm_job("shell-job"))
        assert first["status"] == "succeeded"
        assert "key= env-done" in json.dumps(llm.model.requests[1].body)  # the variable was empty
        second = await llm.run_job(llm.llm_job("echoing-provider"))
        assert second["status"] == "failed" and "[redacted]" in second["error"]
        program = {
            "name": "printenv",
            "runner_type": "program",
            "runner_config": {"command": "sh", "args": ["-c", f"echo key=${KEY_ENV}"]},
            "trigger_type": "manual",
        }
        third = await llm.run_job(program)
        assert third["status"] == "succeeded" and third["stdout"] == "key=\n"

        stored: list[str] = []
        for run in (first, second, third):
            stored.append(json.dumps((await llm.get(f"/v2/runs/{run['id']}")).body))
            stored.append(json.dumps(await llm.events(run["id"])))
        stored.append(json.dumps((await llm.get(f"/v2/sessions/{first['session_id']}")).body))
        assert not [text for text in stored if KEY in text]
        database = Path(llm.services.settings.db_url.database or "")
        for path in database.parent.glob(database.name + "*"):  # the file and its WAL
            assert KEY.encode() not in path.read_bytes(), path
        logged = [record.getMessage() for record in caplog.records]
        assert logged and not [line for line in logged if KEY in line]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_shell_tools_cannot_read_the_servers_token(kind: str, tmp_path: Path, sqlite_url: URL) -> None:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        KEY_ENV: KEY,
        "TERM_LLM_SERVE_TOKEN": "serve-token-secret",
        "TERM_LLM_JOBS_TOKEN": "jobs-token-secret",
        "HARMLESS": "visible",
    }
    async with llm_server(kind, tmp_path, sqlite_url, env=env) as llm:
        with trio.fail_after(LIMIT_S):
            command = "echo serve=$TERM_LLM_SERVE_TOKEN jobs=$TERM_LLM_JOBS_TOKEN other=$HARMLESS"
            llm.model.add(Turn(tool_calls=[ToolCall("s", "shell", {"command": command})]), Turn(text="ok"))
            run = await llm.run_job(llm.llm_job())
            assert run["status"] == "succeeded"
            sent = json.dumps(llm.model.requests[1].body)  # the tool result went back to the model
            assert "serve= jobs= other=visible" in sent
            assert "token-secret" not in sent
