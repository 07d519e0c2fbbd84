"""The CLI's LLM parts: the ``create --llm`` shortcut, the agents table, and a
readable view of an LLM run (``jobs run get``). Pure, apart from reading the cwd."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Sequence
from typing import Any, TypeGuard

import asyncclick as click

from termjobs.cli import render
from termjobs.cli.client import Agent, Run
from termjobs.cli.render import Cell, Column, Style

AGENT_COLUMNS = (
    Column("NAME"),
    Column("TOOLS"),
    Column("PROVIDER"),
    Column("MODEL"),
    Column("SOURCE", 40),
    Column("DESCRIPTION", 60),
)


def shortcut_payload(
    *,
    agent: str | None,
    instructions: str | None,
    cwd: str | None,
    name: str | None,
    file: str | None,
    data: str | None,
    now: dt.datetime,
) -> bytes:
    """The job ``create --llm AGENT --instructions TEXT [--cwd DIR] [--name NAME]``
    describes: a manual llm job (``cwd`` defaults to the current directory)."""
    if file is not None or data is not None:
        raise click.UsageError("use either --file/--data or --llm/--instructions, not both")
    if not agent or not agent.strip():
        raise click.UsageError("--instructions needs --llm AGENT")
    if not instructions or not instructions.strip():
        raise click.UsageError("--llm needs --instructions TEXT")
    directory = os.path.abspath(cwd or os.getcwd())
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", agent.strip()).strip("-") or "agent"
    body = {
        "name": name or f"agent-{slug[-40:]}-{now:%Y%m%d-%H%M%S}",
        "runner_type": "llm",
        "runner_config": {"agent_name": agent.strip(), "instructions": instructions, "cwd": directory},
        "trigger_type": "manual",
    }
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def agents_table(agents: Sequence[Agent], style: Style) -> str:
    """The ``jobs agents`` table; ``No agents found.`` when empty."""
    if not agents:
        return "No agents found.\n"
    rows: list[list[Cell | str]] = [
        [
            agent["name"],
            ",".join(agent.get("tools", [])) or "-",
            agent.get("provider") or "-",
            agent.get("model") or "-",
            agent.get("source", "-"),
            agent.get("description") or "-",
        ]
        for agent in agents
    ]
    return render.table(AGENT_COLUMNS, rows, style)


class LlmRun(Run, total=False):
    """A run as the API returns it, with what an llm run adds."""

    session_id: str
    turn_count: int
    input_tokens: int
    output_tokens: int
    thinking: str
    response: str


def is_llm_run(run: Run) -> TypeGuard[LlmRun]:
    """Whether the run has what an LLM run reports (turns, a response or thinking)."""
    return any(run.get(key) for key in ("turn_count", "response", "thinking"))


def run_view(run: LlmRun, style: Style, tz: dt.tzinfo | None = None) -> str:
    """An LLM run for a person: status line, times, turns and tokens, then the
    thinking and the response as the model wrote them."""
    status = run["status"]
    head = f"run {run['id']}  job {run['job_id']}  {style.paint(status, render.status_tone(status))}"
    if run.get("exit_reason"):
        head += f" ({run['exit_reason']})"
    lines = [head]
    started, finished = run.get("started_at"), run.get("finished_at")
    times = f"started {render.local_time(started, tz)}"
    if finished:
        times += f"  finished {render.local_time(finished, tz)}"
        begin, end = render.parse_time(started), render.parse_time(finished)
        if begin and end:
            times += f" ({(end - begin).total_seconds():.1f}s)"
    lines.append(times)
    usage = (
        f"turns {run.get('turn_count', 0)}  tokens {run.get('input_tokens', 0)} in / "
        f"{run.get('output_tokens', 0)} out"
    )
    if run.get("session_id"):
        usage += f"  session {run['session_id']}"
    if run.get("truncated"):
        usage += "  (truncated)"
    lines.append(usage)
    if run.get("error"):
        lines.append(style.paint(f"error: {render.one_line(run['error'])}", "bad"))
    text = "\n".join(lines) + "\n"
    for title, body in (("thinking", run.get("thinking")), ("response", run.get("response"))):
        if body:
            text += f"\n{style.paint(f'--- {title} ---', 'header')}\n{_printable(body)}"
            text += "" if body.endswith("\n") else "\n"
    return text


def _printable(text: str) -> str:
    # Keep newlines and tabs; show other control characters (escape sequences a
    # model could produce) escaped, as every other CLI output does.
    return "\n".join(render.one_line(line).replace("\\t", "\t") for line in text.split("\n"))


def agents_json(agents: Sequence[Agent]) -> list[dict[str, Any]]:
    """``jobs agents --json``: the agents as the server described them."""
    return [dict(agent) for agent in agents]
