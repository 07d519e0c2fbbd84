"""The job actor's protocol: the messages it handles and the grip it keeps on a run.

Requests come from the supervisor (on behalf of the API); each carries a one-shot
:class:`~termjobs.actors.mailbox.Reply` that the actor always answers. Notices come
from the actor's own run tasks (a retry came due, a run ended) through the same
mailbox, so every decision about a job is taken in its actor's loop, one at a time.
Nothing outside ``termjobs.actors`` builds these messages: the supervisor's methods
(``trigger``, ``update``, ``delete``, ``cancel_run``...) are the API.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

import trio

from termjobs.actors.mailbox import Reply
from termjobs.jobdef import Job
from termjobs.jobspec import JobPatch
from termjobs.model import JSONObject, Run
from termjobs.rundomain import Refusal
from termjobs.runners.base import StopReason, StopSignal
from termjobs.storage import Receipt

# ------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A request's ``Idempotency-Key`` and the digest of the request."""

    key: str
    fingerprint: str

    def receipt(self, status: int, body: str, now: dt.datetime) -> Receipt:
        """The receipt that records the request's answer."""
        return Receipt(key=self.key, fingerprint=self.fingerprint, status=status, body=body, created_at=now)


@dataclass(frozen=True, slots=True, kw_only=True)
class TriggerNow:
    """Queue a manual run now (with this run's overrides, if any)."""

    overrides: JSONObject | None = None
    idempotency: Idempotency | None = None
    reply: Reply[Run] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateJob:
    """Apply a checked PATCH (pause and resume are ``enabled`` patches)."""

    patch: JobPatch
    reply: Reply[Job] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteJob:
    """Delete the job (and its history); with ``cancel_active``, stop its runs first."""

    cancel_active: bool
    reply: Reply[None] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRun:
    """Cancel one of the job's runs."""

    run_id: str
    reply: Reply[Run] = field(default_factory=Reply)


Request = TriggerNow | UpdateJob | DeleteJob | CancelRun


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """A cluster hands the job to another server: stop if idle (``True``), else stay
    (``False``: it moves once its runs have ended)."""

    reply: Reply[bool] = field(default_factory=Reply)


# ------------------------------------------------------ notices from run tasks


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryDue:
    """A retry run's time has come: may it start (``None``) or is it skipped?"""

    handle: RunHandle
    reply: Reply[Refusal | None] = field(default_factory=Reply)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEnded:
    """A run task is done (its final state is recorded, or left for recovery);
    ``retry`` is the retry run it queued, for the actor to take on."""

    handle: RunHandle
    retry: Run | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """An alarm the actor set has rung (``termjobs.actors.alarms``): look at the clock."""


#: Ticks carry nothing: one serves every alarm.
TICK = Tick()

JobMessage = Request | Release | RetryDue | RunEnded | Tick


class ActorGone(Exception):
    """The actor stopped (hibernated) before it handled the request: send it again."""


@dataclass(frozen=True, slots=True)
class ActorExit:
    """What a job actor returns when its loop ends: why (the job was deleted, the
    actor hibernated, the service is stopping, or, in a cluster, the job was handed to
    another server or this server lost it), and the job as it left it."""

    reason: Literal["deleted", "hibernated", "stopped", "released", "lost"]
    job: Job


# ------------------------------------------------------------------ run grip


@dataclass(eq=False)
class RunHandle:
    """The actor's grip on one active run, shared with the run's task.

    The actor writes ``job`` (the latest definition, which a queued run starts with)
    and calls :meth:`cancel`; the run task writes ``run``, ``started`` and ``final``
    and sets ``done``.
    """

    run: Run
    job: Job
    stop: StopSignal = field(default_factory=StopSignal)
    wait_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    started: bool = False
    final: Run | None = None
    done: trio.Event = field(default_factory=trio.Event)

    def cancel(self, reason: StopReason) -> None:
        """Stop the run: a waiting run leaves the queue, a running one is stopped."""
        self.stop.request(reason)
        if not self.started:
            self.wait_scope.cancel()
