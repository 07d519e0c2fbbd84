"""The Notifier: delivers completion webhooks from the outbox.

A run's final state and its webhooks are written in one transaction (the outbox,
``storage.pending_notifications``), so a webhook is never lost with a crash: what is
not delivered yet is delivered after the next start. Delivery never delays a run's
finish. Each webhook gets up to three attempts of at most ten seconds each, within a
thirty-second budget; 408, 425, 429, 5xx answers and network errors are retried after
the receiver's ``Retry-After`` (else one, then two seconds). The outcome is an event on
the run's timeline: ``notify_sent`` or ``notify_failed``. A shutdown abandons
deliveries in flight without an event; they are sent again after the next start (with
the same ``webhook-id``, so receivers can tell a repeat).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import trio

from termjobs import wire
from termjobs.clock import Clock
from termjobs.jobdef import Job
from termjobs.model import EventType, JSONObject, Run
from termjobs.notify import excerpt, notice, signature
from termjobs.rundomain import FireDecision, Skip
from termjobs.storage import PendingNotification, Storage, StorageError

if TYPE_CHECKING:  # imported at the first delivery: a server without webhooks never loads it
    import httpx

logger = logging.getLogger(__name__)

RETRYABLE = frozenset({408, 425, 429})
#: How often the outbox is looked at when nothing rang (a backstop, not the trigger).
BACKSTOP_S = 60.0
BATCH = 100


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard a webhook is tried (SPEC 12.4)."""

    attempts: int = 3
    attempt_timeout: float = 10.0
    budget: float = 30.0
    delays: tuple[float, ...] = (1.0, 2.0)
    concurrency: int = 8


