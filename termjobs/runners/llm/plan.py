"""How one run is set up: the job's settings merged with the server's and the agent's.

Pure (apart from resolving directories, which :class:`Permissions` does):

* provider and model (SPEC 10.2): the job's ``provider`` (``name`` or ``name:model``)
  > the server's ``--provider`` > the agent's ``provider`` > ``default_provider``;
  the chosen provider's configured model unless the agent (when its provider or the
  default is used) or the ``name:model`` form says otherwise; the job's ``model``
  wins last;
* tools: the agent's, narrowed by the job's ``tools`` (else the server's ``--tools``);
* directories: the server's plus the job's (SPEC 10.3);
* max turns: the job's, else the agent's, else the configuration's (default 50);
* system prompt: the agent's, then the system message (job's, else the server's),
  then what the run may touch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from termjobs.runners.config import LLMConfig
from termjobs.runners.llm.agents import Agent
from termjobs.runners.llm.permissions import Permissions
from termjobs.runners.llm.settings import LLMSettings, ProviderConfig


class PlanError(ValueError):
    """The run cannot be set up; the message says why and what to fix."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """Everything one run of an llm job uses."""

    agent: Agent
    provider: ProviderConfig
    model: str
    tools: tuple[str, ...]
    permissions: Permissions
    max_turns: int
    max_output_tokens: int | None
    system_prompt: str


def choose_provider(config: LLMConfig, settings: LLMSettings, agent: Agent) -> tuple[ProviderConfig, str]:
    """The provider and model of a run (see the module docstring)."""
    if not settings.providers:
        raise PlanError(settings.no_provider_message())
    agent_model: str | None = None
    if config.provider:
        name, _, model = config.provider.partition(":")
        source = "the job's provider"
    elif settings.provider:
        name, _, model = settings.provider.partition(":")
        source = "--provider"
    elif agent.provider:
        name, model, agent_model = agent.provider, "", agent.model
        source = f"agent {agent.name!r}"
    else:
        assert settings.default_provider is not None
        name, model, agent_model = settings.default_provider, "", agent.model
        source = "default_provider"
    provider = settings.find(name.strip())
    if provider is None:
        known = ", ".join(p.name for p in settings.providers)
        raise PlanError(f"unknown provider {name.strip()!r} (from {source}); configured providers: {known}")
    chosen = config.model or model.strip() or agent_model or provider.model
    if not chosen:
        raise PlanError(
            f'provider "{provider.name}" has no model: set model in its configuration, '
            "or the job's model (or provider: name:model)"
        )
    return provider, chosen


def plan_run(config: LLMConfig, settings: LLMSettings, agent: Agent) -> RunPlan:
    """Merge job, server and agent settings; :class:`PlanError` if the run cannot start."""
    provider, model = choose_provider(config, settings, agent)
    cwd = os.path.abspath(config.cwd)
    if not os.path.isdir(cwd):
        raise PlanError(f"llm runner_config.cwd {config.cwd!r} is not a directory on this server")
    narrowing = config.tools if config.tools is not None else settings.tools
    tools = agent.tools if narrowing is None else tuple(t for t in agent.tools if t in narrowing)
    permissions = Permissions.build(
        cwd,
        read_dirs=(*settings.read_dirs, *config.read_dir),
        write_dirs=(*settings.write_dirs, *config.write_dir),
        shell_patterns=settings.shell_allow,
        yolo=settings.yolo,
    )
    return RunPlan(
        agent=agent,
        provider=provider,
        model=model,
        tools=tools,
        permissions=permissions,
        max_turns=config.max_turns or agent.max_turns or settings.max_turns,
        max_output_tokens=config.max_output_tokens,
        system_prompt=system_prompt(
            agent, config.system_message or settings.system_message, tools, permissions
        ),
    )


def system_prompt(agent: Agent, message: str | None, tools: tuple[str, ...], permissions: Permissions) -> str:
    """The agent's prompt, the custom system message, and the run's surroundings."""
    parts = [agent.system_prompt]
    if message:
        parts.append(message)
    lines = [
        "You are running unattended as a scheduled job of a jobs server: nobody can answer questions, "
        "so decide for yourself and finish with your final answer.",
        f"Working directory: {permissions.cwd}",
    ]
    if tools:
        lines.append(f"Tools: {', '.join(tools)}.")
        if {"read_file", "list_dir"} & set(tools):
            lines.append(f"You may read under: {', '.join(permissions.read_roots)}.")
        if "write_file" in tools:
            where = ", ".join(permissions.write_roots) or "nowhere (no writable directory is configured)"
            lines.append(f"You may write under: {where}.")
        if "shell" in tools and not permissions.yolo:
            allowed = ", ".join(permissions.shell_patterns) or "none"
            lines.append(f"Shell commands must match one of these patterns: {allowed}.")
    else:
        lines.append("You have no tools: answer from the instructions alone.")
    parts.append("\n".join(lines))
    return "\n\n".join(parts)
