"""Validation of ``runner_config`` for each runner type. Pure.

The raw JSON object is stored and echoed exactly as sent (unknown keys included);
these parsers check it at create/update time and give the runner typed values.
"""

from __future__ import annotations

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


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """The required part of an ``llm`` runner configuration."""

    agent_name: str
    instructions: str
    cwd: str


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
    """Validate the required fields of an ``llm`` runner configuration."""
    obj = _object(value, "llm")
    found: dict[str, str] = {}
    for key in ("agent_name", "instructions", "cwd"):
        text = _string(obj, key, "llm runner_config")
        if text is None or not text.strip():
            raise ValueError(f"llm runner_config.{key} is required")
        found[key] = text
    return LLMConfig(**found)


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
