"""Cron parsing and the DST rules of DESIGN 4.3, on the 2026 transitions."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from termjobs.cron import CronError, next_fire, parse_cron

UTC = dt.UTC


def fires(expression: str, zone: str, start: str, end: str) -> list[str]:
    """Every fire in (start, end], as UTC ISO strings."""
    expr, tz = parse_cron(expression), ZoneInfo(zone)
    at, stop = dt.datetime.fromisoformat(start), dt.datetime.fromisoformat(end)
    out: list[str] = []
    while (at := next_fire(expr, tz, at)) <= stop:
        out.append(at.strftime("%Y-%m-%dT%H:%MZ"))
    return out


def local(stamps: list[str], zone: str) -> list[str]:
    tz = ZoneInfo(zone)
    return [
        dt.datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(tz).strftime("%m-%d %H:%M %Z")
        for s in stamps
    ]


# ------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "cron expression must have 5 fields"),
        ("0 * * * * *", "a seconds field is not supported"),
        ("60 * * * *", "minute: value 60 out of bounds (0-59)"),
        ("0 24 * * *", "hour: value 24 out of bounds (0-23)"),
        ("0 0 0 * *", "day-of-month: value 0 out of bounds (1-31)"),
        ("0 0 * 13 *", "month: value 13 out of bounds (1-12)"),
        ("0 0 * * 8", "day-of-week: value 8 out of bounds (0-7)"),
        ("*/0 * * * *", "minute: invalid step"),
        ("5-1 * * * *", "minute: invalid range '5-1'"),
        ("0 0 L * *", "day-of-month: invalid value 'L'"),
        ("0 0 * * 5#2", "day-of-week: invalid item '5#2'"),
        ("0 0 ? * *", "day-of-month: invalid item '?'"),
        ("MON * * * *", "minute: invalid value 'MON'"),
        ("1,,2 * * * *", "minute: empty list item"),
        ("@reboot", "unsupported cron macro '@reboot'"),
        ("0 0 31 2 *", "can never fire"),
        ("0 0 30,31 2 *", "can never fire"),
    ],
)
def test_rejects_bad_expressions_with_a_field_specific_message(expression: str, message: str) -> None:
    with pytest.raises(CronError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse_cron(expression)


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_macros_mean_their_five_field_form(macro: str, equivalent: str) -> None:
    assert parse_cron(macro).values == parse_cron(equivalent).values


def test_names_steps_and_sunday_seven() -> None:
    expr = parse_cron("0-30/10 9-17/4 1,15 JAN-mar,Dec MON-FRI,7")
    minute, hour, dom, month, dow = expr.values
    assert minute == {0, 10, 20, 30}
    assert hour == {9, 13, 17}
    assert dom == {1, 15}
    assert month == {1, 2, 3, 12}
    assert dow == {0, 1, 2, 3, 4, 5}
    assert parse_cron("0 0 * * 7").values[4] == {0}
    assert parse_cron("5/20 * * * *").values[0] == {5, 25, 45}


def test_a_28th_to_31st_of_february_schedule_is_allowed_when_some_day_exists() -> None:
    assert parse_cron("0 0 29 2 *").values[2] == {29}  # leap years only, but it can fire
    assert fires("0 0 29 2 *", "UTC", "2026-01-01T00:00+00:00", "2029-01-01T00:00+00:00") == [
        "2028-02-29T00:00Z"
    ]


# ------------------------------------------------- day-of-month / day-of-week rules


def test_both_days_restricted_are_ored() -> None:
    # the 13th of each month OR any Friday
    got = fires("0 0 13 * 5", "UTC", "2026-02-01T00:00+00:00", "2026-03-01T00:00+00:00")
    assert got == [
        "2026-02-06T00:00Z",
        "2026-02-13T00:00Z",  # Friday the 13th fires once
        "2026-02-20T00:00Z",
        "2026-02-27T00:00Z",
    ]


def test_a_star_step_day_of_month_is_unrestricted_so_days_are_anded() -> None:
    # odd days of month that are Mondays (Vixie: a field starting with * is unrestricted)
    got = fires("0 0 */2 * MON", "UTC", "2026-01-01T00:00+00:00", "2026-03-01T00:00+00:00")
    assert got == ["2026-01-05T00:00Z", "2026-01-19T00:00Z", "2026-02-09T00:00Z", "2026-02-23T00:00Z"]


@pytest.mark.parametrize("expression", ["0 0 1-31 * MON", "0 0 1 * 0-6", "0 0 1-31 * 0-7"])
def test_ored_days_with_a_field_listing_every_day_fire_daily(expression: str) -> None:
    got = fires(expression, "UTC", "2026-01-01T00:00+00:00", "2026-01-08T00:00+00:00")
    assert len(got) == 7


def test_star_weekday_with_restricted_day_of_month() -> None:
    got = fires("0 0 1,15 * *", "UTC", "2026-01-01T00:00+00:00", "2026-02-01T00:00+00:00")
    assert got == ["2026-01-15T00:00Z", "2026-02-01T00:00Z"]


def test_next_fire_is_strictly_after_and_on_a_whole_minute() -> None:
    expr, tz = parse_cron("* * * * *"), ZoneInfo("UTC")
    after = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert next_fire(expr, tz, after) == dt.datetime(2026, 3, 1, 12, 1, tzinfo=UTC)
    after = dt.datetime(2026, 3, 1, 12, 0, 30, 5, tzinfo=UTC)
    assert next_fire(expr, tz, after) == dt.datetime(2026, 3, 1, 12, 1, tzinfo=UTC)


# ------------------------------------------------------------------- DST, New York


def test_new_york_spring_forward_fixed_time_in_gap_fires_once_at_gap_end() -> None:
    got = fires("30 2 * * *", "America/New_York", "2026-03-07T00:00+00:00", "2026-03-10T00:00+00:00")
    assert got == ["2026-03-07T07:30Z", "2026-03-08T07:00Z", "2026-03-09T06:30Z"]
    assert local(got, "America/New_York") == ["03-07 02:30 EST", "03-08 03:00 EDT", "03-09 02:30 EDT"]


def test_new_york_spring_forward_several_gap_times_collapse_into_one_fire() -> None:
    got = fires("*/15 2 * * *", "America/New_York", "2026-03-08T05:00+00:00", "2026-03-08T12:00+00:00")
    assert local(got, "America/New_York") == ["03-08 03:00 EDT"]


def test_new_york_fall_back_fixed_time_in_overlap_fires_once_first_occurrence() -> None:
    got = fires("30 1 * * *", "America/New_York", "2026-10-31T00:00+00:00", "2026-11-03T00:00+00:00")
    assert got == ["2026-10-31T05:30Z", "2026-11-01T05:30Z", "2026-11-02T06:30Z"]
    assert local(got, "America/New_York") == ["10-31 01:30 EDT", "11-01 01:30 EDT", "11-02 01:30 EST"]


def test_new_york_wildcard_hour_fires_every_real_hour() -> None:
    fall = fires("0 * * * *", "America/New_York", "2026-11-01T03:59+00:00", "2026-11-01T08:00+00:00")
    assert local(fall, "America/New_York") == [
        "11-01 00:00 EDT",
        "11-01 01:00 EDT",
        "11-01 01:00 EST",
        "11-01 02:00 EST",
        "11-01 03:00 EST",
    ]
    spring = fires("0 * * * *", "America/New_York", "2026-03-08T04:59+00:00", "2026-03-08T08:00+00:00")
    assert local(spring, "America/New_York") == [
        "03-08 00:00 EST",
        "03-08 01:00 EST",
        "03-08 03:00 EDT",
        "03-08 04:00 EDT",
    ]


def test_new_york_wildcard_half_hours_cover_both_passes_of_the_repeated_hour() -> None:
    got = fires("*/30 * * * *", "America/New_York", "2026-11-01T04:59+00:00", "2026-11-01T07:00+00:00")
    assert local(got, "America/New_York") == [
        "11-01 01:00 EDT",
        "11-01 01:30 EDT",
        "11-01 01:00 EST",
        "11-01 01:30 EST",
        "11-01 02:00 EST",
    ]


def test_new_york_whole_year_counts() -> None:
    start, end = "2025-12-31T23:59-05:00", "2026-12-31T23:59-05:00"
    assert len(fires("30 1 * * *", "America/New_York", start, end)) == 365
    assert len(fires("30 2 * * *", "America/New_York", start, end)) == 365
    assert len(fires("0 * * * *", "America/New_York", start, end)) == 365 * 24


# ---------------------------------------------------------------------- London


def test_london_spring_forward_gap() -> None:
    got = fires("30 1 * * *", "Europe/London", "2026-03-28T00:00+00:00", "2026-03-31T00:00+00:00")
    assert local(got, "Europe/London") == ["03-28 01:30 GMT", "03-29 02:00 BST", "03-30 01:30 BST"]
    assert got[1] == "2026-03-29T01:00Z"


def test_london_fall_back_overlap() -> None:
    got = fires("30 1 * * *", "Europe/London", "2026-10-24T00:00+00:00", "2026-10-27T00:00+00:00")
    assert local(got, "Europe/London") == ["10-24 01:30 BST", "10-25 01:30 BST", "10-26 01:30 GMT"]
    hourly = fires("15 * * * *", "Europe/London", "2026-10-24T23:30+00:00", "2026-10-25T02:30+00:00")
    assert local(hourly, "Europe/London") == [
        "10-25 01:15 BST",
        "10-25 01:15 GMT",
        "10-25 02:15 GMT",
    ]


# ---------------------------------------------------------------------- Sydney


def test_sydney_dst_end_overlap_in_april() -> None:
    got = fires("30 2 * * *", "Australia/Sydney", "2026-04-03T00:00+00:00", "2026-04-06T00:00+00:00")
    assert local(got, "Australia/Sydney") == ["04-04 02:30 AEDT", "04-05 02:30 AEDT", "04-06 02:30 AEST"]
    assert got[1] == "2026-04-04T15:30Z"


def test_sydney_dst_start_gap_in_october() -> None:
    got = fires("30 2 * * *", "Australia/Sydney", "2026-10-02T00:00+00:00", "2026-10-05T00:00+00:00")
    assert local(got, "Australia/Sydney") == ["10-03 02:30 AEST", "10-04 03:00 AEDT", "10-05 02:30 AEDT"]
    assert got[1] == "2026-10-03T16:00Z"
    wildcard = fires("30 * * * *", "Australia/Sydney", "2026-10-03T14:00+00:00", "2026-10-03T17:00+00:00")
    assert local(wildcard, "Australia/Sydney") == ["10-04 00:30 AEST", "10-04 01:30 AEST", "10-04 03:30 AEDT"]
