"""Validation of ``runner_config`` for each runner type. Pure.

The raw JSON object is stored and echoed exactly as sent (unknown keys included);
these parsers check it at create/update time and give the runner typed values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from termjobs.model import JSONValue, RunnerType

DEFAULT_KILL_GRACE_SECONDS = 5.0
#: Variables of the server that a job must never see nor set.
PROTECTED_ENV = frozenset({"TERM_LLM_SERVE_TOKEN", "TERM_LLM_JOBS_TOKEN", "TERM_LLM_JOBS_DB"})


@dataclass(frozen=True, slots=True)
class ProgramConfig:
    """How to start a program run (see the README's program runner section)."""

    command: str
    args: tuple[str, ...] = ()
    cwd: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    shell: bool = False
    kill_grace_seconds: float = DEFAULT_KILL_GRACE_SECONDS


#: The tools an agent may have (``runner_config.tools`` and agents' ``tools``).
LLM_TOOLS = ("shell", "read_file", "write_file", "list_dir")
STOP_WHEN = ("done", "timeout")
MAX_TURNS_LIMIT = 1000
#: A fixed ``session_id``: it names a stored conversation and appears in URLs.
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMConfig:
    """An ``llm`` runner configuration (see the README's LLM jobs section).

    ``tools``, ``max_turns``, ``provider``, ``system_message`` ``None`` mean "the
    server's or the agent's"; ``read_dir``/``write_dir`` are added to the server's.
    """

    agent_name: str
    instructions: str
    cwd: str
    provider: str | None = None
    model: str | None = None
    tools: tuple[str, ...] | None = None
    read_dir: tuple[str, ...] = ()
    write_dir: tuple[str, ...] = ()
    max_turns: int | None = None
    max_output_tokens: int | None = None
    system_message: str | None = None
    persist_session: bool = True
    session_id: str | None = None
    session_name: str | None = None
    progressive: bool = False
    stop_when: str | None = None
    continue_with: str | None = None
    notify_when_done: bool = False


def _object(value: JSONValue, runner: str) -> dict[str, JSONValue]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"runner_config must be a JSON object for {runner} jobs")
    return value


def _string(obj: dict[str, JSONValue], key: str, prefix: str) -> str | None:
    raw = obj.get(key)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise ValueError(f"{prefix}.{key} must be a string")
    return raw


def _string_list(obj: dict[str, JSONValue], key: str, prefix: str) -> list[str]:
    raw = obj.get(key)
    if raw is None:
        return []
    strings = [item for item in raw if isinstance(item, str)] if isinstance(raw, list) else []
    if not isinstance(raw, list) or len(strings) != len(raw):
        raise ValueError(f"{prefix}.{key} must be an array of strings")
    return strings


def _env(obj: dict[str, JSONValue]) -> tuple[tuple[str, str], ...]:
    raw = obj.get("env")
    pairs: list[tuple[str, str]] = []
    if isinstance(raw, dict):
        for key, value in raw.items():
            if not isinstance(value, str):
                raise ValueError("runner_config.env values must be strings")
            pairs.append((str(key), value))
    else:
        for item in _string_list(obj, "env", "runner_config"):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f'runner_config.env entries must look like "KEY=VALUE" (got {item!r})')
            pairs.append((key, value))
    for key, _ in pairs:
        if not key or "=" in key or "\0" in key:
            raise ValueError(f"runner_config.env has an invalid variable name {key!r}")
    return tuple(pairs)


def parse_program_config(value: JSONValue) -> ProgramConfig:
    """Validate a ``program`` runner configuration."""
    obj = _object(value, "program")
    prefix = "runner_config"
    command = _string(obj, "command", prefix)
    if command is None or not command.strip():
        raise ValueError("runner_config.command is required for program jobs")
    shell = obj.get("shell", False)
    if not isinstance(shell, bool):
        raise ValueError("runner_config.shell must be true or false")
    grace = obj.get("kill_grace_seconds", DEFAULT_KILL_GRACE_SECONDS)
    if (
        isinstance(grace, bool)
        or not isinstance(grace, int | float)
        or not 0 <= grace <= 3600  # also false for NaN
    ):
        raise ValueError("runner_config.kill_grace_seconds must be a number from 0 to 3600")
    cwd = _string(obj, "cwd", prefix)
    return ProgramConfig(
        command=command,
        args=tuple(_string_list(obj, "args", prefix)),
        cwd=cwd if cwd and cwd.strip() else None,
        env=_env(obj),
        shell=shell,
        kill_grace_seconds=float(grace),
    )


