"""Retry policy: parsing, validation and backoff delays. Pure.

``retry_policy`` fields (all optional):

=============== ======= ==========================================================
max_attempts    1       total attempts including the first
backoff         fixed   ``fixed``, ``linear`` or ``exponential``
initial_delay   10s     Go duration string (``500ms``, ``30s``, ``1m30s``, ``2h``)
max_delay       5m      cap on any single delay
jitter_pct      0       each delay is moved randomly by up to this percentage
=============== ======= ==========================================================
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass

from termjobs.model import JSONValue


class Backoff(enum.StrEnum):
    """How the delay grows between attempts."""

    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A validated retry policy."""

    max_attempts: int = 1
    backoff: Backoff = Backoff.FIXED
    initial_delay: dt.timedelta = dt.timedelta(seconds=10)
    max_delay: dt.timedelta = dt.timedelta(minutes=5)
    jitter_pct: int = 0


NO_RETRY = RetryPolicy()
#: Longest accepted delay (keeps every computed retry time representable).
MAX_DELAY = dt.timedelta(days=30)
_DEFAULT_INITIAL_DELAY = NO_RETRY.initial_delay
_DEFAULT_MAX_DELAY = NO_RETRY.max_delay
_MAX_ATTEMPTS = 100

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> dt.timedelta:
    """Parse a Go duration string such as ``1m30s`` or ``1.5h``; ``ValueError`` if bad."""
    source = text.strip()
    if not source:
        raise ValueError("empty duration")
    total, pos = 0.0, 0
    while pos < len(source):
        match = _DURATION_PART.match(source, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return dt.timedelta(seconds=total)


def format_duration(value: dt.timedelta) -> str:
    """Render like Go's ``time.Duration.String()``: ``10s``, ``1m0s``, ``1.5s``, ``2ms``."""
    micros = round(value.total_seconds() * 1_000_000)
    if micros == 0:
        return "0s"
    if micros < 1_000_000:
        if micros % 1000 == 0:
            return f"{micros // 1000}ms"
        return _trim(micros / 1000) + "ms"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = _trim(rest / 1_000_000) + "s"
    if hours:
        return f"{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{minutes}m{seconds}"
    return seconds


def _trim(number: float) -> str:
    return f"{number:.6f}".rstrip("0").rstrip(".")


def parse_retry_policy(value: JSONValue | None) -> RetryPolicy:
    """Validate a ``retry_policy`` JSON value; ``ValueError`` says what to fix."""
    if value is None:
        return NO_RETRY
    if not isinstance(value, dict):
        raise ValueError("retry_policy must be a JSON object")
    initial = _duration_field(value, "initial_delay", _DEFAULT_INITIAL_DELAY)
    # Without an explicit cap, a long initial delay raises the default cap with it.
    maximum = _duration_field(value, "max_delay", max(_DEFAULT_MAX_DELAY, initial))
    if maximum < initial:
        raise ValueError("retry_policy.max_delay must not be shorter than initial_delay")
    return RetryPolicy(
        max_attempts=_int_field(value, "max_attempts", 1, low=1, high=_MAX_ATTEMPTS),
        backoff=_backoff(value.get("backoff")),
        initial_delay=initial,
        max_delay=maximum,
        jitter_pct=_int_field(value, "jitter_pct", 0, low=0, high=100),
    )


def _int_field(obj: dict[str, JSONValue], key: str, default: int, *, low: int, high: int) -> int:
    raw = obj.get(key)
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise ValueError(f"retry_policy.{key} must be a whole number from {low} to {high}")
    return raw


def _backoff(raw: JSONValue) -> Backoff:
    if raw is None or raw == "":
        return Backoff.FIXED
    try:
        return Backoff(raw if isinstance(raw, str) else "")
    except ValueError:
        raise ValueError("retry_policy.backoff must be one of: fixed, linear, exponential") from None


def _duration_field(obj: dict[str, JSONValue], key: str, default: dt.timedelta) -> dt.timedelta:
    raw = obj.get(key)
    if raw is None or raw == "":
        return default
    if not isinstance(raw, str):
        raise ValueError(f'retry_policy.{key} must be a duration string such as "30s" or "5m"')
    try:
        value = parse_duration(raw)
    except ValueError:
        raise ValueError(
            f'retry_policy.{key} must be a duration such as "500ms", "30s", "1m30s" or "2h" (got {raw!r})'
        ) from None
    except OverflowError:
        value = MAX_DELAY * 2
    if value <= dt.timedelta(0):
        raise ValueError(f"retry_policy.{key} must be longer than zero")
    if value > MAX_DELAY:
        raise ValueError(f"retry_policy.{key} must be at most 720h (30 days)")
    return value


def retry_delay(
    policy: RetryPolicy, attempt: int, *, uniform: Callable[[float, float], float]
) -> dt.timedelta:
    """The delay before attempt ``attempt + 1`` after attempt ``attempt`` failed.

    ``uniform(a, b)`` supplies the jitter (``random.uniform`` in production, a fixed
    function in tests); jitter never takes the delay past ``max_delay`` or below zero.
    """
    base = policy.initial_delay
    if policy.backoff is Backoff.LINEAR:
        base = base * attempt
    elif policy.backoff is Backoff.EXPONENTIAL:
        base = base * (2 ** min(attempt - 1, 40))
    delay = min(base, policy.max_delay)
    if policy.jitter_pct:
        spread = delay.total_seconds() * policy.jitter_pct / 100
        jittered = delay.total_seconds() + uniform(-spread, spread)
        delay = min(dt.timedelta(seconds=max(0.0, jittered)), policy.max_delay)
    return delay
