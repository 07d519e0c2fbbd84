"""Retry policy validation, Go durations and backoff delays."""

from __future__ import annotations

import datetime as dt

import pytest

from termjobs.model import JSONValue
from termjobs.retry import (
    Backoff,
    RetryPolicy,
    format_duration,
    parse_duration,
    parse_retry_policy,
    retry_delay,
)

S = dt.timedelta(seconds=1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("1m30s", 90), ("1.5h", 5400), ("2h45m", 9900), ("250us", 0.00025)],
)
def test_parse_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "10", "1d", "5 s", "-1s", "s"])
def test_rejects_bad_durations(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10, "10s"), (60, "1m0s"), (3600, "1h0m0s"), (1.5, "1.5s"), (0.001, "1ms"), (150, "2m30s"), (0, "0s")],
)
def test_format_like_go(seconds: float, text: str) -> None:
    assert format_duration(dt.timedelta(seconds=seconds)) == text


def test_defaults_and_validation_messages() -> None:
    assert parse_retry_policy(None) == RetryPolicy()
    policy = parse_retry_policy({"max_attempts": 3, "backoff": "exponential", "initial_delay": "30s"})
    assert policy == RetryPolicy(3, Backoff.EXPONENTIAL, 30 * S, 300 * S, 0)
    assert parse_retry_policy({"initial_delay": "10m"}).max_delay == 600 * S
    cases: list[tuple[JSONValue, str]] = [
        ({"max_attempts": 0}, "retry_policy.max_attempts must be a whole number from 1 to 100"),
        ({"max_attempts": "3"}, "retry_policy.max_attempts must be a whole number"),
        ({"backoff": "random"}, "retry_policy.backoff must be one of: fixed, linear, exponential"),
        ({"initial_delay": "soon"}, 'retry_policy.initial_delay must be a duration such as "500ms"'),
        ({"initial_delay": 30}, "retry_policy.initial_delay must be a duration string"),
        ({"initial_delay": "0s"}, "retry_policy.initial_delay must be longer than zero"),
        ({"initial_delay": "1m", "max_delay": "10s"}, "max_delay must not be shorter than initial_delay"),
        ({"jitter_pct": 101}, "retry_policy.jitter_pct must be a whole number from 0 to 100"),
        ([1], "retry_policy must be a JSON object"),
    ]
    for value, message in cases:
        with pytest.raises(ValueError, match=message):
            parse_retry_policy(value)


def no_jitter(low: float, high: float) -> float:
    return 0.0


@pytest.mark.parametrize(
    ("backoff", "delays"),
    [
        (Backoff.FIXED, [10, 10, 10, 10]),
        (Backoff.LINEAR, [10, 20, 30, 40]),
        (Backoff.EXPONENTIAL, [10, 20, 40, 60]),
    ],
)
def test_backoff_delays_are_capped(backoff: Backoff, delays: list[int]) -> None:
    policy = RetryPolicy(5, backoff, 10 * S, 60 * S, 0)
    got = [retry_delay(policy, attempt, uniform=no_jitter).total_seconds() for attempt in (1, 2, 3, 4)]
    assert got == delays


def test_jitter_stays_within_its_percentage_and_the_cap() -> None:
    policy = RetryPolicy(5, Backoff.FIXED, 100 * S, 105 * S, 10)
    assert retry_delay(policy, 1, uniform=lambda low, high: low) == 90 * S
    assert retry_delay(policy, 1, uniform=lambda low, high: high) == 105 * S  # capped at max_delay
