"""Decisions on a job, asked of any server of a cluster, made by the job's owner.

Reads never come here: every server reads the database. A decision (trigger, update,
pause, resume, delete, cancel a run) must be made by the one actor that owns the job,
on the one server that owns it, or two servers could both admit a run past a
``forbid`` policy. :class:`Router` looks the owner up; if it is this server, its own
supervisor decides; else the request is stored in ``cluster_requests``, the owner is
woken by NOTIFY and answers with a stored reply (a lost NOTIFY is covered by polling).
While the job has no live owner (its server died and the takeover has not happened
yet) the request waits for the new owner, up to the request timeout, then answers 503
with ``Retry-After``. :class:`RequestServer` answers the requests sent to this server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

from termjobs import errors, jobspec, wire
from termjobs.actors.protocol import Idempotency
from termjobs.actors.supervisor import Supervisor
from termjobs.errors import AlreadyAnswered, JobNotFound, RunNotFound, TermjobsError, Unavailable
from termjobs.jobdef import Job, JobDefinition
from termjobs.jobspec import JobPatch
from termjobs.model import JSONObject, Run
from termjobs.storage import NotOwner, StorageError, StorageUnavailable
from termjobs.storage.base import RECEIPT_LIFETIME
from termjobs.storage.database import SqlStorage
from termjobs.storage.sql.cluster import PendingRequest

logger = logging.getLogger(__name__)

#: How often a waiting sender looks for its reply without being woken.
REPLY_POLL_S = 1.0
#: How often the owner looks for requests without being woken.
REQUEST_POLL_S = 2.0
#: Errors a reply may carry, rebuilt with their own status on the sending server.
_ERRORS: Final[dict[str, type[TermjobsError]]] = {
    cls.__name__: cls
    for cls in (
        errors.InvalidRequest,
        errors.JobNotFound,
        errors.RunNotFound,
        errors.Conflict,
        errors.AlreadyAnswered,
        errors.KeyReused,
        errors.Unavailable,
    )
}
_NOT_OWNER: Final = "not_owner"
#: Idempotency keys the cluster gives triggers sent between servers.
INTERNAL_KEY_PREFIX: Final = "termjobs-cluster-"


@dataclass(frozen=True, slots=True)
class _Decision:
    """One decision: what the owner is sent, and how this server makes it itself."""

    body: JSONObject
    local: Callable[[], Awaitable[JSONObject]]


class Router:
    """Sends each decision to the owner of its job (see the module docstring)."""

    def __init__(
        self,
        supervisor: Supervisor,
        storage: SqlStorage,
        *,
        worker_id: str,
        lease_s: float,
        request_timeout: float,
    ) -> None:
        self.supervisor = supervisor
        self.storage = storage
        self.worker_id = worker_id
        self.lease_s = lease_s
        self.request_timeout = request_timeout
        self._replies: dict[int, trio.Event] = {}

    # ------------------------------------------------------------- the API

    async def create_job(self, spec: JobDefinition, *, idempotency: Idempotency | None = None) -> Job:
        """Any server stores a new job, giving it to the live server it hashes to."""
        return await self.supervisor.create_job(spec, idempotency=idempotency)

    async def trigger(
        self, ref: str, *, overrides: JSONObject | None = None, idempotency: Idempotency | None = None
    ) -> Run:
        job_id = await self._job_id(ref)
        tried_here = self.supervisor.runs_job(job_id)
        if tried_here:
            # The hot path: this server runs the job (no JSON round trip); its write of
            # the run is fenced, so a job lost meanwhile raises NotOwner: ask the owner.
            with contextlib.suppress(NotOwner):
                return await self.supervisor.trigger(job_id, overrides=overrides, idempotency=idempotency)
        body: JSONObject = {"op": "trigger", "job_id": job_id, "overrides": overrides}
        # Sent to another server, a trigger always carries a key: should its owner die
        # after storing the run but before answering, the new owner answers the same
        # request with the stored run instead of queueing a second one.
        sent = idempotency or Idempotency(f"{INTERNAL_KEY_PREFIX}{secrets.token_urlsafe(18)}", "cluster")
        body["idempotency"] = [sent.key, sent.fingerprint]

        async def local() -> JSONObject:
            run = await self.supervisor.trigger(job_id, overrides=overrides, idempotency=idempotency)
            return {"run": wire.run_json(run)}

        answer = await self._decide(job_id, _Decision(body, local), here_first=not tried_here)
        run = answer["run"]
        assert isinstance(run, dict)
        return wire.run_from_json(run)

    async def update(self, ref: str, patch: JobPatch) -> Job:
        job_id = await self._job_id(ref)

        async def local() -> JSONObject:
            await self.supervisor.update(job_id, patch)
            return {}

        await self._decide(
            job_id, _Decision({"op": "update", "job_id": job_id, "patch": patch.source}, local)
        )
        return await self._stored_job(job_id)

    async def pause(self, ref: str) -> Job:
        return await self.update(ref, JobPatch.enabled(False))

    async def resume(self, ref: str) -> Job:
        return await self.update(ref, JobPatch.enabled(True))

    async def delete(self, ref: str, *, cancel_active: bool) -> str:
        job_id = await self._job_id(ref)

        async def local() -> JSONObject:
            await self.supervisor.delete(job_id, cancel_active=cancel_active)
            return {}

        body: JSONObject = {"op": "delete", "job_id": job_id, "cancel_active": cancel_active}
        # Gone while the request was on its way: deleted, which is what was asked (its
        # owner may have died after deleting it, before answering).
        with contextlib.suppress(JobNotFound):
            await self._decide(job_id, _Decision(body, local))
        return job_id

    async def cancel_run(self, run_id: str) -> Run:
        run = await self.storage.get_run(run_id, full=False)
        if run is None:
            raise RunNotFound()
        if not run.status.terminal:

            async def local() -> JSONObject:
                await self.supervisor.cancel_run(run_id)
                return {}

            body: JSONObject = {"op": "cancel", "job_id": run.job_id, "run_id": run_id}
            try:
                await self._decide(run.job_id, _Decision(body, local))
            except JobNotFound:
                raise RunNotFound() from None  # deleted with its job meanwhile
        stored = await self.storage.get_run(run_id)
        if stored is None:
            raise RunNotFound()
        return stored

    # ------------------------------------------------------------- routing

    async def _job_id(self, ref: str) -> str:
        if self.supervisor.runs_job(ref):
            return ref  # an id of a job this server runs needs no lookup
        job = await self.storage.resolve_job(ref)
        if job is None:
            raise JobNotFound()
        return job.id

    async def _stored_job(self, job_id: str) -> Job:
        job = await self.storage.get_job(job_id)
        if job is None:
            raise JobNotFound()
        return job

    async def _decide(self, job_id: str, decision: _Decision, *, here_first: bool = True) -> JSONObject:
        """The owner's answer to ``decision`` (see the module docstring); ``here_first``:
        made at once by this server's supervisor if it runs the job."""
        deadline = trio.current_time() + self.request_timeout
        pause = 0.05
        if here_first and self.supervisor.runs_job(job_id):
            with contextlib.suppress(NotOwner):
                return await decision.local()  # this server's writes are fenced
        while True:
            found = await self.storage.job_owner(job_id, lease_s=self.lease_s)
            if found is None:
                raise JobNotFound()
            owner, alive = found
            if alive and owner == self.worker_id:
                try:
                    return await decision.local()
                except NotOwner:
                    pass  # handed over or lost meanwhile: look again
            elif alive and owner is not None:
                answer = await self._ask(owner, job_id, decision.body, deadline)
                if answer is not None:
                    return answer
            if trio.current_time() + pause > deadline:
                raise Unavailable(
                    f"job {job_id} has no live server to decide on it right now (its server stopped; "
                    f"another takes it over within {2 * self.lease_s:g}s); try again shortly"
                )
            await trio.sleep(pause)
            pause = min(0.5, pause * 2)

    async def _ask(self, owner: str, job_id: str, body: JSONObject, deadline: float) -> JSONObject | None:
        """Send ``body`` to ``owner`` and wait for its reply; ``None`` if it turned out
        not to own the job (look the owner up again)."""
        request_id = await self.storage.send_request(
            sender_id=self.worker_id, target_id=owner, job_id=job_id, body=json.dumps(body)
        )
        woken = self._replies.setdefault(request_id, trio.Event())
        try:
            while True:
                with trio.move_on_at(min(deadline, trio.current_time() + REPLY_POLL_S)):
                    await woken.wait()
                reply = await self.storage.request_reply(request_id)
                if reply is not None:
                    return _answer(json.loads(reply))
                if trio.current_time() >= deadline:
                    raise Unavailable(
                        f"the server that owns job {job_id} did not answer in time; the request may "
                        "still take effect: look before sending it again"
                    )
                found = await self.storage.job_owner(job_id, lease_s=self.lease_s)
                if found is None:
                    raise JobNotFound()  # deleted meanwhile (perhaps by this very request)
                if found[1] and found[0] not in (owner, None):
                    owner = found[0]  # taken over meanwhile: the new owner answers it
                    await self.storage.retarget_request(request_id, owner)
        finally:
            del self._replies[request_id]

    def replied(self, payload: str) -> None:
        """NOTIFY handler: ``reply <id>`` was stored."""
        kind, _, ident = payload.partition(" ")
        if kind == "reply" and ident.isdigit():
            woken = self._replies.get(int(ident))
            if woken is not None:
                woken.set()


