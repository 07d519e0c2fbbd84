"""The server's LLM configuration: providers from ``config.yaml`` plus the serve flags.

Pure: parsing and validation only (``load_llm_settings`` reads the one file it is
given). API keys are never read from the file: a provider names the environment
variable that holds its key (``api_key_env``), read by the runner when a run needs it.

The file (``--config``, default ``$XDG_CONFIG_HOME/term-llm/config.yaml``)::

    default_provider: local
    providers:
      local:   {type: openai, base_url: "http://127.0.0.1:11434/v1", model: "llama3.2"}
      openai:  {type: openai, api_key_env: OPENAI_API_KEY, model: "gpt-4.1-mini"}
      claude:  {type: anthropic, api_key_env: ANTHROPIC_API_KEY, model: "claude-sonnet-4-5"}
    agents_dir: ~/.config/term-llm/agents   # optional; this is the default
    max_turns: 50                           # optional

Other top-level keys (term-llm's wider configuration) are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from termjobs.runners.config import MAX_TURNS_LIMIT, parse_tool_list

ProviderType = Literal["openai", "anthropic"]
PROVIDER_TYPES: Final = ("openai", "anthropic")
DEFAULT_BASE_URLS: Final[dict[str, str]] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
DEFAULT_MAX_TURNS: Final = 50
_PROVIDER_KEYS: Final = frozenset(
    {"type", "base_url", "api_key_env", "model", "timeout", "max_retries", "max_output_tokens"}
)


class LLMConfigError(ValueError):
    """The LLM configuration is unusable; the message says where and how to fix it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderConfig:
    """One configured provider. ``timeout`` bounds each request's wait for data
    (seconds); ``max_retries`` is the SDK's retry budget for 429/5xx/network errors."""

    name: str
    type: ProviderType
    base_url: str | None = None
    api_key_env: str | None = None
    model: str | None = None
    timeout: float = 120.0
    max_retries: int = 2
    #: cap on each answer (Anthropic needs one: 4096 when unset)
    max_output_tokens: int | None = None

    @property
    def endpoint(self) -> str:
        """The base URL requests go to."""
        return self.base_url or DEFAULT_BASE_URLS[self.type]

    def describe(self) -> str:
        """``name (type, model)`` for the start-up banner and errors."""
        return f"{self.name} ({self.type}, {self.model or 'no default model'})"


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMSettings:
    """Everything the LLM runner takes from the server's configuration and flags."""

    providers: tuple[ProviderConfig, ...] = ()
    default_provider: str | None = None
    #: ``--provider NAME[:MODEL]``: wins over agents and ``default_provider``
    provider: str | None = None
    #: where agent files are looked up (``None``: only the built-in agents)
    agents_dir: str | None = None
    read_dirs: tuple[str, ...] = ()
    write_dirs: tuple[str, ...] = ()
    shell_allow: tuple[str, ...] = ()
    #: ``--tools``: narrows every agent's tools unless a job names its own
    tools: tuple[str, ...] | None = None
    system_message: str | None = None
    yolo: bool = False
    max_turns: int = DEFAULT_MAX_TURNS
    #: the configuration file that was read (for messages), if any
    config_path: str | None = None
    shell_timeout: float = 120.0
    shell_output_limit: int = 64 * 1024

    def find(self, name: str) -> ProviderConfig | None:
        """The provider called ``name``."""
        return next((p for p in self.providers if p.name == name), None)

    @property
    def key_variables(self) -> frozenset[str]:
        """The environment variables that hold provider keys (never passed on)."""
        return frozenset(p.api_key_env for p in self.providers if p.api_key_env)

    def no_provider_message(self) -> str:
        """Why a run cannot start on a server without providers, and the fix."""
        where = self.config_path or "$XDG_CONFIG_HOME/term-llm/config.yaml"
        return (
            f"no LLM provider configured: add one under `providers:` in {where} "
            "(or pass --config FILE to term-llm serve jobs) and restart the server; "
            "see the README section 'Configuring providers'"
        )


