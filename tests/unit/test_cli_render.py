"""Output of ``term-llm jobs``: times, statuses, tables, hiding rules, event lines."""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any, cast
from zoneinfo import ZoneInfo

import pytest

from termjobs.cli import render
from termjobs.cli.client import Job, RunEvent, RunSummary
from termjobs.cli.render import Cell, Column, JobLine, Style

UTC = dt.UTC
NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
BERLIN = ZoneInfo("Europe/Berlin")
PLAIN = Style(enabled=False)


def job(name: str = "j", **fields: Any) -> Job:
    value: dict[str, Any] = {
        "id": f"job_{name}",
        "name": name,
        "enabled": True,
        "runner_type": "program",
        "trigger_type": "manual",
        "created_at": "2026-03-01T00:00:00Z",
        "updated_at": "2026-03-01T00:00:00Z",
    }
    value.update(fields)
    return cast(Job, value)


def run(run_id: str = "run_1", status: str = "succeeded", **fields: Any) -> RunSummary:
    value: dict[str, Any] = {
        "id": run_id,
        "job_id": "job_j",
        "attempt": 1,
        "trigger": "manual",
        "scheduled_for": "2026-03-10T11:00:00Z",
        "status": status,
        "created_at": "2026-03-10T11:00:00Z",
        "updated_at": "2026-03-10T11:00:00Z",
    }
    value.update(fields)
    return cast(RunSummary, value)


# ------------------------------------------------------------------ times


@pytest.mark.parametrize(
    ("age", "text"),
    [
        (dt.timedelta(seconds=-300), "just now"),  # a future time
        (dt.timedelta(0), "just now"),
        (dt.timedelta(seconds=59), "just now"),
        (dt.timedelta(seconds=60), "1m ago"),
        (dt.timedelta(minutes=59, seconds=59), "59m ago"),
        (dt.timedelta(hours=1), "1h ago"),
        (dt.timedelta(hours=23, minutes=59), "23h ago"),
        (dt.timedelta(days=1), "1d ago"),
        (dt.timedelta(days=6, hours=23), "6d ago"),
        (dt.timedelta(days=7), "Mar 3"),
        (dt.timedelta(days=40), "Jan 29"),
    ],
)
def test_relative_time(age: dt.timedelta, text: str) -> None:
    assert render.relative_time(NOW - age, NOW, UTC) == text


def test_relative_time_uses_the_local_date() -> None:
    late_evening_utc = dt.datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    assert render.relative_time(late_evening_utc, NOW, UTC) == "Mar 1"
    assert render.relative_time(late_evening_utc, NOW, BERLIN) == "Mar 2"


def test_times_are_shown_in_the_local_zone() -> None:
    assert render.local_time("2026-03-10T11:00:00.123456Z", BERLIN) == "2026-03-10T12:00:00+01:00"
    assert render.local_time("2026-07-10T11:00:00Z", BERLIN) == "2026-07-10T13:00:00+02:00"
    assert render.local_time(None, BERLIN) == render.local_time("nonsense", BERLIN) == "-"
    assert render.short_date_time("2026-03-10T23:05:00Z", BERLIN) == "Mar 11 00:05"
    assert render.short_date_time(None) == "-"


@pytest.mark.parametrize(
    ("status", "short"),
    [
        ("succeeded", "ok"),
        ("failed", "FAIL"),
        ("cancelled", "cancelled"),
        ("timed_out", "timeout"),
        ("skipped", "skipped"),
        ("cancel_requested", "cancel_requested"),
        ("running", "running"),
    ],
)
def test_short_status(status: str, short: str) -> None:
    assert render.short_status(status) == short


# ------------------------------------------------------------------ text and colour


def test_one_line_escapes_control_characters() -> None:
    assert render.one_line("a\nb\tc\r\x1b[31md\x7f") == "a\\nb\\tc\\r\\x1b[31md\\x7f"
    assert render.one_line("naïve ✓") == "naïve ✓"


def test_truncate() -> None:
    assert render.truncate("abcdef", 6) == "abcdef"
    assert render.truncate("abcdefg", 6) == "abc..."


