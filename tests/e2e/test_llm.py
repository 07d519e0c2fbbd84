"""End to end: the real ``term-llm serve jobs`` process with an LLM provider from its
``--config`` file (the scripted provider, on loopback), driven by the real CLI."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import zoneinfo
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.e2e.server import Server, serve
from tests.e2e.test_cli import TERMINAL, Jobs, row, term_llm
from tests.scripted_llm import ScriptedLLM, ToolCall, Turn, scripted_llm

LIMIT_S = 60
KEY = "sk-e2e-NEVER-LOGGED-77a1"

NIGHTLY_SUMMARY = """\
name: nightly-summary
runner_type: llm
runner_config:
  agent_name: developer
  instructions: >-
    Summarize today's commits in this repository and write the summary to {out}/summary.md.
  cwd: {repo}
trigger_type: cron
trigger_config:
  expression: "0 2 * * *"
  timezone: Europe/Berlin
timeout_seconds: 600
"""


def git_repo(path: Path) -> Path:
    """A repository with two commits."""
    path.mkdir()
    env = {"GIT_AUTHOR_NAME": "Ada", "GIT_AUTHOR_EMAIL": "ada@example.com"}
    env |= {"GIT_COMMITTER_NAME": "Ada", "GIT_COMMITTER_EMAIL": "ada@example.com", "HOME": str(path)}
    subprocess.run(["git", "init", "-q"], cwd=path, check=True, env=env)
    for message in ("Add the parser", "Fix the off-by-one in the lexer"):
        with (path / "log.txt").open("a") as log:
            log.write(message + "\n")
        subprocess.run(["git", "add", "."], cwd=path, check=True, env=env)
        subprocess.run(["git", "commit", "-q", "-m", message], cwd=path, check=True, env=env)
    return path


@asynccontextmanager
async def llm_stack(tmp_path: Path, *extra: str) -> AsyncIterator[tuple[Server, ScriptedLLM, Jobs]]:
    """The scripted provider, a config naming it, and the server process using it."""
    async with scripted_llm() as model:
        config = tmp_path / "config.yaml"
        config.write_text(
            "default_provider: scripted\n"
            "providers:\n"
            f"  scripted: {{type: openai, base_url: '{model.base_url}/v1', api_key_env: E2E_LLM_KEY,"
            " model: scripted-model, max_retries: 0}\n"
            f"agents_dir: {tmp_path / 'agents'}\n"
        )
        args = ("--config", str(config), "--log-level", "debug", *extra)
        async with serve(tmp_path / "jobs.db", *args, env={"E2E_LLM_KEY": KEY}) as server:
            yield server, model, Jobs(server.url)


async def test_the_nightly_summary_seed_runs_end_to_end(tmp_path: Path) -> None:
    repo, out = git_repo(tmp_path / "repo"), tmp_path / "out"
    out.mkdir()
    with trio.fail_after(LIMIT_S):
        async with llm_stack(tmp_path, "--shell-allow", "git log*", "--write-dir", str(out)) as (
            server,
            model,
            jobs,
        ):
            model.add(
                Turn(
                    text="Looking at the log.",
                    tool_calls=[ToolCall("c1", "shell", {"command": "git log --oneline"})],
                ),
                Turn(
                    tool_calls=[
                        ToolCall(
                            "c2",
                            "write_file",
                            {"path": str(out / "summary.md"), "content": "- parser\n- lexer fix\n"},
                        )
                    ]
                ),
                Turn(text="Two commits today: the parser, and a lexer fix.", usage=(40, 12)),
            )
            spec = tmp_path / "nightly-summary.yaml"
            spec.write_text(NIGHTLY_SUMMARY.format(repo=repo, out=out))
            created = await term_llm(
                "jobs", "--server", server.url, "--token", "e2e-token", "create", "--file", str(spec)
            )
            job = created.json()
            berlin = dt.datetime.fromisoformat(job["next_run_at"]).astimezone(
                zoneinfo.ZoneInfo("Europe/Berlin")
            )
            assert (berlin.hour, berlin.minute) == (2, 0)

            followed = await jobs("trigger", "nightly-summary", "--follow")
            assert followed.code == 0, followed.err
            for expected in (
                "tool_start",
                "→ shell: git log --oneline",
                "← write_file (ok)",
                "turn_complete",
                "succeeded",
            ):
                assert expected in followed.out
            assert (out / "summary.md").read_text() == "- parser\n- lexer fix\n"
            assert "Fix the off-by-one in the lexer" in json.dumps(model.requests[1].body)  # git ran in cwd

            runs = (await jobs("--json", "runs", "nightly-summary")).json()
            run_id = runs[0]["id"]
            view = await jobs("run", "get", run_id)
            assert view.out.startswith(f"run {run_id}  job {job['id']}  succeeded (natural_completion)\n")
            assert "turns 3  tokens 60 in / 22 out" in view.out
            assert view.out.endswith(
                "--- response ---\nLooking at the log.\n\nTwo commits today: the parser, and a lexer fix.\n"
            )
            as_json = (await jobs("--json", "run", "get", run_id)).json()
            assert as_json["response"].endswith("a lexer fix.") and as_json["turn_count"] == 3
            listed = row((await jobs("list")).out, "nightly-summary")
            assert listed[:3] == ["nightly-summary", "cron", "-"] and listed[3] == "just now ok"
            session = as_json["session_id"]
            async with jobs.api() as client:
                transcript = (await client.get(f"/v2/sessions/{session}")).json()
            assert [m["role"] for m in transcript["messages"]] == [
                "user",
                "assistant",
                "tool",
                "assistant",
                "tool",
                "assistant",
            ]


async def test_agents_the_llm_shortcut_and_finished_agent_jobs_hidden(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with llm_stack(tmp_path) as (server, model, jobs):
            agents = await jobs("agents")
            assert row(agents.out, "developer")[:2] == ["developer", "shell,read_file,write_file,list_dir"]
            assert row(agents.out, "reviewer")[:2] == ["reviewer", "read_file,list_dir"]
            assert {a["name"] for a in (await jobs("--json", "agents")).json()} == {"developer", "reviewer"}

            model.add(Turn(text="Looks fine."))
            made = await jobs(
                "create",
                "--llm",
                "reviewer",
                "--instructions",
                "Review.",
                "--cwd",
                str(tmp_path),
                "--name",
                "quick-review",
            )
            job = made.json()
            assert job["runner_config"] == {
                "agent_name": "reviewer",
                "cwd": str(tmp_path),
                "instructions": "Review.",
            }
            run = (await jobs("trigger", "quick-review")).json()
            assert (await jobs.wait_run(run["id"], TERMINAL))["status"] == "succeeded"
            hidden = await jobs("list")
            assert (
                "quick-review" not in hidden.out and "1 completed once-off/agent job(s) hidden" in hidden.out
            )
            assert row((await jobs("list", "--all")).out, "quick-review")[:2] == ["quick-review", "manual"]

            unknown = await jobs("create", "--llm", "nobody", "--instructions", "x", "--cwd", str(tmp_path))
            assert unknown.code == 1 and unknown.err.startswith("Error: load agent: agent not found: nobody")
            usage = await jobs("create", "--llm", "reviewer")
            assert usage.code == 2 and "--llm needs --instructions TEXT" in usage.err

            # The key reached the provider, and nothing else: not the log (at debug
            # level), not the database.
            assert model.requests[0].headers["authorization"] == f"Bearer {KEY}"
            await server.stop()
            assert "llm providers: scripted (openai, scripted-model) [default]" in server.log
            assert KEY not in server.log
            for path in await trio.Path(tmp_path).glob("jobs.db*"):
                assert KEY.encode() not in await path.read_bytes(), path


async def test_an_unusable_config_stops_the_server_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "config.yaml"
    bad.write_text(
        "default_provider: nowhere\nproviders:\n  local: {type: openai, base_url: 'http://127.0.0.1:1/v1'}\n"
    )
    with trio.fail_after(LIMIT_S):
        result = await term_llm("serve", "jobs", "--config", str(bad), "--port", "1")
        assert result.code == 2
        assert "default_provider 'nowhere' is not a configured provider (local)" in result.err
        missing = await term_llm("serve", "jobs", "--config", str(tmp_path / "nope.yaml"))
        assert missing.code == 2 and "no such file" in missing.err