def parse_llm_config(value: JSONValue) -> LLMConfig:
    """Validate an ``llm`` runner configuration (unknown keys are kept, not read)."""
    obj = _object(value, "llm")
    prefix = "llm runner_config"
    found: dict[str, str] = {}
    for key in ("agent_name", "instructions", "cwd"):
        text = _string(obj, key, prefix)
        if text is None or not text.strip():
            raise ValueError(f"{prefix}.{key} is required")
        found[key] = text
    progressive = _bool(obj, "progressive", prefix)
    stop_when = _blank_none(_string(obj, "stop_when", prefix))
    continue_with = _blank_none(_string(obj, "continue_with", prefix))
    _check_progressive(progressive, stop_when, continue_with, prefix)
    return LLMConfig(
        agent_name=found["agent_name"].strip(),
        instructions=found["instructions"],
        cwd=found["cwd"].strip(),
        provider=_blank_none(_string(obj, "provider", prefix)),
        model=_blank_none(_string(obj, "model", prefix)),
        tools=parse_tool_list(_string(obj, "tools", prefix), f"{prefix}.tools"),
        read_dir=tuple(_dirs(obj, "read_dir", prefix)),
        write_dir=tuple(_dirs(obj, "write_dir", prefix)),
        max_turns=_positive(obj, "max_turns", prefix, MAX_TURNS_LIMIT),
        max_output_tokens=_positive(obj, "max_output_tokens", prefix, 1_000_000),
        system_message=_blank_none(_string(obj, "system_message", prefix)),
        persist_session=_bool(obj, "persist_session", prefix, default=True),
        session_id=_session_id(obj, prefix),
        session_name=_blank_none(_string(obj, "session_name", prefix)),
        progressive=progressive,
        stop_when=stop_when,
        continue_with=continue_with,
        notify_when_done=_bool(obj, "notify_when_done", prefix),
    )


def parse_tool_list(raw: str | None, where: str) -> tuple[str, ...] | None:
    """``all`` (``None``: no narrowing), ``none`` or a comma list of tool names."""
    if raw is None or not raw.strip() or raw.strip().lower() == "all":
        return None
    if raw.strip().lower() == "none":
        return ()
    names = [part.strip() for part in raw.split(",") if part.strip()]
    for name in names:
        if name not in LLM_TOOLS:
            raise ValueError(
                f"{where}: unknown tool {name!r} "
                f"(tools: all, none, or a comma list of {', '.join(LLM_TOOLS)})"
            )
    return tuple(dict.fromkeys(names))


def _check_progressive(
    progressive: bool, stop_when: str | None, continue_with: str | None, prefix: str
) -> None:
    if stop_when is not None and not progressive:
        raise ValueError(f"{prefix}.stop_when requires progressive: true")
    if continue_with is not None and not progressive:
        raise ValueError(f"{prefix}.continue_with requires progressive: true")
    if stop_when is not None and stop_when not in STOP_WHEN:
        raise ValueError(f"{prefix}.stop_when must be one of: done, timeout (got {stop_when!r})")
    if continue_with is not None and stop_when == "done":
        raise ValueError(f"{prefix}.continue_with requires stop_when: timeout")


def _blank_none(text: str | None) -> str | None:
    return text if text is not None and text.strip() else None


def _bool(obj: dict[str, JSONValue], key: str, prefix: str, *, default: bool = False) -> bool:
    raw = obj.get(key)
    if raw is None:
        return default
    if not isinstance(raw, bool):
        raise ValueError(f"{prefix}.{key} must be true or false")
    return raw


def _positive(obj: dict[str, JSONValue], key: str, prefix: str, high: int) -> int | None:
    raw = obj.get(key)
    if raw is None or raw == 0:
        return None  # 0 means "the default", as upstream
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= high:
        raise ValueError(f"{prefix}.{key} must be a whole number from 1 to {high}")
    return raw


def _dirs(obj: dict[str, JSONValue], key: str, prefix: str) -> list[str]:
    if isinstance(obj.get(key), str):
        text = str(obj[key])
        return [text] if text.strip() else []
    return [item for item in _string_list(obj, key, prefix) if item.strip()]


def _session_id(obj: dict[str, JSONValue], prefix: str) -> str | None:
    raw = _blank_none(_string(obj, "session_id", prefix))
    if raw is not None and not _SESSION_ID.fullmatch(raw.strip()):
        raise ValueError(
            f"{prefix}.session_id must be 1-64 letters, digits or . _ : - (starting with a letter or digit)"
        )
    return raw.strip() if raw else None


def llm_with_overrides(config: LLMConfig, overrides: JSONValue) -> LLMConfig:
    """``config`` as one run overrides it: its own ``instructions``."""
    instructions = overrides.get("instructions") if isinstance(overrides, dict) else None
    return replace(config, instructions=instructions) if isinstance(instructions, str) else config


def with_overrides(config: ProgramConfig, overrides: JSONValue) -> ProgramConfig:
    """``config`` as one run overrides it: ``args`` replace the job's, ``env`` is added
    after the job's (never the server's protected variables)."""
    if not isinstance(overrides, dict):
        return config
    args, env = overrides.get("args"), overrides.get("env")
    if isinstance(args, list):
        config = replace(config, args=tuple(str(arg) for arg in args))
    if isinstance(env, dict):
        added = tuple((str(k), str(v)) for k, v in env.items() if k not in PROTECTED_ENV)
        config = replace(config, env=config.env + added)
    return config


RunnerConfig = ProgramConfig | LLMConfig


def parse_runner_config(runner_type: RunnerType, value: JSONValue) -> RunnerConfig:
    """The typed configuration; ``ValueError`` with a fix-it message if unusable."""
    match runner_type:
        case RunnerType.PROGRAM:
            return parse_program_config(value)
        case RunnerType.LLM:
            return parse_llm_config(value)
