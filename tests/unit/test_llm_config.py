"""Pure parts of the llm runner: configuration, agents, provider choice, runner_config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from termjobs.model import JSONValue
from termjobs.runners.config import LLMConfig, parse_llm_config
from termjobs.runners.llm.agents import BUILTIN_AGENTS, Agent, AgentError, AgentRegistry
from termjobs.runners.llm.plan import PlanError, choose_provider, plan_run
from termjobs.runners.llm.settings import LLMConfigError, LLMSettings, ProviderConfig, load_llm_settings

CONFIG = """\
default_provider: local
providers:
  local:   {type: openai, base_url: "http://127.0.0.1:11434/v1", model: "llama3.2"}
  openai:  {type: openai, api_key_env: OPENAI_API_KEY, model: "gpt-4.1-mini"}
  claude:  {type: anthropic, api_key_env: ANTHROPIC_API_KEY, model: "claude-sonnet-4-5"}
agents_dir: AGENTS
ask: {whatever: term-llm keeps other settings here}
"""


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("AGENTS", str(tmp_path / "agents")))
    return str(path)


def test_the_issue_example_configuration_loads(tmp_path: Path) -> None:
    settings = load_llm_settings(config=write_config(tmp_path, CONFIG), env={})
    assert [p.name for p in settings.providers] == ["local", "openai", "claude"]
    local, openai, claude = settings.providers
    assert (local.endpoint, local.api_key_env, local.model) == ("http://127.0.0.1:11434/v1", None, "llama3.2")
    assert openai.endpoint == "https://api.openai.com/v1" and claude.endpoint == "https://api.anthropic.com"
    assert settings.default_provider == "local" and settings.agents_dir == str(tmp_path / "agents")
    assert settings.key_variables == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert settings.max_turns == 50


def test_no_configuration_file_means_no_providers(tmp_path: Path) -> None:
    settings = load_llm_settings(config=None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert settings.providers == () and settings.default_provider is None
    assert settings.config_path == str(tmp_path / "term-llm" / "config.yaml")
    assert settings.agents_dir == str(tmp_path / "term-llm" / "agents")
    assert "no LLM provider configured" in settings.no_provider_message()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "providers:\n  x: {type: gemini}\n",
            "providers.x.type must be one of: openai, anthropic (got 'gemini')",
        ),
        (
            "providers:\n  x: {type: openai}\n",
            "a provider without api_key_env sends no key, so it needs a base_url",
        ),
        (
            "providers:\n  x: {type: openai, api_key_env: K, api_key: sk-1}\n",
            "keys are never read from the configuration file",
        ),
        ("providers:\n  x: {type: openai, api_key_env: K, modle: m}\n", "unknown setting 'modle'"),
        (
            "providers:\n  x: {type: openai, base_url: ftp://x}\n",
            "base_url must start with http:// or https://",
        ),
        (
            "default_provider: y\nproviders:\n  x: {type: openai, api_key_env: K}\n",
            "default_provider 'y' is not a configured provider (x)",
        ),
        ("providers: [a, b]\n", "providers must be a mapping"),
        ("max_turns: 0\n", "max_turns must be a whole number from 1 to 1000"),
        (
            "providers: {x: {type: openai, api_key_env: K, timeout: -1}}\n",
            "timeout must be a number from 1 to 3600",
        ),
        ("[unclosed\n", "is not valid YAML"),
    ],
)
def test_bad_configurations_are_refused_with_the_place_and_the_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(LLMConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_llm_settings(config=write_config(tmp_path, text), env={})


def test_flags_are_checked_against_the_configuration(tmp_path: Path) -> None:
    path = write_config(tmp_path, CONFIG)
    assert (
        load_llm_settings(config=path, env={}, provider="claude:claude-opus").provider == "claude:claude-opus"
    )
    with pytest.raises(LLMConfigError, match="--provider nope: no provider named 'nope'"):
        load_llm_settings(config=path, env={}, provider="nope")
    with pytest.raises(LLMConfigError, match="--write-dir /does/not/exist: no such directory"):
        load_llm_settings(config=path, env={}, write_dirs=["/does/not/exist"])
    with pytest.raises(LLMConfigError, match="--tools: unknown tool 'browse'"):
        load_llm_settings(config=path, env={}, tools="read_file,browse")
    with pytest.raises(LLMConfigError, match="no such file"):
        load_llm_settings(config=str(tmp_path / "missing.yaml"), env={})
    narrowed = load_llm_settings(config=path, env={}, tools="read_file, list_dir", read_dirs=[str(tmp_path)])
    assert narrowed.tools == ("read_file", "list_dir") and narrowed.read_dirs == (str(tmp_path.resolve()),)


def test_agents_come_from_files_first_then_the_built_ins(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "developer.yaml").write_text("system_prompt: My own developer.\ntools: [read_file]\n")
    (agents / "bad.yaml").write_text("system_prompt: x\ntools: [fly]\n")
    registry = AgentRegistry(str(agents))
    assert registry.load("developer").tools == ("read_file",)  # the file replaces the built-in
    assert registry.load("reviewer") == BUILTIN_AGENTS["reviewer"]
    assert registry.load(str(agents / "developer.yaml")).system_prompt == "My own developer."
    with pytest.raises(AgentError, match="load agent: .*bad.yaml: unknown tool 'fly'"):
        registry.load("bad")
    with pytest.raises(AgentError, match="load agent: invalid agent name '..x'"):
        registry.load("..x")
    with pytest.raises(AgentError, match="agent not found: ghost"):
        registry.load("ghost")
    assert [a.name for a in registry.all()] == ["developer", "reviewer"]


def provider(name: str, model: str | None = "base-model") -> ProviderConfig:
    return ProviderConfig(name=name, type="openai", base_url="http://127.0.0.1:1/v1", model=model)


SETTINGS = LLMSettings(providers=(provider("a"), provider("b"), provider("c", None)), default_provider="a")


def llm_config(**fields: JSONValue) -> LLMConfig:
    return parse_llm_config({"agent_name": "developer", "instructions": "x", "cwd": "/tmp", **fields})


@pytest.mark.parametrize(
    ("job", "server", "agent", "expected"),
    [
        ({}, None, {}, ("a", "base-model")),  # default provider, its model
        ({"provider": "b"}, None, {}, ("b", "base-model")),  # the job's provider, with its model
        ({"provider": "b:m1"}, None, {}, ("b", "m1")),  # provider:model
        ({"model": "m2"}, None, {}, ("a", "m2")),  # model alone: the active provider's
        ({"provider": "b", "model": "m3"}, None, {}, ("b", "m3")),  # model wins last
        ({}, "b:m4", {}, ("b", "m4")),  # --provider
        ({"provider": "a"}, "b", {}, ("a", "base-model")),  # the job beats --provider
        ({}, None, {"provider": "b", "model": "agent-model"}, ("b", "agent-model")),
        (
            {},
            "a",
            {"provider": "b", "model": "agent-model"},
            ("a", "base-model"),
        ),  # --provider beats the agent
        ({}, None, {"model": "agent-model"}, ("a", "agent-model")),  # the agent's model on the default
    ],
)
def test_provider_and_model_precedence(
    job: dict[str, JSONValue], server: str | None, agent: dict[str, Any], expected: tuple[str, str]
) -> None:
    settings = LLMSettings(providers=SETTINGS.providers, default_provider="a", provider=server)
    chosen_agent = Agent(name="x", description="", system_prompt="p", tools=(), **agent)
    found, model = choose_provider(llm_config(**job), settings, chosen_agent)
    assert (found.name, model) == expected


def test_a_provider_without_a_model_needs_one_from_the_job() -> None:
    with pytest.raises(PlanError, match='provider "c" has no model'):
        choose_provider(llm_config(provider="c"), SETTINGS, BUILTIN_AGENTS["developer"])
    assert choose_provider(llm_config(provider="c:m"), SETTINGS, BUILTIN_AGENTS["developer"])[1] == "m"
    with pytest.raises(PlanError, match="unknown provider 'zz' \\(from the job's provider\\)"):
        choose_provider(llm_config(provider="zz"), SETTINGS, BUILTIN_AGENTS["developer"])


def test_tools_directories_and_turns_merge(tmp_path: Path) -> None:
    (tmp_path / "extra").mkdir()
    settings = LLMSettings(
        providers=SETTINGS.providers,
        default_provider="a",
        tools=("read_file", "shell"),
        max_turns=9,
        write_dirs=(str(tmp_path / "extra"),),
        system_message="Server says hi.",
    )
    plan = plan_run(llm_config(cwd=str(tmp_path)), settings, BUILTIN_AGENTS["developer"])
    assert plan.tools == ("shell", "read_file") and plan.max_turns == 9
    assert plan.permissions.write_roots == (str((tmp_path / "extra").resolve()),)
    assert plan.permissions.read_roots[0] == str(tmp_path.resolve())
    assert "Server says hi." in plan.system_prompt and "careful software developer" in plan.system_prompt
    job = llm_config(cwd=str(tmp_path), tools="list_dir", max_turns=3, system_message="Job says hi.")
    plan = plan_run(job, settings, BUILTIN_AGENTS["developer"])
    assert plan.tools == ("list_dir",) and plan.max_turns == 3 and "Job says hi." in plan.system_prompt
    with pytest.raises(PlanError, match="is not a directory on this server"):
        plan_run(llm_config(cwd=str(tmp_path / "nope")), settings, BUILTIN_AGENTS["developer"])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stop_when": "done"}, "stop_when requires progressive: true"),
        ({"continue_with": "go on"}, "continue_with requires progressive: true"),
        ({"progressive": True, "stop_when": "later"}, "stop_when must be one of: done, timeout"),
        (
            {"progressive": True, "stop_when": "done", "continue_with": "x"},
            "continue_with requires stop_when: timeout",
        ),
        ({"tools": "shell,fly"}, "unknown tool 'fly'"),
        ({"max_turns": 5000}, "max_turns must be a whole number from 1 to 1000"),
        ({"session_id": "../etc"}, "session_id must be 1-64 letters"),
        ({"persist_session": "no"}, "persist_session must be true or false"),
        ({"read_dir": [1]}, "read_dir must be an array of strings"),
    ],
)
def test_runner_config_errors_are_caught_at_create(fields: dict[str, JSONValue], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        llm_config(**fields)


def test_runner_config_keeps_its_defaults() -> None:
    config = llm_config()
    assert config.persist_session is True and config.progressive is False and config.tools is None
    assert llm_config(tools="none").tools == () and llm_config(max_turns=0).max_turns is None
