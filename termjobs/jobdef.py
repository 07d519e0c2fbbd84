"""The job value: what a user defined, plus the schedule state the server keeps.

:class:`JobDefinition` holds every field a client sends, exactly as sent (JSON configs
are echoed back unchanged), and parses its trigger, retry policy and runner
configuration once, on first use (:attr:`JobDefinition.parsed`). :class:`Job` is a
stored definition: its id, the definition, and the schedule state.

Rules (ranges, names) and the client-facing errors live in ``termjobs.jobspec``; a
definition loaded from storage that no longer parses (a rule changed, a time zone left
the tz database) still loads, with :attr:`ParsedJob.problem` saying why it cannot fire.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Final

from termjobs.model import ConcurrencyPolicy, JSONValue, MisfirePolicy, RunnerType, TriggerType
from termjobs.notify import NotifyTarget, parse_notify
from termjobs.retry import NO_RETRY, RetryPolicy, parse_retry_policy
from termjobs.runners.config import RunnerConfig, parse_runner_config
from termjobs.schedule import ManualTrigger, Trigger, TriggerError, parse_trigger

DEFAULT_TIMEOUT_SECONDS: Final = 300
DEFAULT_MISFIRE_GRACE_SECONDS: Final = 60


@dataclass(frozen=True, slots=True)
class ParsedJob:
    """The typed form of a definition's JSON parts.

    ``problem`` is the first part that did not parse (``None`` when all did); the
    parts that did not parse are replaced by inert values (a manual trigger, no retry,
    no runner configuration) so the job stays reachable and never fires wrongly.
    """

    trigger: Trigger
    retry: RetryPolicy
    runner: RunnerConfig | None
    notify: tuple[NotifyTarget, ...] = ()
    problem: str | None = None


@dataclass(frozen=True, kw_only=True)
class JobDefinition:
    """Everything a user defines about a job, with defaults applied.

    Not slotted: :attr:`parsed` is computed once per value and cached on it.
    """

    name: str
    enabled: bool = True
    runner_type: RunnerType
    runner_config: JSONValue
    trigger_type: TriggerType
    trigger_config: JSONValue
    schedule_timezone: str | None = None
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    max_concurrent_runs: int = 1
    retry_policy: JSONValue = None
    timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS
    misfire_policy: MisfirePolicy = MisfirePolicy.SKIP
    misfire_grace_seconds: int = DEFAULT_MISFIRE_GRACE_SECONDS
    labels: JSONValue = None
    #: completion webhooks (``termjobs.notify``)
    notify: JSONValue = None

    @property
    def run_limit(self) -> int:
        """How many runs of this job may be active at once."""
        if self.concurrency_policy is ConcurrencyPolicy.FORBID:
            return 1
        return self.max_concurrent_runs

    @cached_property
    def parsed(self) -> ParsedJob:
        """The runner configuration, retry policy and trigger, parsed (in that order:
        the first failure is the ``problem``)."""
        problems: list[str] = []
        runner: RunnerConfig | None = None
        retry = NO_RETRY
        trigger: Trigger = ManualTrigger()
        try:
            runner = parse_runner_config(self.runner_type, self.runner_config)
        except ValueError as exc:
            problems.append(str(exc))
        try:
            retry = parse_retry_policy(self.retry_policy)
        except ValueError as exc:
            problems.append(str(exc))
        try:
            trigger = parse_trigger(self.trigger_type, self.trigger_config, self.schedule_timezone)
        except TriggerError as exc:
            problems.append(str(exc))
        notify: tuple[NotifyTarget, ...] = ()
        try:
            notify = parse_notify(self.notify)
        except ValueError as exc:
            problems.append(str(exc))
        problem = problems[0] if problems else None
        return ParsedJob(trigger=trigger, retry=retry, runner=runner, notify=notify, problem=problem)

    def with_enabled(self, enabled: bool) -> JobDefinition:
        """This definition, enabled or not; what was parsed stays parsed (it does not
        depend on ``enabled``), so a fire that disables a once job parses nothing."""
        if enabled == self.enabled:
            return self
        copy = replace(self, enabled=enabled)
        if "parsed" in self.__dict__:
            copy.__dict__["parsed"] = self.__dict__["parsed"]
        return copy

    def schedule_differs(self, other: JobDefinition) -> bool:
        """Whether ``other`` changes what decides ``next_run_at`` (DESIGN 4.7)."""
        return (
            self.trigger_type != other.trigger_type
            or self.trigger_config != other.trigger_config
            or self.schedule_timezone != other.schedule_timezone
            or self.enabled != other.enabled
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A stored job definition and its schedule state.

    ``last_fire_at`` is the nominal time of the most recent scheduled fire (internal:
    it is how a fired ``once`` job knows not to re-arm, and where misfire catch-up
    starts counting).
    """

    id: str
    spec: JobDefinition
    next_run_at: dt.datetime | None
    last_fire_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
