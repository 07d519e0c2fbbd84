"""The ``llm`` runner: one agent conversation per run.

A run loads its agent, merges the job's settings with the server's (``plan``), opens
the provider, and runs the conversation (``conversation``; ``progressive`` in
progressive mode) inside a cancel scope that a stop request (cancel, timeout,
shutdown, delete) cancels at once: the provider's HTTP stream is closed and a running
shell tool is killed. Whatever happened, it returns what the run produced (response,
thinking, turns, tokens, session id) and saves the session.

It never decides the run's status (``termjobs.rundomain.decide`` does); it reports
``max_turns_exceeded`` (an error, ``truncated``), ``empty_response``, progressive
``timeout``, and provider errors, which name the provider and never the key.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping

import trio

from termjobs.clock import Clock
from termjobs.jobdef import Job, JobDefinition
from termjobs.model import ExitReason, JSONValue, RunOutput, Session
from termjobs.rundomain import timeout_of
from termjobs.runners.base import RunContext, RunResult
from termjobs.runners.config import LLMConfig, llm_with_overrides
from termjobs.runners.llm.agents import AgentError, AgentRegistry
from termjobs.runners.llm.conversation import Conversation
from termjobs.runners.llm.events import RunEvents
from termjobs.runners.llm.messages import Message
from termjobs.runners.llm.plan import PlanError, RunPlan, choose_provider, plan_run
from termjobs.runners.llm.progressive import Progress, progress_tools
from termjobs.runners.llm.providers import ProviderError, open_provider
from termjobs.runners.llm.providers.errors import missing_key, scrub
from termjobs.runners.llm.sessions import SessionLog, load_history, new_session_id
from termjobs.runners.llm.settings import LLMSettings
from termjobs.runners.llm.tools import ShellPolicy, Toolbox
from termjobs.runners.program import SECRET_ENV
from termjobs.storage import Storage

logger = logging.getLogger(__name__)

#: After a stop request: time to save the session and the last output.
STOP_GRACE_S = 5.0


def _failed(error: str) -> RunResult:
    return RunResult(output=RunOutput(exit_code=0), error=error, exit_reason=ExitReason.EXCEPTION)


class LLMRunner:
    """Runs ``llm`` jobs with the server's providers and agents."""

    def __init__(
        self, settings: LLMSettings, *, storage: Storage, clock: Clock, base_env: Mapping[str, str]
    ) -> None:
        self.settings = settings
        self.agents = AgentRegistry(settings.agents_dir)
        self.storage = storage
        self.clock = clock
        self._env = dict(base_env)
        hidden = SECRET_ENV | settings.key_variables
        self._shell_env = {k: v for k, v in base_env.items() if k not in hidden}

    def stop_grace(self, job: Job) -> float:
        return STOP_GRACE_S

    def check_job(self, spec: JobDefinition) -> str | None:
        """Why this server could never run the llm job ``spec`` (an unknown agent or
        provider), or ``None``; checked when a job is created or its config changed."""
        config = spec.parsed.runner
        if not isinstance(config, LLMConfig):
            return None
        try:
            agent = self.agents.load(config.agent_name)
        except AgentError as exc:
            return str(exc)
        if config.provider and self.settings.providers:
            try:
                choose_provider(config, self.settings, agent)
            except PlanError as exc:
                return str(exc)
        return None

    async def run(self, ctx: RunContext) -> RunResult:
        config = ctx.job.spec.parsed.runner
        if not isinstance(config, LLMConfig):
            return _failed(f"invalid llm runner config: {ctx.job.spec.parsed.problem or 'not an llm job'}")
        config = llm_with_overrides(config, ctx.run.overrides)
        try:
            agent = self.agents.load(config.agent_name)
            plan = plan_run(config, self.settings, agent)
        except (AgentError, PlanError) as exc:
            return _failed(str(exc))
        key: str | None = None
        if plan.provider.api_key_env:
            key = self._env.get(plan.provider.api_key_env) or None
            if key is None:
                return _failed(str(missing_key(plan.provider)))
        session_id = config.session_id or new_session_id(self.clock.now())
        stored: Session | None = None
        history: list[Message] = []
        if config.session_id:
            stored, history = await load_history(self.storage, session_id)
        log = SessionLog(
            self.storage,
            self.clock,
            self._session(ctx, config, plan, session_id, stored),
            run_id=ctx.run.id,
            enabled=config.persist_session,
        )
        execution = _Execution(self, ctx, config, plan, key, log, history)
        return await execution.run()

    def _session(
        self, ctx: RunContext, config: LLMConfig, plan: RunPlan, session_id: str, stored: Session | None
    ) -> Session:
        now = self.clock.now()
        base = stored or Session(
            id=session_id,
            job_id=ctx.job.id,
            name=config.session_name or _delegation_name(ctx.job.spec.labels) or ctx.job.spec.name,
            agent=plan.agent.name,
            provider=plan.provider.name,
            model=plan.model,
            created_at=now,
            updated_at=now,
        )
        return dataclasses.replace(base, agent=plan.agent.name, provider=plan.provider.name, model=plan.model)

    def toolbox(self, ctx: RunContext, plan: RunPlan) -> Toolbox:
        env = {
            **self._shell_env,
            "TERM_LLM_JOB_ID": ctx.job.id,
            "TERM_LLM_JOB_NAME": ctx.job.spec.name,
            "TERM_LLM_RUN_ID": ctx.run.id,
        }
        policy = ShellPolicy(
            env=env, timeout=self.settings.shell_timeout, output_limit=self.settings.shell_output_limit
        )
        return Toolbox(plan.tools, plan.permissions, policy)


