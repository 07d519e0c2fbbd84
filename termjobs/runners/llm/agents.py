"""Agents: who the model is told to be, and which tools it may use.

An agent is a YAML file ``<agents_dir>/<name>.yaml``::

    description: Reviews the day's commits and writes a short report
    system_prompt: |
      You are a careful reviewer. ...
    tools: [read_file, list_dir, shell]     # a subset of shell, read_file, write_file, list_dir
    provider: claude                        # optional: a configured provider
    model: claude-sonnet-4-5                # optional
    max_turns: 30                           # optional

or one of the built-ins, ``developer`` (all four tools) and ``reviewer`` (read-only
tools). A file named like a built-in replaces it. A job's ``agent_name`` may also be a
path to such a file (any value containing ``/``).

Files are read when an agent is looked up, so agents can be added or edited without
restarting the server. Files are small and read inline (like SQLite point reads).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from termjobs.runners.config import LLM_TOOLS, MAX_TURNS_LIMIT

logger = logging.getLogger(__name__)

BUILTIN: Final = "builtin"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_KEYS: Final = frozenset({"name", "description", "system_prompt", "tools", "provider", "model", "max_turns"})
_MAX_FILE_BYTES: Final = 256 * 1024


class AgentError(ValueError):
    """An agent could not be loaded; the message starts with ``load agent``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """A loaded agent. ``source`` is ``builtin`` or the file it came from."""

    name: str
    description: str
    system_prompt: str
    tools: tuple[str, ...]
    provider: str | None = None
    model: str | None = None
    max_turns: int | None = None
    source: str = BUILTIN


BUILTIN_AGENTS: Final = {
    "developer": Agent(
        name="developer",
        description="A software developer: reads, changes and runs code in the job's working directory.",
        system_prompt=(
            "You are a careful software developer working unattended on a scheduled job. "
            "Use the tools to look at the files you need before you change anything; "
            "prefer small, verifiable steps; run commands only when they help. "
            "When you are done, answer with a short report of what you did and found."
        ),
        tools=LLM_TOOLS,
    ),
    "reviewer": Agent(
        name="reviewer",
        description="A code reviewer: reads files and directories, changes nothing.",
        system_prompt=(
            "You are a code reviewer working unattended on a scheduled job. "
            "Read what you need with the tools (you cannot change files or run commands), "
            "then answer with a concise review: what is good, what is wrong, what to do next."
        ),
        tools=("read_file", "list_dir"),
    ),
}


def agent_json(agent: Agent) -> dict[str, Any]:
    """The agent as ``GET /v2/agents`` shows it."""
    return {
        "name": agent.name,
        "description": agent.description,
        "tools": list(agent.tools),
        "provider": agent.provider,
        "model": agent.model,
        "source": agent.source,
    }


class AgentRegistry:
    """Finds agents: files in ``agents_dir`` first, then the built-ins."""

    def __init__(self, agents_dir: str | None) -> None:
        self.agents_dir = Path(agents_dir) if agents_dir else None

    def load(self, ref: str) -> Agent:
        """The agent ``ref`` names (or the file it is a path to); :class:`AgentError`."""
        ref = ref.strip()
        if "/" in ref or ref.endswith((".yaml", ".yml")):
            return load_file(Path(ref).expanduser(), path_given=True)
        if not _NAME.fullmatch(ref):
            raise AgentError(
                f"load agent: invalid agent name {ref!r} (letters, digits, . _ - or a file path)"
            )
        found = self._file_for(ref)
        if found is not None:
            return load_file(found)
        if ref in BUILTIN_AGENTS:
            return BUILTIN_AGENTS[ref]
        where = (
            f"no {ref}.yaml in {self.agents_dir}" if self.agents_dir else "no agents directory is configured"
        )
        raise AgentError(
            f"load agent: agent not found: {ref} ({where}; built-in agents: {', '.join(BUILTIN_AGENTS)}; "
            "GET /v2/agents lists them all)"
        )

    def all(self) -> list[Agent]:
        """Every agent the server knows, by name (files that do not load are logged)."""
        agents = dict(BUILTIN_AGENTS)
        for path in self._files():
            try:
                agent = load_file(path)
            except AgentError as exc:
                logger.warning("%s", exc)
                continue
            agents[agent.name] = agent
        return [agents[name] for name in sorted(agents)]

    def _file_for(self, name: str) -> Path | None:
        if self.agents_dir is None:
            return None
        for suffix in (".yaml", ".yml"):
            candidate = self.agents_dir / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def _files(self) -> list[Path]:
        if self.agents_dir is None or not self.agents_dir.is_dir():
            return []
        return sorted(p for p in self.agents_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_file(path: Path, *, path_given: bool = False) -> Agent:
    """Load one agent file (its name is the file's stem)."""
    prefix = "load agent from path" if path_given else "load agent"
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise AgentError(f"{prefix}: {path}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise AgentError(f"{prefix}: {path}: larger than {_MAX_FILE_BYTES // 1024} KiB")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AgentError(f"{prefix}: {path} is not valid YAML: {exc}") from None
    try:
        return parse_agent(data, name=path.stem, source=str(path))
    except ValueError as exc:
        raise AgentError(f"{prefix}: {path}: {exc}") from None


def parse_agent(data: object, *, name: str, source: str) -> Agent:
    """An agent from its decoded YAML; ``ValueError`` naming the bad field."""
    if not isinstance(data, dict):
        raise ValueError("an agent file must be a YAML mapping")
    unknown = sorted(str(key) for key in data if key not in _KEYS)
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(_KEYS - {'name'}))})")
    prompt = _optional_text(data, "system_prompt")
    if prompt is None:
        raise ValueError("system_prompt is required")
    tools = data.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
        raise ValueError(f"tools must be a list of tool names ({', '.join(LLM_TOOLS)})")
    for tool in tools:
        if tool not in LLM_TOOLS:
            raise ValueError(f"unknown tool {tool!r} (tools: {', '.join(LLM_TOOLS)})")
    max_turns = data.get("max_turns")
    if max_turns is not None and (
        isinstance(max_turns, bool) or not isinstance(max_turns, int) or not 1 <= max_turns <= MAX_TURNS_LIMIT
    ):
        raise ValueError(f"max_turns must be a whole number from 1 to {MAX_TURNS_LIMIT}")
    return Agent(
        name=name,
        description=_optional_text(data, "description") or "",
        system_prompt=prompt,
        tools=tuple(dict.fromkeys(tools)),
        provider=_optional_text(data, "provider"),
        model=_optional_text(data, "model"),
        max_turns=max_turns,
        source=source,
    )


def _optional_text(data: dict[Any, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text")
    return value.strip() or None