class FakeStream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize(
    ("tty", "environ", "enabled"),
    [
        (True, {}, True),
        (False, {}, False),
        (True, {"NO_COLOR": "1"}, False),
        (True, {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value counts
        (True, {"TERM": "dumb"}, False),
    ],
)
def test_colour_only_on_a_terminal_without_no_color(
    tty: bool, environ: dict[str, str], enabled: bool
) -> None:
    assert render.colour_enabled(FakeStream(tty), environ) is enabled


def test_style_paints_only_when_enabled() -> None:
    assert Style(enabled=True).paint("ok", "ok") == "\x1b[32mok\x1b[0m"
    assert Style(enabled=True).paint("x", None) == "x"
    assert PLAIN.paint("ok", "ok") == "ok"


def test_pretty_json_is_indented_by_two_with_a_newline() -> None:
    assert render.pretty_json({"a": [1], "é": True}) == '{\n  "a": [\n    1\n  ],\n  "é": true\n}\n'


# ------------------------------------------------------------------ tables


def test_table_columns_are_as_wide_as_their_widest_cell_up_to_the_limit() -> None:
    columns = [Column("NAME", 8), Column("N")]
    text = render.table(columns, [["short", "1"], ["a-much-longer-name", "22"]], PLAIN)
    assert text.splitlines() == [
        "NAME      N",
        "short     1",
        "a-muc...  22",
    ]


def test_table_alignment_ignores_colour_codes() -> None:
    columns = [Column("STATUS"), Column("X")]
    rows: list[list[Cell | str]] = [[Cell("ok", "ok"), "1"], [Cell("running", "busy"), "2"]]
    coloured = render.table(columns, rows, Style(enabled=True))
    plain = render.table(columns, rows, PLAIN)
    assert "\x1b[" in coloured
    assert _strip_ansi(coloured) == plain
    assert plain.splitlines()[1] == "ok       1"


def test_table_cells_are_sanitised() -> None:
    text = render.table([Column("A")], [["evil\x1b]0;title\x07"]], PLAIN)
    assert "\x1b" not in text and "evil\\x1b]0;title\\x07" in text


def _strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# ------------------------------------------------------------------ jobs list


def test_once_job_that_fired_is_hidden_six_hours_after_its_last_change() -> None:
    fired = {"trigger_type": "once", "enabled": False}
    recent = job("recent", **fired, updated_at="2026-03-10T06:00:01Z")  # 5h59m59s ago
    old = job("old", **fired, updated_at="2026-03-10T05:59:59Z")
    pending = job("pending", **fired, updated_at="2026-03-01T00:00:00Z", next_run_at="2026-03-11T00:00:00Z")
    assert not render.is_hidden(JobLine(recent), NOW)
    assert render.is_hidden(JobLine(old), NOW)
    assert not render.is_hidden(JobLine(pending), NOW)  # still has a next run
    assert not render.is_hidden(JobLine(job("on", trigger_type="once", enabled=True)), NOW)


def test_manual_agent_job_is_hidden_once_it_has_run() -> None:
    agent = job("agent", runner_type="llm")
    assert not render.is_hidden(JobLine(agent), NOW)
    assert render.is_hidden(JobLine(agent, last=run()), NOW)
    assert not render.is_hidden(JobLine(job("prog"), last=run()), NOW)  # program jobs stay
    cron_agent = job("cron-agent", runner_type="llm", trigger_type="cron")
    assert not render.is_hidden(JobLine(cron_agent, last=run()), NOW)


def test_a_job_with_an_active_run_is_never_hidden() -> None:
    agent = job("agent", runner_type="llm")
    assert not render.is_hidden(JobLine(agent, active=run(status="running"), last=run()), NOW)


def test_jobs_listing_table() -> None:
    lines = [
        JobLine(
            job("busy"),
            active=run(status="running"),
            last=run(status="failed", finished_at="2026-03-10T09:00:00Z"),
        ),
        JobLine(job("paused", enabled=False)),
        JobLine(
            job(
                "nightly-report-with-a-very-long-name",
                trigger_type="cron",
                next_run_at="2026-03-11T01:30:00Z",
            ),
            last=run(status="succeeded", finished_at="2026-03-10T11:58:00Z"),
        ),
    ]
    text = render.jobs_listing(lines, show_all=False, now=NOW, style=PLAIN, tz=BERLIN)
    assert text.splitlines() == [
        "NAME                          TRIGGER  STATUS    LAST_RUN     NEXT_RUN",
        "busy                          manual   running   3h ago FAIL  -",
        "paused                        manual   disabled  -            -",
        "nightly-report-with-a-ver...  cron     -         2m ago ok    Mar 11 02:30",
    ]


def test_jobs_listing_last_run_falls_back_to_start_then_creation() -> None:
    started = JobLine(job("a"), last=run(status="cancel_requested", started_at="2026-03-10T11:30:00Z"))
    created = JobLine(job("b"), last=run(status="skipped"))
    rows = render.jobs_listing([started, created], show_all=True, now=NOW, style=PLAIN).splitlines()
    assert "  30m ago cancel_requ...  " in rows[1]  # LAST_RUN cut at 22 characters
    assert "  1h ago skipped  " in rows[2]


def test_jobs_listing_hidden_footer_and_empty_messages() -> None:
    finished_agent = JobLine(job("helper", runner_type="llm"), last=run())
    visible = JobLine(job("shown"))
    text = render.jobs_listing([finished_agent, visible], show_all=False, now=NOW, style=PLAIN)
    assert "helper" not in text and "shown" in text
    assert text.endswith("\n\n1 completed once-off/agent job(s) hidden. Use --all to show.\n")
    assert "helper" in render.jobs_listing([finished_agent, visible], show_all=True, now=NOW, style=PLAIN)
    assert render.jobs_listing([finished_agent], show_all=False, now=NOW, style=PLAIN) == (
        "No active jobs. 1 completed once-off/agent job(s) hidden — use --all to show.\n"
    )
    assert render.jobs_listing([], show_all=False, now=NOW, style=PLAIN) == "No jobs found.\n"


# ------------------------------------------------------------------ runs and active


def test_runs_table() -> None:
    text = render.runs_table([run("run_a"), run("run_b", status="cancel_requested")], PLAIN, tz=BERLIN)
    assert text.splitlines() == [
        "RUN_ID  JOB_ID  STATUS            TRIGGER  SCHEDULED_FOR",
        "run_a   job_j   succeeded         manual   2026-03-10T12:00:00+01:00",
        "run_b   job_j   cancel_requested  manual   2026-03-10T12:00:00+01:00",
    ]
    assert render.runs_table([], PLAIN) == "No runs found.\n"


def test_active_entries_newest_scheduled_first_then_by_run_id() -> None:
    runs = [
        run("run_b", status="queued", scheduled_for="2026-03-10T11:00:00Z"),
        run("run_a", status="running", scheduled_for="2026-03-10T11:00:00Z", started_at="x", worker_id="w"),
        run("run_c", status="queued", scheduled_for="2026-03-10T11:00:00.5Z", job_id="job_other"),
    ]
    entries = render.active_entries(runs, {"job_j": "jay"})
    assert [entry["run_id"] for entry in entries] == ["run_c", "run_a", "run_b"]
    assert entries[1] == {
        "job_id": "job_j",
        "job_name": "jay",
        "run_id": "run_a",
        "status": "running",
        "started_at": "x",
        "scheduled_for": "2026-03-10T11:00:00Z",
        "worker_id": "w",
    }
    assert list(entries[0]) == ["job_id", "job_name", "run_id", "status", "scheduled_for"]


def test_active_table() -> None:
    entries = render.active_entries([run("run_a", status="queued")], {"job_j": "a" * 30})
    header, row = render.active_table(entries, PLAIN, tz=UTC).splitlines()
    assert header.split() == [
        "JOB_ID",
        "JOB_NAME",
        "RUN_ID",
        "STATUS",
        "STARTED_AT",
        "SCHEDULED_FOR",
        "WORKER_ID",
    ]
    assert row.split() == [
        "job_j",
        "a" * 21 + "...",
        "run_a",
        "queued",
        "-",
        "2026-03-10T11:00:00+00:00",
        "-",
    ]
    assert render.active_table([], PLAIN) == "No active runs found.\n"


# ------------------------------------------------------------------ events


def event(event_type: str, message: str = "", data: Any = None) -> RunEvent:
    value: dict[str, Any] = {
        "id": 1,
        "run_id": "run_1",
        "event_type": event_type,
        "created_at": "2026-03-10T11:00:00Z",
    }
    if message:
        value["message"] = message
    if data is not None:
        value["data"] = data
    return cast(RunEvent, value)


def test_event_lines() -> None:
    assert render.event_lines(event("queued", "manual run queued"), PLAIN, BERLIN) == [
        "2026-03-10T12:00:00+01:00 queued             manual run queued"
    ]
    assert render.event_lines(event("phase"), PLAIN, UTC) == [
        "2026-03-10T11:00:00+00:00 phase              -"
    ]
    output = event("output", data={"stream": "stderr", "text": "one\ntwo\x1b[2J\n"})
    assert render.event_lines(output, PLAIN, UTC) == [
        "2026-03-10T11:00:00+00:00 output             stderr | one",
        "2026-03-10T11:00:00+00:00 output             stderr | two\\x1b[2J",
    ]
    coloured = render.event_lines(event("failed", "boom"), Style(enabled=True), UTC)[0]
    assert _strip_ansi(coloured) == "2026-03-10T11:00:00+00:00 failed             boom"


def test_events_text() -> None:
    assert render.events_text([], PLAIN) == "No events found.\n"
    text = render.events_text([event("queued", "q"), event("succeeded", "done")], PLAIN, UTC)
    assert text.count("\n") == 2 and text.endswith("done\n")
