"""Core value types: enums, identifiers, timestamps, and the Run / RunEvent values.

Values are frozen dataclasses; components change state by building new values
(``dataclasses.replace``), so a snapshot handed to the HTTP layer can never change
underneath it. A job's value lives in ``termjobs.jobdef``; JSON shapes live in
``termjobs.wire``; how a run comes to be and how it ends lives in
``termjobs.rundomain``.

A run's fields are written out once, here: :class:`RunOutput` is what a runner
reports (and what the run keeps of it), nested unchanged in :class:`Run`; storage and
the wire format derive their columns and keys from these dataclasses.
"""

from __future__ import annotations

import base64
import datetime as dt
import enum
import os
import secrets
import threading
from dataclasses import dataclass
from typing import TypeAlias

#: A decoded JSON value (object, array, string, number, bool or null).
JSONValue: TypeAlias = "dict[str, JSONValue] | list[JSONValue] | str | int | float | bool | None"
#: A decoded JSON object.
JSONObject: TypeAlias = "dict[str, JSONValue]"


class RunnerType(enum.StrEnum):
    """How a run is executed."""

    LLM = "llm"
    PROGRAM = "program"


class TriggerType(enum.StrEnum):
    """What creates scheduled runs of a job."""

    MANUAL = "manual"
    ONCE = "once"
    CRON = "cron"


class ConcurrencyPolicy(enum.StrEnum):
    """What happens when a run is due while others of the same job are active."""

    FORBID = "forbid"
    ALLOW = "allow"
    REPLACE = "replace"
    QUEUE = "queue"


class MisfirePolicy(enum.StrEnum):
    """What happens to scheduled fires that were missed by more than the grace."""

    SKIP = "skip"
    RUN = "run"


class RunTrigger(enum.StrEnum):
    """Why a run exists."""

    MANUAL = "manual"
    SCHEDULE = "schedule"
    RETRY = "retry"


class RunStatus(enum.StrEnum):
    """Run statuses; the allowed moves between them are in ``termjobs.lifecycle``."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    RUNNING = "running"
    CANCEL_REQUESTED = "cancel_requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


#: The statuses a run never leaves; each is also the type of the run's last event.
TERMINAL_STATUSES = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.FAILED,
        RunStatus.TIMED_OUT,
        RunStatus.CANCELLED,
        RunStatus.SKIPPED,
    }
)
ACTIVE_STATUSES = frozenset(set(RunStatus) - TERMINAL_STATUSES)


class EventType(enum.StrEnum):
    """Entries of a run's timeline."""

    QUEUED = "queued"
    CLAIMED = "claimed"
    RUNNING = "running"
    REQUEUED = "requeued"
    CANCELLED = "cancelled"
    CANCEL_REQUESTED = "cancel_requested"
    OUTPUT = "output"
    TOOL_START = "tool_start"
    TOOL_END = "tool_end"
    PHASE = "phase"
    TURN_COMPLETE = "turn_complete"
    PROGRESS_UPDATE = "progress_update"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    RETRY_SCHEDULED = "retry_scheduled"
    NOTIFY_SENT = "notify_sent"
    NOTIFY_FAILED = "notify_failed"


#: The events that end a run's timeline (one per terminal status).
TERMINAL_EVENTS = frozenset(EventType(status.value) for status in TERMINAL_STATUSES)


class ExitReason(enum.StrEnum):
    """Why a run ended, in more detail than its status."""

    NATURAL_COMPLETION = "natural_completion"
    MAX_TURNS_EXCEEDED = "max_turns_exceeded"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    EXCEPTION = "exception"
    EMPTY_RESPONSE = "empty_response"
    WORKER_LOST = "worker_lost"


# ---------------------------------------------------------------------------- ids


class _RandomPool:
    """Random bytes for ids, read from the OS a few kilobytes at a time: one
    ``getrandom`` call per id took 11% of the event loop while 100,000 jobs fired.
    Thread-safe; a forked child starts with an empty pool (never its parent's bytes)."""

    _CHUNK = 9 * 512

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = b""
        self._at = 0
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._bytes, self._at = b"", 0

    def take(self, size: int) -> bytes:
        with self._lock:
            if self._at + size > len(self._bytes):
                self._bytes, self._at = secrets.token_bytes(max(self._CHUNK, size)), 0
            start = self._at
            self._at = start + size
            return self._bytes[start : start + size]


_POOL = _RandomPool()


def _new_id(prefix: str) -> str:
    # 9 random bytes -> 12 base64url characters, as in the reference system.
    return prefix + base64.urlsafe_b64encode(_POOL.take(9)).decode("ascii")


def new_job_id() -> str:
    """A fresh ``job_`` identifier."""
    return _new_id("job_")


def new_run_id() -> str:
    """A fresh ``run_`` identifier."""
    return _new_id("run_")


def new_worker_id() -> str:
    """A fresh ``worker_`` identifier (one per server process)."""
    return _new_id("worker_")


# --------------------------------------------------------------------- timestamps


def format_ts(value: dt.datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` suffix; fractional seconds only when non-zero."""
    text = value.astimezone(dt.UTC).replace(tzinfo=None).isoformat()  # C-fast; hot in lists
    return (text.rstrip("0") if "." in text else text) + "Z"


def parse_ts(text: str) -> dt.datetime | None:
    """Parse an RFC 3339 timestamp that carries an offset; ``None`` if it does not."""
    try:
        value = dt.datetime.fromisoformat(text.strip())
        if value.tzinfo is None:
            return None
        return value.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None


# -------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True, kw_only=True)
class RunOutput:
    """What a runner observed of one run, kept on the run as it was reported.

    Storage keeps each field in a column of the same name; the API shows each one
    unless it is empty (``exit_code`` unless it is absent).
    """

    exit_code: int | None = None
    session_id: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    thinking: str | None = None
    response: str | None = None
    truncated: bool = False
    turn_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0


#: Nothing observed yet: the output of every new run (values are immutable, so one
#: serves all; 100,000 runs are created in the second their jobs fire).
NO_OUTPUT = RunOutput()

#: ``RunOutput`` fields that hold the (possibly large) captured payloads: summaries
#: (run lists, ``last_run``) leave them out.
PAYLOAD_FIELDS = frozenset({"stdout", "stderr", "thinking", "response"})


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One execution attempt of a job."""

    id: str
    job_id: str
    attempt: int
    trigger: RunTrigger
    scheduled_for: dt.datetime
    status: RunStatus
    worker_id: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    error: str | None = None
    exit_reason: ExitReason | None = None
    retry_of: str | None = None
    #: what this run changes of its job's definition (``args``, ``env``, ``timeout_seconds``...)
    overrides: JSONObject | None = None
    output: RunOutput = NO_OUTPUT
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class RunEvent:
    """One entry of a run's timeline. ``id`` increases strictly across all runs."""

    id: int
    run_id: str
    job_id: str
    event_type: EventType
    message: str | None
    data: JSONValue | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """An LLM conversation, kept across the runs that continue it.

    ``job_id`` is the job whose run started it (sessions outlive their job); the
    counters add up every turn of every run.
    """

    id: str
    job_id: str | None = None
    name: str | None = None
    agent: str
    provider: str
    model: str
    turn_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionMessage:
    """One message of a session's transcript: ``content`` is the message as the LLM
    runner keeps it (``termjobs.runners.llm.messages``). ``id`` orders the transcript;
    storage assigns it."""

    id: int = 0
    session_id: str
    run_id: str | None = None
    role: str
    content: JSONValue
    created_at: dt.datetime