def default_config_path(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/term-llm/config.yaml`` (``~/.config`` when unset)."""
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "term-llm" / "config.yaml"


def default_agents_dir(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/term-llm/agents``."""
    return default_config_path(env).parent / "agents"


def load_llm_settings(
    *,
    config: str | None,
    env: Mapping[str, str],
    provider: str | None = None,
    read_dirs: Sequence[str] = (),
    write_dirs: Sequence[str] = (),
    shell_allow: Sequence[str] = (),
    tools: str | None = None,
    system_message: str | None = None,
    yolo: bool = False,
) -> LLMSettings:
    """Read the configuration file and check it with the serve flags.

    An explicit ``config`` that does not exist is an error; the default one may be
    absent (a server without providers, whose llm runs fail saying so).
    """
    path = Path(config).expanduser() if config else default_config_path(env)
    data: dict[str, Any] = {}
    if path.exists():
        data = _read(path)
    elif config:
        raise LLMConfigError(f"--config {config}: no such file")
    providers = tuple(_provider(name, raw, path) for name, raw in _mapping(data, "providers", path).items())
    default = _default_provider(data, providers, path)
    agents_dir = data.get("agents_dir")
    if agents_dir is not None and not isinstance(agents_dir, str):
        raise LLMConfigError(f"{path}: agents_dir must be a directory path")
    try:
        narrowed = parse_tool_list(tools, "--tools")
    except ValueError as exc:
        raise LLMConfigError(str(exc)) from None
    settings = LLMSettings(
        providers=providers,
        default_provider=default,
        provider=_provider_flag(provider, providers),
        agents_dir=str(Path(agents_dir).expanduser()) if agents_dir else str(default_agents_dir(env)),
        read_dirs=tuple(_directory(d, "--read-dir") for d in read_dirs),
        write_dirs=tuple(_directory(d, "--write-dir") for d in write_dirs),
        shell_allow=tuple(p for p in shell_allow if p.strip()),
        tools=narrowed,
        system_message=system_message if system_message and system_message.strip() else None,
        yolo=yolo,
        max_turns=_max_turns(data, path),
        config_path=str(path),
    )
    return settings


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LLMConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise LLMConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LLMConfigError(f"{path}: the configuration must be a YAML mapping")
    return data


def _mapping(data: Mapping[str, Any], key: str, path: Path) -> dict[str, Any]:
    raw = data.get(key)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise LLMConfigError(f"{path}: {key} must be a mapping of names to settings")
    return raw


def _provider(name: object, raw: object, path: Path) -> ProviderConfig:
    where = f"{path}: providers.{name}"
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise LLMConfigError(f"{where}: a provider name must be a non-empty string without ':'")
    if not isinstance(raw, dict):
        raise LLMConfigError(f"{where} must be a mapping (type, base_url, api_key_env, model)")
    if "api_key" in raw:
        raise LLMConfigError(
            f"{where}.api_key: keys are never read from the configuration file; put the key in an "
            "environment variable and name it with api_key_env"
        )
    unknown = sorted(str(key) for key in raw if key not in _PROVIDER_KEYS)
    if unknown:
        raise LLMConfigError(
            f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(_PROVIDER_KEYS))})"
        )
    kind = raw.get("type")
    if kind not in PROVIDER_TYPES:
        raise LLMConfigError(f"{where}.type must be one of: {', '.join(PROVIDER_TYPES)} (got {kind!r})")
    base_url = _text(raw, "base_url", where)
    key_env = _text(raw, "api_key_env", where)
    if base_url is None and key_env is None:
        raise LLMConfigError(
            f"{where}: a provider without api_key_env sends no key, so it needs a base_url "
            '(for example base_url: "http://127.0.0.1:11434/v1" for a local Ollama)'
        )
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise LLMConfigError(f"{where}.base_url must start with http:// or https:// (got {base_url!r})")
    return ProviderConfig(
        name=name,
        type=kind,
        base_url=base_url.rstrip("/") if base_url else None,
        api_key_env=key_env,
        model=_text(raw, "model", where),
        timeout=_number(raw, "timeout", where, 120.0, 1.0, 3600.0),
        max_retries=int(_number(raw, "max_retries", where, 2, 0, 10)),
        max_output_tokens=(
            int(_number(raw, "max_output_tokens", where, 0, 1, 1_000_000))
            if "max_output_tokens" in raw
            else None
        ),
    )


def _text(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise LLMConfigError(f"{where}.{key} must be a non-empty string")
    return value.strip()


def _number(raw: Mapping[str, Any], key: str, where: str, default: float, low: float, high: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise LLMConfigError(f"{where}.{key} must be a number from {low:g} to {high:g}")
    return float(value)


def _default_provider(
    data: Mapping[str, Any], providers: tuple[ProviderConfig, ...], path: Path
) -> str | None:
    raw = data.get("default_provider")
    names = [p.name for p in providers]
    if raw is None:
        return names[0] if names else None
    if not isinstance(raw, str) or raw not in names:
        known = ", ".join(names) or "none are configured"
        raise LLMConfigError(f"{path}: default_provider {raw!r} is not a configured provider ({known})")
    return raw


def _provider_flag(raw: str | None, providers: tuple[ProviderConfig, ...]) -> str | None:
    if raw is None or not raw.strip():
        return None
    name = raw.strip().split(":", 1)[0]
    if not any(p.name == name for p in providers):
        known = ", ".join(p.name for p in providers) or "none are configured"
        raise LLMConfigError(f"--provider {raw}: no provider named {name!r} in the configuration ({known})")
    return raw.strip()


def _directory(raw: str, flag: str) -> str:
    path = Path(raw).expanduser()
    if not path.is_dir():
        raise LLMConfigError(f"{flag} {raw}: no such directory")
    return os.path.realpath(path)


def _max_turns(data: Mapping[str, Any], path: Path) -> int:
    raw = data.get("max_turns", DEFAULT_MAX_TURNS)
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_TURNS_LIMIT:
        raise LLMConfigError(f"{path}: max_turns must be a whole number from 1 to {MAX_TURNS_LIMIT}")
    return raw
