"""Output of ``term-llm jobs``: tables, event lines, times and colour. Pure functions.

Nothing here talks to the server or reads the clock: callers pass ``now`` and, for
tests, the time zone (``tz=None`` means the local zone), so every rule can be checked
without a server.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TextIO

from termjobs.cli.client import Job, RunEvent, RunSummary
from termjobs.model import RunStatus

Tone = Literal["ok", "bad", "busy", "warn", "muted", "header"]

_ANSI: Final[dict[Tone, str]] = {
    "ok": "32",  # green
    "bad": "31",  # red
    "busy": "36",  # cyan
    "warn": "33",  # yellow
    "muted": "2",  # dim
    "header": "1",  # bold
}
_STATUS_TONES: Final[dict[str, Tone]] = {
    "succeeded": "ok",
    "failed": "bad",
    "timed_out": "bad",
    "queued": "busy",
    "claimed": "busy",
    "running": "busy",
    "cancel_requested": "warn",
    "cancelled": "warn",
    "skipped": "warn",
    "disabled": "muted",
}
_SHORT_STATUS: Final = {
    "succeeded": "ok",
    "failed": "FAIL",
    "cancelled": "cancelled",
    "timed_out": "timeout",
    "skipped": "skipped",
}
#: Statuses of a run that has not ended (the server's ``ACTIVE_STATUSES``).
ACTIVE_STATUSES: Final = tuple(status.value for status in RunStatus if not status.terminal)
#: Statuses of a run that has ended.
FINISHED_STATUSES: Final = tuple(status.value for status in RunStatus if status.terminal)
#: A finished once-off job disappears from ``jobs list`` this long after its last change.
HIDE_FINISHED_ONCE_AFTER: Final = dt.timedelta(hours=6)
COLUMN_GAP: Final = "  "
EVENT_TYPE_WIDTH: Final = 18
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# ------------------------------------------------------------------- colour


@dataclass(frozen=True, slots=True)
class Style:
    """Colours output when ``enabled`` (decided once, from the output stream)."""

    enabled: bool = False

    def paint(self, text: str, tone: Tone | None) -> str:
        """``text`` in the colour of ``tone`` (unchanged when colour is off)."""
        if not self.enabled or tone is None or not text:
            return text
        return f"\x1b[{_ANSI[tone]}m{text}\x1b[0m"


def colour_enabled(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set (no-color.org)
    or the terminal is ``dumb``."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def status_tone(status: str) -> Tone | None:
    """The colour of a run status (or of ``disabled``)."""
    return _STATUS_TONES.get(status)


# --------------------------------------------------------------------- text


def pretty_json(value: Any) -> str:
    """2-space indented JSON with a trailing newline."""
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def one_line(text: str) -> str:
    """``text`` safe to print on one terminal line: control characters (newlines,
    escape sequences a server-side string could carry) are shown escaped."""
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 32 or 127 <= code < 160:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def truncate(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending in ``...`` when cut."""
    if len(text) <= width:
        return text
    return text[: max(width - 3, 0)] + "..."


# -------------------------------------------------------------------- times