class Notifier:
    """Delivers the outbox (see the module docstring). Also a run observer: a run that
    ended with webhooks queued rings its doorbell."""

    def __init__(self, storage: Storage, clock: Clock, *, policy: DeliveryPolicy = DeliveryPolicy()) -> None:
        self._storage = storage
        self._clock = clock
        self._policy = policy
        self._doorbell = trio.Event()
        self._in_flight: set[int] = set()
        self._limiter = trio.CapacityLimiter(policy.concurrency)
        #: in a cluster: this server, which delivers the webhooks of the jobs it owns
        self.owner: str | None = None

    # ------------------------------------------------------------- observer

    def run_started(self, job: Job, run: Run) -> None:
        pass

    def run_finished(self, job: Job, run: Run, *, notified: bool) -> None:
        if notified:
            self._doorbell.set()

    def fires_recorded(self, job: Job, decisions: Sequence[FireDecision], now: dt.datetime) -> None:
        if any(isinstance(decision, Skip) for decision in decisions):
            self._doorbell.set()

    # ----------------------------------------------------------------- loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver until cancelled (server shutdown)."""
        async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
            task_status.started()
            client: httpx.AsyncClient | None = None
            while True:
                self._doorbell = trio.Event()
                for notification in await self._pending():
                    if notification.id not in self._in_flight:
                        if client is None:
                            client = await stack.enter_async_context(_http_client())
                        self._in_flight.add(notification.id)
                        nursery.start_soon(self._deliver, client, notification)
                with trio.move_on_after(BACKSTOP_S):
                    await self._doorbell.wait()

    async def _pending(self) -> list[PendingNotification]:
        try:
            return await self._storage.pending_notifications(limit=BATCH, owner=self.owner)
        except Exception as exc:  # the loop must outlive any storage trouble
            logger.warning("could not read the webhook outbox (%s); trying again later", exc)
            return []

    async def _deliver(self, client: httpx.AsyncClient, notification: PendingNotification) -> None:
        try:
            async with self._limiter:
                await self._deliver_one(client, notification)
        except StorageError as exc:
            logger.warning("webhook %s: storage failed (%s); it will be sent again", notification.id, exc)
        except Exception:  # a delivery must never take the server down
            logger.exception("webhook %s: delivery failed inside termjobs", notification.id)
        finally:
            self._in_flight.discard(notification.id)

    async def _deliver_one(self, client: httpx.AsyncClient, notification: PendingNotification) -> None:
        run = await self._storage.get_run(notification.run_id)
        if run is None:
            return  # deleted with its job: its webhooks went with it
        job = await self._storage.get_job(notification.job_id)
        message_id = f"{run.id}.{run.attempt}"
        outcome = await self._attempts(client, notification, message_id, payload(job, run))
        target = redact(notification.url)
        data: JSONObject = {"url": target, "webhook_id": message_id, **outcome}
        if outcome.get("error") is None:
            event, message = EventType.NOTIFY_SENT, f"webhook delivered to {target}"
        else:
            event, message = EventType.NOTIFY_FAILED, f"webhook to {target} failed: {outcome['error']}"
            logger.warning("%s (run %s)", message, run.id, extra={"job_id": run.job_id, "run_id": run.id})
        await self._storage.notification_done(
            notification, event_type=event, message=message, data=data, now=self._clock.now()
        )

    async def _attempts(
        self, client: httpx.AsyncClient, notification: PendingNotification, message_id: str, body: bytes
    ) -> JSONObject:
        """Try to deliver; what happened: ``attempts``, the last answer's
        ``status_code``, and ``error`` unless it was delivered."""
        policy = self._policy
        deadline = trio.current_time() + policy.budget
        for attempt in range(1, policy.attempts + 1):
            answer = await self._post(client, notification, message_id, body, deadline)
            if answer.error is None or not answer.retryable or attempt == policy.attempts:
                return answer.report(attempt)
            delay = answer.retry_after
            if delay is None:
                delay = policy.delays[min(attempt, len(policy.delays)) - 1]
            if trio.current_time() + delay >= deadline:
                late = _Answer(
                    answer.status_code, f"{answer.error}; no time left to retry within {policy.budget:g}s"
                )
                return late.report(attempt)
            await trio.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns")

    async def _post(
        self,
        client: httpx.AsyncClient,
        notification: PendingNotification,
        message_id: str,
        body: bytes,
        deadline: float,
    ) -> _Answer:
        timestamp = int(self._clock.now().timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
        }
        if notification.secret:  # signed only with a secret (Standard Webhooks)
            headers["webhook-signature"] = signature(notification.secret, message_id, timestamp, body)
        import httpx

        timeout = min(self._policy.attempt_timeout, max(0.1, deadline - trio.current_time()))
        try:
            with trio.fail_after(timeout):
                response = await client.post(notification.url, content=body, headers=headers)
        except trio.TooSlowError:
            return _Answer(None, f"no answer within {timeout:g}s", retryable=True)
        except httpx.HTTPError as exc:
            return _Answer(None, f"{type(exc).__name__}: {exc}".rstrip(": "), retryable=True)
        status = response.status_code
        if 200 <= status < 300:
            return _Answer(status)
        retry_after = _retry_after(response.headers.get("retry-after"), self._clock.now())
        retryable = status in RETRYABLE or 500 <= status < 600
        return _Answer(status, f"HTTP {status}", retryable=retryable, retry_after=retry_after)


def _http_client() -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(follow_redirects=False)


@dataclass(frozen=True, slots=True)
class _Answer:
    """What one attempt got back."""

    status_code: int | None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None

    def report(self, attempts: int) -> JSONObject:
        report: JSONObject = {"attempts": attempts, "status_code": self.status_code}
        if self.error is not None:
            report["error"] = self.error
        return report


def payload(job: Job | None, run: Run) -> bytes:
    """The webhook body: the job (secrets masked), the run without its captured output,
    and a short excerpt of what happened."""
    body: JSONObject = {
        "type": "run.finished",
        "job": wire.job_json(job) if job is not None else {"id": run.job_id},
        "run": {**wire.run_json(run, full=False), "excerpt": excerpt(run)},
    }
    told = notice(job, run) if job is not None else None
    if told is not None:
        body["notice"] = told  # an llm job queued from a chat: what to tell it, and where
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def redact(url: str) -> str:
    """``url`` without any user name or password in it (logs and events)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _retry_after(value: str | None, now: dt.datetime) -> float | None:
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())
