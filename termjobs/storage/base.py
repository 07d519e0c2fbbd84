"""The storage facade: the named transactions and queries the rest of termjobs uses.

:class:`Storage` is the only way into the database. Each method is one transaction
(or one consistent read); callers never compose statements or transactions. Two
implementations keep the same contract (``tests/storage``): :class:`SqlStorage` over
SQLite or PostgreSQL (``termjobs.storage.database``) and :class:`MemoryStorage`, an
in-memory fake for tests of the layers above (``termjobs.storage.memory``).

Storage persists what it is told; it decides nothing. Status changes are guarded by
``termjobs.lifecycle`` (a refused change returns ``None``); which status to move to is
decided in ``termjobs.rundomain``. Errors are storage errors (:class:`NameTaken`,
:class:`StorageError`), which callers translate for their own clients.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

from termjobs.jobdef import Job
from termjobs.model import (
    EventType,
    JSONObject,
    JSONValue,
    Run,
    RunEvent,
    RunnerType,
    RunOutput,
    RunStatus,
    RunTrigger,
    Session,
    SessionMessage,
    TriggerType,
)
from termjobs.notify import NotifyTarget
from termjobs.rundomain import Ending, FireDecision

T = TypeVar("T")


class StorageError(Exception):
    """Storage could not do what was asked (the message says why)."""


class StorageUnavailable(StorageError):
    """The database could not be reached, or stayed busy; trying again later may work.

    The message carries no connection details (it may reach API clients); the driver's
    error is chained for the log."""

    def __init__(self, message: str = "the database is unavailable; try again shortly") -> None:
        super().__init__(message)


class StorageClosed(StorageUnavailable):
    """Storage has been closed (the server is shutting down)."""

    def __init__(self) -> None:
        super().__init__("storage is closed; the server is shutting down")


class StorageRefused(StorageError):
    """The database refused a write for good (a constraint, a value it cannot store)."""


class NameTaken(StorageError):
    """Another job already has this name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a job named {name!r} already exists; choose another name")
        self.name = name


class DuplicateRun(StorageError):
    """A scheduled run of this job and nominal time is already stored."""


class NotOwner(StorageError):
    """A cluster's fence refused a write: this server does not own the job (another
    took it over), or its own lease lapsed (it stalled past ``--lease-seconds``)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"this server no longer owns job {job_id}")
        self.job_id = job_id


def storable(text: str | None) -> str | None:
    """``text`` without NUL characters, which PostgreSQL text columns refuse (a program
    may print anything); each becomes U+FFFD, as undecodable bytes do."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list, with the count of all matching rows."""

    items: list[T]
    total: int


@dataclass(frozen=True, slots=True)
class JobFilters:
    """Optional filters of the job list (they combine with AND)."""

    #: a substring of the name, any case
    name: str | None = None
    enabled: bool | None = None
    trigger_type: TriggerType | None = None
    runner_type: RunnerType | None = None
    #: ``(key, value)`` pairs the job's labels must all hold: the label is that string,
    #: or a number or boolean spelled so in JSON
    labels: tuple[tuple[str, str], ...] = ()
    #: Jobs whose id starts with this text, case-sensitively (CLI prefix resolution).
    id_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class RunFilters:
    """Optional filters of the run list (they combine with AND)."""

    #: a job id or an exact job name
    job_ref: str | None = None
    #: any of these statuses
    statuses: tuple[RunStatus, ...] = ()
    trigger: RunTrigger | None = None
    #: created at or after
    created_after: dt.datetime | None = None
    #: created before
    created_before: dt.datetime | None = None


ALL_RUNS: Final = RunFilters()
#: How long the answer to a request with an ``Idempotency-Key`` is kept.
RECEIPT_LIFETIME: Final = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class ScheduleEntry:
    """What the supervisor keeps in memory about a job whose actor is hibernating."""

    job_id: str
    enabled: bool
    next_run_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Receipt:
    """The answer to a request made with an ``Idempotency-Key``, kept to be replayed."""

    key: str
    #: a digest of the request (method, path and body): a different request with the
    #: same key is refused
    fingerprint: str
    status: int
    body: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class PendingNotification:
    """A completion webhook not delivered yet (the outbox)."""

    id: int
    run_id: str
    job_id: str
    url: str
    secret: str | None
    created_at: dt.datetime