def parse_time(text: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp of the API as an aware datetime; ``None`` if absent or bad."""
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def local_time(text: str | None, tz: dt.tzinfo | None = None) -> str:
    """An API timestamp in the local zone, RFC 3339 to the second; ``-`` if absent."""
    value = parse_time(text)
    return "-" if value is None else value.astimezone(tz).isoformat(timespec="seconds")


def short_date_time(text: str | None, tz: dt.tzinfo | None = None) -> str:
    """``Jan 2 15:04`` in the local zone; ``-`` if absent."""
    value = parse_time(text)
    if value is None:
        return "-"
    local = value.astimezone(tz)
    return f"{local:%b} {local.day} {local:%H:%M}"


def relative_time(when: dt.datetime, now: dt.datetime, tz: dt.tzinfo | None = None) -> str:
    """``just now`` (also for future times), ``5m ago``, ``3h ago``, ``2d ago``, then
    the local date (``Jan 2``) from a week on."""
    age = now - when
    if age < dt.timedelta(minutes=1):
        return "just now"
    if age < dt.timedelta(hours=1):
        return f"{age // dt.timedelta(minutes=1)}m ago"
    if age < dt.timedelta(days=1):
        return f"{age // dt.timedelta(hours=1)}h ago"
    if age < dt.timedelta(days=7):
        return f"{age.days}d ago"
    local = when.astimezone(tz)
    return f"{local:%b} {local.day}"


def short_status(status: str) -> str:
    """``ok``, ``FAIL``, ``timeout``... as shown in the LAST_RUN column."""
    return _SHORT_STATUS.get(status, status)


# ------------------------------------------------------------------- tables


@dataclass(frozen=True, slots=True)
class Column:
    """A table column; cells longer than ``limit`` are cut with ``...``."""

    title: str
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell with an optional colour."""

    text: str
    tone: Tone | None = None


def table(columns: Sequence[Column], rows: Sequence[Sequence[Cell | str]], style: Style) -> str:
    """Left-aligned columns as wide as their widest cell (up to their limit).

    Padding is computed on the plain text and colour added afterwards, so escape
    codes never disturb the alignment.
    """
    body = [[_fit(cell, column) for cell, column in zip(row, columns, strict=True)] for row in rows]
    header = [Cell(column.title, "header") for column in columns]
    widths = [max(len(cell.text) for cell in cells) for cells in zip(header, *body, strict=True)]
    return "".join(_line(cells, widths, style) + "\n" for cells in [header, *body])


def _fit(cell: Cell | str, column: Column) -> Cell:
    cell = Cell(cell) if isinstance(cell, str) else cell
    text = one_line(cell.text)
    if column.limit is not None:
        text = truncate(text, column.limit)
    return Cell(text, cell.tone)


def _line(cells: Sequence[Cell], widths: Sequence[int], style: Style) -> str:
    parts = []
    for index, (cell, width) in enumerate(zip(cells, widths, strict=True)):
        last = index == len(cells) - 1
        padding = "" if last else " " * (width - len(cell.text))
        parts.append(style.paint(cell.text, cell.tone) + padding)
    return COLUMN_GAP.join(parts)


# ---------------------------------------------------------------- jobs list


@dataclass(frozen=True, slots=True)
class JobLine:
    """A job with its newest active run and its newest finished run, if any."""

    job: Job
    active: RunSummary | None = None
    last: RunSummary | None = None


JOB_COLUMNS: Final = (
    Column("NAME", 28),
    Column("TRIGGER"),
    Column("STATUS", 10),
    Column("LAST_RUN", 22),
    Column("NEXT_RUN", 20),
)


def is_hidden(line: JobLine, now: dt.datetime) -> bool:
    """Whether ``jobs list`` hides this job unless ``--all`` is given.

    Hidden: a ``once`` job that has fired and disabled itself more than six hours
    ago, and a ``manual`` ``llm`` job that has run (a finished sub-agent). A job with
    a run still in progress is always shown.
    """
    job = line.job
    if line.active is not None:
        return False
    if job["trigger_type"] == "once" and not job["enabled"] and "next_run_at" not in job:
        updated = parse_time(job["updated_at"])
        return updated is not None and now - updated > HIDE_FINISHED_ONCE_AFTER
    return job["trigger_type"] == "manual" and job["runner_type"] == "llm" and line.last is not None


def jobs_listing(
    lines: Sequence[JobLine], *, show_all: bool, now: dt.datetime, style: Style, tz: dt.tzinfo | None = None
) -> str:
    """The ``jobs list`` table, with the hiding rules and their footer."""
    visible = [line for line in lines if show_all or not is_hidden(line, now)]
    hidden = len(lines) - len(visible)
    if not visible:
        if hidden:
            return f"No active jobs. {hidden} completed once-off/agent job(s) hidden — use --all to show.\n"
        return "No jobs found.\n"
    text = table(JOB_COLUMNS, [_job_row(line, now, tz) for line in visible], style)
    if hidden:
        text += f"\n{hidden} completed once-off/agent job(s) hidden. Use --all to show.\n"
    return text


def _job_row(line: JobLine, now: dt.datetime, tz: dt.tzinfo | None) -> list[Cell | str]:
    job = line.job
    status = "-" if job["enabled"] else "disabled"
    if line.active is not None:
        status = line.active["status"]
    return [
        job["name"],
        job["trigger_type"],
        Cell(status, status_tone(status)),
        _last_run_cell(line.last, now, tz),
        short_date_time(job.get("next_run_at"), tz),
    ]


def _last_run_cell(run: RunSummary | None, now: dt.datetime, tz: dt.tzinfo | None) -> Cell:
    if run is None:
        return Cell("-")
    when = parse_time(run.get("finished_at") or run.get("started_at") or run["created_at"])
    age = "-" if when is None else relative_time(when, now, tz)
    return Cell(f"{age} {short_status(run['status'])}", status_tone(run["status"]))


# --------------------------------------------------------------------- runs

RUN_COLUMNS: Final = (
    Column("RUN_ID"),
    Column("JOB_ID"),
    Column("STATUS"),
    Column("TRIGGER"),
    Column("SCHEDULED_FOR"),
)


def runs_table(runs: Sequence[RunSummary], style: Style, tz: dt.tzinfo | None = None) -> str:
    """The ``jobs runs`` table; ``No runs found.`` when empty."""
    if not runs:
        return "No runs found.\n"
    rows: list[list[Cell | str]] = [
        [
            run["id"],
            run["job_id"],
            Cell(run["status"], status_tone(run["status"])),
            run["trigger"],
            local_time(run["scheduled_for"], tz),
        ]
        for run in runs
    ]
    return table(RUN_COLUMNS, rows, style)


ACTIVE_COLUMNS: Final = (
    Column("JOB_ID"),
    Column("JOB_NAME", 24),
    Column("RUN_ID"),
    Column("STATUS"),
    Column("STARTED_AT"),
    Column("SCHEDULED_FOR"),
    Column("WORKER_ID", 24),
)


def active_entries(runs: Sequence[RunSummary], names: Mapping[str, str]) -> list[dict[str, Any]]:
    """The ``jobs active`` records, latest ``scheduled_for`` first (ties: run id)."""
    ordered = sorted(runs, key=lambda run: run["id"])
    ordered.sort(key=lambda run: parse_time(run["scheduled_for"]) or _EPOCH, reverse=True)
    entries = []
    for run in ordered:
        entry: dict[str, Any] = {
            "job_id": run["job_id"],
            "job_name": names.get(run["job_id"], ""),
            "run_id": run["id"],
            "status": run["status"],
        }
        if "started_at" in run:
            entry["started_at"] = run["started_at"]
        entry["scheduled_for"] = run["scheduled_for"]
        if "worker_id" in run:
            entry["worker_id"] = run["worker_id"]
        entries.append(entry)
    return entries


def active_table(entries: Sequence[Mapping[str, Any]], style: Style, tz: dt.tzinfo | None = None) -> str:
    """The ``jobs active`` table; ``No active runs found.`` when empty."""
    if not entries:
        return "No active runs found.\n"
    rows: list[list[Cell | str]] = [
        [
            entry["job_id"],
            entry["job_name"] or "-",
            entry["run_id"],
            Cell(entry["status"], status_tone(entry["status"])),
            local_time(entry.get("started_at"), tz),
            local_time(entry["scheduled_for"], tz),
            entry.get("worker_id") or "-",
        ]
        for entry in entries
    ]
    return table(ACTIVE_COLUMNS, rows, style)


# ------------------------------------------------------------------- events


def event_lines(event: RunEvent, style: Style, tz: dt.tzinfo | None = None) -> list[str]:
    """``<local time> <event type> <message>`` for one event; an ``output`` event
    gets one such line per line of output (``stdout | text``)."""
    kind = event["event_type"]
    head = f"{local_time(event['created_at'], tz)} {style.paint(kind, _event_tone(kind))}"
    head += " " * max(EVENT_TYPE_WIDTH - len(kind), 0)
    return [f"{head} {one_line(text)}" for text in _event_texts(event)]


def events_text(events: Sequence[RunEvent], style: Style, tz: dt.tzinfo | None = None) -> str:
    """The ``jobs run events`` listing; ``No events found.`` when empty."""
    if not events:
        return "No events found.\n"
    return "".join(line + "\n" for event in events for line in event_lines(event, style, tz))


def _event_texts(event: RunEvent) -> list[str]:
    message = event.get("message", "").strip()
    data = event.get("data")
    if isinstance(data, dict) and data.get("error") and event["event_type"] in _FINAL_EVENTS:
        message = f"{message or 'run finished'}: {data['error']}"
    if not message and event["event_type"] == "output" and isinstance(data, dict):
        text = data.get("text")
        if isinstance(text, str) and text:
            stream = str(data.get("stream", "output"))
            return [f"{stream} | {part}" for part in text.removesuffix("\n").split("\n")]
    return [message or "-"]


_FINAL_EVENTS = frozenset({"failed", "timed_out", "cancelled"})


def _event_tone(event_type: str) -> Tone | None:
    if event_type == "output":
        return None
    return status_tone(event_type) or ("bad" if event_type == "notify_failed" else "muted")


# ------------------------------------------------------------------ cluster

CLUSTER_COLUMNS: Final = (
    Column("SERVER"),
    Column("HOST", 24),
    Column("PID"),
    Column("STATE"),
    Column("HEARTBEAT"),
    Column("JOBS"),
    Column("RUNNING"),
    Column("URL", 40),
)


def cluster_table(cluster: Mapping[str, Any], style: Style) -> str:
    """``GET /v2/cluster`` as a table, this server marked with ``*``."""
    rows: list[list[Cell | str]] = []
    for server in cluster.get("servers", []):
        state = "alive" if server["alive"] else "gone"
        if server["alive"] and server.get("leader"):
            state = "alive, leader"
        mark = "*" if server["id"] == cluster.get("this_server") else ""
        rows.append(
            [
                server["id"] + mark,
                server["host"],
                str(server["pid"]),
                Cell(state, "ok" if server["alive"] else "muted"),
                f"{server['heartbeat_age_seconds']:.1f}s ago",
                str(server["jobs_owned"]),
                str(server["runs_active"]),
                server["url"],
            ]
        )
    mode = "cluster" if cluster.get("mode") == "cluster" else "single server (SQLite)"
    lease = cluster.get("lease_seconds")
    note = f"{mode}, lease {lease:g}s" if isinstance(lease, int | float) else mode
    return table(CLUSTER_COLUMNS, rows, style) + f"\n{note}; * = the server answering\n"