def _delegation_name(labels: JSONValue) -> str | None:
    """``Delegation from <origin>`` for a job a term-llm Hub delegated (SPEC A.2)."""
    delegation = labels.get("hub_delegation") if isinstance(labels, dict) else None
    origin = delegation.get("origin") if isinstance(delegation, dict) else None
    return f"Delegation from {origin.strip()}" if isinstance(origin, str) and origin.strip() else None


class _Execution:
    """One run in progress: its conversation, its events, its stop handling."""

    def __init__(
        self,
        runner: LLMRunner,
        ctx: RunContext,
        config: LLMConfig,
        plan: RunPlan,
        key: str | None,
        log: SessionLog,
        history: list[Message],
    ) -> None:
        self.runner = runner
        self.ctx = ctx
        self.config = config
        self.plan = plan
        self.key = key
        self.log = log
        self.history = history
        self.events = RunEvents(ctx, runner.storage, runner.clock)
        self.conversation: Conversation | None = None
        self.progress: Progress | None = None
        self.error: str | None = None
        self.exit_reason: ExitReason | None = None
        self.response: str | None = None
        self.truncated = False
        # The job's time budget, for progressive mode (the run task enforces it).
        self.budget = float(timeout_of(ctx.job.spec, ctx.run))
        self.deadline = trio.current_time() + self.budget

    async def run(self) -> RunResult:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.events.live.run)
            with trio.CancelScope() as work:
                nursery.start_soon(self._cancel_on_stop, work)
                try:
                    await self._converse()
                except ProviderError as exc:
                    self.error = str(exc)
                except Exception as exc:  # a bug: keep what the run produced
                    logger.exception("llm run %s failed", self.ctx.run.id)
                    self.error = scrub(f"llm runner failed: {exc}", self.key)
            nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_GRACE_S):
            await self.events.live.close()
            try:
                await self.log.save()
            except Exception:
                logger.exception("run %s: could not save its session", self.ctx.run.id)
        return self._result()

    async def _cancel_on_stop(self, work: trio.CancelScope) -> None:
        await self.ctx.stop.wait()
        work.cancel()

    async def _converse(self) -> None:
        plan = self.plan
        async with open_provider(plan.provider, plan.model, self.key) as provider:
            progress = None
            if self.config.progressive:
                stop_when = self.config.stop_when or ("timeout" if math.isfinite(self.budget) else "done")
                progress = Progress(self.events, stop_when=stop_when, continue_with=self.config.continue_with)
            conversation = Conversation(
                provider=provider,
                plan=plan,
                toolbox=self.runner.toolbox(self.ctx, plan),
                events=self.events,
                log=self.log,
                history=self.history,
                session_id=self.log.session.id,
                quiet_tools=progress_tools(progress) if progress else None,
                collect_response=progress is None,
            )
            self.conversation = conversation
            if progress is None:
                end = await conversation.run_pass(self.config.instructions)
                if end.out_of_turns:
                    self.error = f"agentic loop exceeded max turns ({plan.max_turns})"
                    self.exit_reason, self.truncated = ExitReason.MAX_TURNS_EXCEEDED, True
                return
            progress.conversation, self.progress = conversation, progress
            conversation.live_response = progress.live_response
            outcome = await progress.run(self.config.instructions, deadline=self.deadline, budget=self.budget)
            self.exit_reason, self.response = outcome.exit_reason, outcome.response
            self.truncated = outcome.exit_reason is ExitReason.MAX_TURNS_EXCEEDED

    def _result(self) -> RunResult:
        conversation = self.conversation
        if conversation is None:
            output = RunOutput(exit_code=0, session_id=self.log.session.id)
        else:
            response = self.response
            if response is None and self.progress is not None:  # stopped mid-pass
                response = self.progress.final_response()
            output = conversation.output(response=response)
        output = dataclasses.replace(output, truncated=self.truncated)
        exit_reason = self.exit_reason
        if self.error is not None:
            return RunResult(output=output, error=self.error, exit_reason=exit_reason or ExitReason.EXCEPTION)
        if exit_reason is None and not self.ctx.stop.requested and not (output.response or output.thinking):
            exit_reason = ExitReason.EMPTY_RESPONSE
        return RunResult(output=output, exit_reason=exit_reason)