class DuplicateReceipt(StorageError):
    """A receipt with this key is already stored (the request was answered before)."""


@dataclass(frozen=True, slots=True)
class JobView:
    """A job with its newest run (a summary), as the API shows it."""

    job: Job
    last_run: Run | None


@dataclass(frozen=True, slots=True)
class SessionTranscript:
    """A session with its messages, oldest first."""

    session: Session
    messages: list[SessionMessage]


class Storage(Protocol):
    """Every transaction and query of termjobs (see the module docstring)."""

    async def schema_is_current(self) -> bool:
        """Whether the database answers and its schema is this version's (readiness)."""
        ...

    async def data_version(self) -> object | None:
        """A value (compared for equality only) that changes whenever the stored data
        may have changed since it was last taken (a commit by any writer, in any
        process), for keeping what was read meanwhile; ``None`` when this store cannot
        tell, and nothing may be kept."""
        ...

    # ------------------------------------------------------------------ jobs

    async def create_job(self, job: Job, *, receipt: Receipt | None = None, owner: str | None = None) -> None:
        """Store a new job (and the receipt of the request, if any, in the same
        transaction); :class:`NameTaken` if its name is in use, :class:`DuplicateReceipt`
        if the receipt's key is. In a cluster, ``owner`` is the server that runs it."""
        ...

    async def import_jobs(self, jobs: Sequence[Job]) -> None:
        """Store many new jobs at once (imports, benchmarks); all or none."""
        ...

    async def update_job(self, job: Job) -> None:
        """Store every field of ``job``; :class:`NameTaken` if renamed onto a taken name."""
        ...

    async def delete_job(self, job_id: str) -> bool:
        """Delete a job with its runs and events; whether it existed."""
        ...

    async def get_job(self, job_id: str) -> Job | None: ...

    async def get_jobs(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs with these ids that exist."""
        ...

    async def resolve_job(self, ref: str) -> Job | None:
        """The job whose id is ``ref``, else the job named exactly ``ref``."""
        ...

    async def job_view(self, ref: str) -> JobView | None:
        """:meth:`resolve_job` with the job's newest run, in one read."""
        ...

    async def jobs_page(self, *, limit: int, offset: int, filters: JobFilters) -> Page[JobView]:
        """Jobs, newest first, each with its newest run."""
        ...

    async def schedule_index(self, job_ids: Sequence[str] | None = None) -> list[ScheduleEntry]:
        """Every job's (or these jobs') id and next fire time (cheap: for start-up)."""
        ...

    # ------------------------------------------------------------------ runs

    async def create_run(
        self, run: Run, *, data: JSONObject | None = None, receipt: Receipt | None = None
    ) -> Run:
        """Store a new queued run and its ``queued`` event (``data`` added to it), and
        the receipt of the request, if any (:class:`DuplicateReceipt` if its key is taken)."""
        ...

    async def record_fires(
        self,
        job: Job,
        decisions: Sequence[FireDecision],
        *,
        now: dt.datetime,
        notify: tuple[NotifyTarget, ...] = (),
    ) -> list[Run]:
        """Store a scheduler wake-up: the queued and skipped runs (with the webhooks of
        skipped ones) and the job's advanced schedule, atomically; fires already stored
        for the same nominal time are ignored. Returns the queued runs."""
        ...

    async def start_run(self, run: Run, *, worker_id: str, now: dt.datetime) -> Run | None:
        """``queued -> claimed -> running`` with both events; ``None`` if not queued."""
        ...

    async def finish_runs(self, endings: Sequence[Ending], *, now: dt.datetime) -> list[Run | None]:
        """Write each run's final state, terminal event, retry (if any) and the webhooks
        that want its status, in one transaction. A run whose cancel was requested meanwhile gets the ending's
        ``if_cancel_requested`` outcome instead, without retry. ``None`` for a run that
        was already terminal."""
        ...

    async def cancel_queued(
        self, run: Run, *, now: dt.datetime, message: str, notify: tuple[NotifyTarget, ...] = ()
    ) -> Run | None:
        """``queued|claimed -> cancelled`` before the run started."""
        ...

    async def skip_queued(
        self,
        run: Run,
        *,
        now: dt.datetime,
        message: str,
        data: JSONObject,
        notify: tuple[NotifyTarget, ...] = (),
    ) -> Run | None:
        """``queued -> skipped`` (a retry that came due while its job was paused or busy)."""
        ...

    async def request_cancel(self, run: Run, *, now: dt.datetime, message: str) -> Run | None:
        """``running -> cancel_requested``; ``None`` if the run is not running."""
        ...

    async def get_run(self, run_id: str, *, full: bool = True) -> Run | None:
        """The run (``full`` includes the captured payloads)."""
        ...

    async def runs_page(
        self, *, limit: int, offset: int, filters: RunFilters = ALL_RUNS, full: bool = True
    ) -> Page[Run]:
        """Runs, newest first (creation time, then insertion order)."""
        ...

    async def active_runs(self, job_ids: Sequence[str] | None = None) -> list[Run]:
        """Non-terminal runs (of these jobs), each job's oldest first."""
        ...

    async def update_run_output(self, run_id: str, output: RunOutput, *, now: dt.datetime) -> Run | None:
        """Replace what a run has reported so far (an LLM run's response after each
        turn), while it is ``running`` or ``cancel_requested``; the updated run, or
        ``None`` if it is in any other status (its final state is never touched)."""
        ...

    # ---------------------------------------------------------------- events

    async def add_event(
        self, run: Run, event_type: EventType, message: str | None, data: JSONValue, *, now: dt.datetime
    ) -> RunEvent:
        """Append an event to ``run``'s timeline; the stored event once committed."""
        ...

    async def submit_event(
        self, run: Run, event_type: EventType, message: str | None, data: JSONValue, *, now: dt.datetime
    ) -> None:
        """Queue an event for the next commit without waiting for it (live output);
        it is committed in order with every other write."""
        ...

    async def events_page(
        self, run_id: str, *, since_id: int, limit: int, offset: int
    ) -> Page[RunEvent] | None:
        """A run's events after ``since_id``, oldest first; ``None`` if no such run."""
        ...

    async def events_after(
        self, since_id: int, *, job_id: str | None = None, run_id: str | None = None, limit: int = 1000
    ) -> list[RunEvent]:
        """Events after ``since_id`` (of one job or run), oldest first."""
        ...

    async def max_event_id(self) -> int:
        """The newest event's id (0 when there is none)."""
        ...

    # ------------------------------------------------------ webhooks, receipts

    async def pending_notifications(
        self, *, limit: int, owner: str | None = None
    ) -> list[PendingNotification]:
        """Undelivered webhooks, oldest first; in a cluster, those of the jobs ``owner``
        (a server) owns: each is delivered by one server."""
        ...

    async def notification_done(
        self,
        notification: PendingNotification,
        *,
        event_type: EventType,
        message: str,
        data: JSONObject,
        now: dt.datetime,
    ) -> None:
        """Take a webhook out of the outbox, recording how it went on its run's timeline."""
        ...

    async def receipt(self, key: str, *, since: dt.datetime) -> Receipt | None:
        """The receipt stored under ``key`` at or after ``since`` (older ones expired)."""
        ...

    async def delete_receipts(self, *, before: dt.datetime) -> int:
        """Delete expired receipts; how many."""
        ...

    # -------------------------------------------------------------- sessions

    async def save_session(self, session: Session, messages: Sequence[SessionMessage]) -> None:
        """Create or update ``session`` and append ``messages`` to its transcript, in
        one transaction (the messages' ``id`` is assigned here)."""
        ...

    async def get_session(self, session_id: str) -> SessionTranscript | None:
        """The session with its whole transcript; ``None`` if there is no such session."""
        ...

    async def delete_orphan_sessions(self, *, before: dt.datetime, limit: int) -> int:
        """Delete up to ``limit`` sessions that no run refers to (``session_id``) and
        that were last updated before ``before``, with their messages; how many."""
        ...

    # ------------------------------------------------------------- retention

    async def expired_runs(self, *, before: dt.datetime, limit: int) -> list[str]:
        """Up to ``limit`` terminal runs that ended before ``before``."""
        ...

    async def jobs_over_run_cap(self, *, cap: int) -> list[str]:
        """Jobs that keep more than ``cap`` terminal runs."""
        ...

    async def runs_beyond_cap(self, job_id: str, *, cap: int, limit: int) -> list[str]:
        """Up to ``limit`` of the job's terminal runs older than its newest ``cap``."""
        ...

    async def delete_terminal_runs(self, run_ids: Sequence[str]) -> int:
        """Delete these runs (and their events) if they are terminal; how many."""
        ...
