"""Pure parts of the llm runner: permissions, notify_origin, messages, progressive
helpers, and the CLI's rendering of agents and LLM runs."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from termjobs.cli import llm as cli_llm
from termjobs.cli.llm import LlmRun
from termjobs.cli.render import Style
from termjobs.model import JSONObject
from termjobs.runners.llm.messages import NOT_RUN, Message, ToolCall, Usage, with_tool_results
from termjobs.runners.llm.origin import is_loopback, sanitize_runner_config
from termjobs.runners.llm.permissions import Denied, Permissions
from termjobs.runners.llm.progressive import remaining_text, reserve_for


@pytest.fixture
def roots(tmp_path: Path) -> Permissions:
    for name in ("work", "docs", "out", "outside"):
        (tmp_path / name).mkdir()
    (tmp_path / "outside" / "secret").write_text("x")
    os.symlink(tmp_path / "outside" / "secret", tmp_path / "work" / "link")
    os.symlink(tmp_path / "outside", tmp_path / "work" / "dirlink")
    return Permissions.build(
        str(tmp_path / "work"),
        read_dirs=("../docs",),
        write_dirs=(str(tmp_path / "out"),),
        shell_patterns=("git log*", "echo *"),
        yolo=False,
    )


def test_reads_stay_under_cwd_the_read_and_the_write_dirs(roots: Permissions, tmp_path: Path) -> None:
    assert roots.readable("a.txt") == str((tmp_path / "work" / "a.txt").resolve())
    assert roots.readable("../docs/x.md").endswith("/docs/x.md")  # a job read_dir, relative to cwd
    assert roots.readable(str(tmp_path / "out" / "r.md")).endswith("/out/r.md")
    for escape in ("../outside/secret", "link", "dirlink/secret", "/etc/passwd", "sub/../../outside"):
        with pytest.raises(Denied, match="outside the readable directories"):
            roots.readable(escape)
    with pytest.raises(Denied, match="NUL"):
        roots.readable("a\x00b")


def test_writes_stay_under_the_write_dirs(roots: Permissions, tmp_path: Path) -> None:
    assert roots.writable(str(tmp_path / "out" / "new" / "r.md")).endswith("/out/new/r.md")
    for escape in ("a.txt", str(tmp_path / "out" / ".." / "work" / "x"), str(tmp_path / "outputs")):
        with pytest.raises(Denied, match="outside the writable directories"):
            roots.writable(escape)


def test_shell_commands_must_match_a_pattern_unless_yolo(roots: Permissions) -> None:
    roots.check_shell("git log --oneline -5")
    roots.check_shell("echo hi")
    with pytest.raises(Denied, match=r"matches none of the --shell-allow patterns \(git log\*, echo \*\)"):
        roots.check_shell("git push")
    none = Permissions.build("/", read_dirs=(), write_dirs=(), shell_patterns=(), yolo=False)
    with pytest.raises(Denied, match="no --shell-allow pattern"):
        none.check_shell("ls")
    yolo = Permissions.build("/", read_dirs=(), write_dirs=(), shell_patterns=(), yolo=True)
    yolo.check_shell("rm -rf /nowhere")
    assert yolo.writable("/etc/anything") == "/etc/anything"


WEB = {"x-term-llm-queue-agent-origin": "web", "x-term-llm-queue-agent-session-id": "s1"}


def test_notify_origin_is_stripped_and_injected_only_from_loopback() -> None:
    planted: JSONObject = {
        "agent_name": "a",
        "notify_when_done": True,
        "notify_origin": {"origin": "web", "session_id": "x"},
    }
    assert sanitize_runner_config(planted, WEB, loopback=True) == {
        "agent_name": "a",
        "notify_origin": {"origin": "web", "session_id": "s1"},
        "notify_when_done": True,
    }
    assert sanitize_runner_config(planted, WEB, loopback=False) == {
        "agent_name": "a",
        "notify_when_done": True,
    }
    bad_chat = {"x-term-llm-queue-agent-origin": "telegram", "x-term-llm-queue-agent-telegram-chat-id": "0"}
    rewritten = sanitize_runner_config(planted, bad_chat, loopback=True)
    assert isinstance(rewritten, dict) and "notify_origin" not in rewritten
    plain: JSONObject = {"z": 1, "a": 2}
    kept = sanitize_runner_config(plain, WEB, loopback=True)
    assert kept is plain and list(plain) == ["z", "a"]
    assert sanitize_runner_config(None, WEB, loopback=True) is None
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.0.2")
    assert not is_loopback("10.0.0.1") and not is_loopback(None) and not is_loopback("garbage")


def test_messages_round_trip_and_unanswered_calls_are_answered() -> None:
    call = ToolCall("c1", "read_file", '{"path": "a"}')
    assistant = Message(role="assistant", text="t", thinking="th", tool_calls=(call,), usage=Usage(3, 4))
    assert Message.from_json(assistant.to_json()) == assistant
    assert Message.from_json({"role": "system"}) is None
    history = [Message.user("go"), assistant, Message.user("again")]
    repaired = with_tool_results(history)
    assert [m.role for m in repaired] == ["user", "assistant", "tool", "user"]
    assert repaired[2].tool_call_id == "c1" and repaired[2].text == NOT_RUN and repaired[2].is_error
    answered = [*history[:2], Message.tool_result(call, "ok", is_error=False)]
    assert with_tool_results(answered) == answered
    with pytest.raises(ValueError, match="not valid JSON"):
        ToolCall("c", "x", "{oops").parsed_arguments()


def test_progressive_budget_helpers() -> None:
    assert (
        reserve_for(300) == 30 and reserve_for(20) == 5 and reserve_for(8) == 4 and reserve_for(7200) == 300
    )
    assert remaining_text(270.9) == "4m30s remaining. " and remaining_text(3) == "3s remaining. "
    assert remaining_text(3725) == "1h2m5s remaining. " and remaining_text(-5) == "0s remaining. "


def test_the_llm_shortcut_builds_a_manual_llm_job(tmp_path: Path) -> None:
    now = dt.datetime(2026, 3, 1, 14, 5, 1, tzinfo=dt.UTC)
    payload = cli_llm.shortcut_payload(
        agent="reviewer",
        instructions="Review it.",
        cwd=str(tmp_path),
        name=None,
        file=None,
        data=None,
        now=now,
    )
    assert json.loads(payload) == {
        "name": "agent-reviewer-20260301-140501",
        "runner_type": "llm",
        "runner_config": {"agent_name": "reviewer", "instructions": "Review it.", "cwd": str(tmp_path)},
        "trigger_type": "manual",
    }
    with pytest.raises(Exception, match="needs --instructions"):
        cli_llm.shortcut_payload(
            agent="a", instructions=None, cwd=None, name=None, file=None, data=None, now=now
        )


def test_an_llm_run_reads_like_a_report() -> None:
    run: LlmRun = {
        "id": "run_1",
        "job_id": "job_1",
        "attempt": 1,
        "trigger": "manual",
        "scheduled_for": "2026-03-01T12:00:00Z",
        "status": "succeeded",
        "exit_reason": "natural_completion",
        "started_at": "2026-03-01T12:00:00Z",
        "finished_at": "2026-03-01T12:00:12.5Z",
        "turn_count": 3,
        "input_tokens": 1200,
        "output_tokens": 80,
        "session_id": "20260301-120000-abc",
        "thinking": "First the log.",
        "response": "## Report\n- fixed \x1b[31m\n",
        "created_at": "2026-03-01T12:00:00Z",
        "updated_at": "2026-03-01T12:00:12Z",
    }
    text = cli_llm.run_view(run, Style(), dt.UTC)
    assert text.splitlines()[:3] == [
        "run run_1  job job_1  succeeded (natural_completion)",
        "started 2026-03-01T12:00:00+00:00  finished 2026-03-01T12:00:12+00:00 (12.5s)",
        "turns 3  tokens 1200 in / 80 out  session 20260301-120000-abc",
    ]
    assert "\n--- thinking ---\nFirst the log.\n" in text
    assert text.endswith("\n--- response ---\n## Report\n- fixed \\x1b[31m\n")
    quiet: LlmRun = {**run, "turn_count": 0, "response": "", "thinking": ""}
    assert cli_llm.is_llm_run(run) and not cli_llm.is_llm_run(quiet)


def test_the_agents_table() -> None:
    agents = [
        {
            "name": "developer",
            "description": "Dev",
            "tools": ["shell"],
            "provider": None,
            "model": None,
            "source": "builtin",
        }
    ]
    text = cli_llm.agents_table(agents, Style())  # type: ignore[arg-type]
    assert text.splitlines()[0].split() == ["NAME", "TOOLS", "PROVIDER", "MODEL", "SOURCE", "DESCRIPTION"]
    assert text.splitlines()[1].split() == ["developer", "shell", "-", "-", "builtin", "Dev"]
    assert cli_llm.agents_table([], Style()) == "No agents found.\n"