def _answer(reply: Any) -> JSONObject | None:
    if not isinstance(reply, dict):
        raise TermjobsError("a cluster server sent an unreadable reply")
    if reply.get(_NOT_OWNER):
        return None
    failure = reply.get("error")
    if isinstance(failure, dict):
        cls = _ERRORS.get(str(failure.get("class")), TermjobsError)
        raise cls(str(failure.get("message", "")))
    result = reply.get("ok")
    if not isinstance(result, dict):
        raise TermjobsError("a cluster server sent an unreadable reply")
    return result


class RequestServer:
    """Answers the decisions other servers send to this one (see the module docstring)."""

    def __init__(self, supervisor: Supervisor, storage: SqlStorage, *, worker_id: str) -> None:
        self.supervisor = supervisor
        self.storage = storage
        self.worker_id = worker_id
        self._wake = trio.Event()
        self._in_hand: set[int] = set()

    def woken(self, payload: str = "") -> None:
        """NOTIFY handler (``request <id>``), and a reconnect: look for requests."""
        if not payload or payload.startswith("request"):
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                with trio.move_on_after(REQUEST_POLL_S):
                    await self._wake.wait()
                self._wake = trio.Event()
                try:
                    pending = await self.storage.pending_requests(self.worker_id)
                except StorageError as exc:
                    logger.warning("could not read requests from other servers: %s", exc)
                    continue
                for request in pending:
                    if request.id not in self._in_hand:
                        self._in_hand.add(request.id)
                        nursery.start_soon(self._serve, request)

    async def _serve(self, request: PendingRequest) -> None:
        try:
            reply = await self._reply(request)
            with trio.CancelScope(shield=True), trio.move_on_after(30):
                await self.storage.answer_request(request, json.dumps(reply))
        except StorageError as exc:
            logger.warning("could not answer request %d: %s; it is answered again", request.id, exc)
        finally:
            self._in_hand.discard(request.id)

    async def _reply(self, request: PendingRequest) -> JSONObject:
        try:
            body = json.loads(request.body)
            return {"ok": await self._decide(body)}
        except NotOwner:
            return {_NOT_OWNER: True}
        except StorageUnavailable as exc:
            return {"error": {"class": "Unavailable", "message": str(exc)}}
        except TermjobsError as exc:
            name = type(exc).__name__ if type(exc).__name__ in _ERRORS else "TermjobsError"
            return {"error": {"class": name, "message": exc.message}}
        except Exception:
            ref = secrets.token_hex(4)
            logger.exception("request %d from %s failed (ref %s)", request.id, request.sender_id, ref)
            return {
                "error": {
                    "class": "TermjobsError",
                    "message": f"internal error (ref {ref}) on the job's server",
                }
            }

    async def _stored_answer(self, idempotency: Idempotency) -> JSONObject:
        since = self.supervisor.clock_now() - RECEIPT_LIFETIME
        found = await self.storage.receipt(idempotency.key, since=since)
        if found is None or found.fingerprint != idempotency.fingerprint:
            raise errors.KeyReused(
                "this Idempotency-Key was used with a different request; use a new key for a new request"
            )
        answer = json.loads(found.body)
        if not isinstance(answer, dict):
            raise TermjobsError("a stored answer could not be read")
        return answer

    async def _decide(self, body: dict[str, Any]) -> JSONObject:
        supervisor, job_id = self.supervisor, str(body["job_id"])
        match body.get("op"):
            case "trigger":
                pair = body.get("idempotency")
                idempotency = Idempotency(str(pair[0]), str(pair[1])) if isinstance(pair, list) else None
                overrides = body.get("overrides")
                try:
                    run = await supervisor.trigger(
                        job_id,
                        overrides=overrides if isinstance(overrides, dict) else None,
                        idempotency=idempotency,
                    )
                except AlreadyAnswered:
                    # Answered before (by this server, or by an owner that died after
                    # storing the run): the stored answer is the answer.
                    if idempotency is None:
                        raise
                    return {"run": await self._stored_answer(idempotency)}
                return {"run": wire.run_json(run)}
            case "update":
                await supervisor.update(job_id, jobspec.parse_patch(body["patch"]))
            case "delete":
                await supervisor.delete(job_id, cancel_active=bool(body.get("cancel_active")))
            case "cancel":
                await supervisor.cancel_run(str(body["run_id"]))
            case other:
                raise TermjobsError(f"unknown cluster request {other!r}")
        return {}
