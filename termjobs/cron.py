"""Cron expressions: parsing, validation and the next fire time in a timezone.

The dialect is standard (Vixie/Debian) cron:

* exactly five fields: minute, hour, day-of-month, month, day-of-week;
* per field: ``*``, numbers, ``a-b`` ranges, ``*/n``, ``a-b/n`` and ``a/n`` steps,
  comma lists; month and weekday names (``JAN``, ``MON``); weekday ``7`` = Sunday;
* macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly``;
* day-of-month and day-of-week are OR-ed when both are restricted; a field that
  starts with ``*`` counts as unrestricted (so ``*/2`` with ``MON`` means odd days
  that are Mondays).

croniter enumerates matching *wall-clock* minutes (on naive datetimes, where it is
exact and fast); this module maps wall-clock minutes to real instants with the DST
rules of cronie/Vixie cron:

* a fixed-hour time inside a spring-forward gap fires once, at the end of the gap;
* a fixed-hour time inside a fall-back overlap fires once, at its first occurrence;
* schedules whose hour field starts with ``*`` fire at every real occurrence: wall
  times in a gap do not exist and are skipped, repeated wall times fire twice.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from croniter import croniter

UTC = dt.UTC

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {name.upper(): i for i, name in enumerate(calendar.month_abbr) if name}
_WEEKDAYS = {"SUN": 0, "MON": 1, "TUE": 2, "WED": 3, "THU": 4, "FRI": 5, "SAT": 6}
_ITEM = re.compile(r"^(?P<base>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>[^/]*))?$")


class CronError(ValueError):
    """A cron expression that cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTHS),
    _Field("day-of-week", 0, 7, _WEEKDAYS),
)


@dataclass(frozen=True, slots=True)
class CronExpr:
    """A parsed, validated cron expression.

    ``values`` holds the expanded set per field (weekday 7 folded into 0);
    ``croniter_text`` is the same schedule in a form croniter reads unambiguously.
    """

    text: str
    values: tuple[frozenset[int], ...]
    dom_restricted: bool
    dow_restricted: bool
    hour_wildcard: bool
    croniter_text: str

    @property
    def days_or(self) -> bool:
        """Whether day-of-month and day-of-week are OR-ed (both restricted)."""
        return self.dom_restricted and self.dow_restricted


def parse_cron(text: str) -> CronExpr:
    """Parse and validate ``text``; raise :class:`CronError` if it is unusable.

    Parsed expressions are remembered (they are immutable): many jobs share a few
    expressions, and every job loaded from storage parses its own."""
    return _parse_cron(text)


@functools.lru_cache(maxsize=4096)
def _parse_cron(text: str) -> CronExpr:
    source = text.strip()
    expanded = _expand_macro(source)
    parts = expanded.split()
    if len(parts) != 5:
        hint = " (a seconds field is not supported)" if len(parts) == 6 else ""
        raise CronError(
            "cron expression must have 5 fields (minute hour day-of-month month "
            f"day-of-week), got {len(parts)}{hint}: {source!r}"
        )
    values = tuple(_parse_field(part, field) for part, field in zip(parts, _FIELDS, strict=True))
    fields = [_croniter_field(v, f) for v, f in zip(values, _FIELDS, strict=True)]
    dom_restricted, dow_restricted = not parts[2].startswith("*"), not parts[4].startswith("*")
    if dom_restricted and dow_restricted and "*" in (fields[2], fields[4]):
        # OR-ed with a day field that lists every day: every day matches.
        fields[2] = fields[4] = "*"
    expr = CronExpr(
        text=source,
        values=values,
        dom_restricted=dom_restricted,
        dow_restricted=dow_restricted,
        hour_wildcard=parts[1].startswith("*"),
        croniter_text=" ".join(fields),
    )
    _check_can_fire(expr)
    return expr


def _expand_macro(source: str) -> str:
    if not source.startswith("@"):
        return source
    macro = _MACROS.get(source.lower())
    if macro is None:
        known = ", ".join(sorted(_MACROS))
        raise CronError(f"unsupported cron macro {source!r} (supported: {known})")
    return macro


def _parse_field(part: str, field: _Field) -> frozenset[int]:
    values: set[int] = set()
    for item in part.split(","):
        values |= _parse_item(item, field)
    if field.name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


def _parse_item(item: str, field: _Field) -> set[int]:
    if not item:
        raise CronError(f"{field.name}: empty list item")
    match = _ITEM.match(item)
    if match is None:
        raise CronError(f"{field.name}: invalid item {item!r}")
    base, step_text = match.group("base"), match.group("step")
    step = _parse_step(step_text, item, field) if step_text is not None else 1
    if base == "*":
        low, high = field.low, field.high
    elif "-" in base:
        start, end = base.split("-", 1)
        low, high = _parse_value(start, field), _parse_value(end, field)
        if low > high:
            raise CronError(f"{field.name}: invalid range {item!r} (start is after end)")
    else:
        low = _parse_value(base, field)
        # "a/n" means "from a to the end of the field, every n" (as in cronie).
        high = field.high if step_text is not None else low
    return set(range(low, high + 1, step))


def _parse_step(text: str, item: str, field: _Field) -> int:
    if not text.isdigit() or int(text) < 1:
        raise CronError(f"{field.name}: invalid step in {item!r} (must be a whole number >= 1)")
    return int(text)


def _parse_value(text: str, field: _Field) -> int:
    if text.isdigit():
        value = int(text)
    elif field.names is not None and text.upper() in field.names:
        return field.names[text.upper()]
    else:
        allowed = " or a name such as JAN/MON" if field.names else ""
        raise CronError(f"{field.name}: invalid value {text!r} (expected a number{allowed})")
    if not field.low <= value <= field.high:
        raise CronError(f"{field.name}: value {value} out of bounds ({field.low}-{field.high})")
    return value


def _croniter_field(values: frozenset[int], field: _Field) -> str:
    full = set(range(field.low, field.high + 1))
    if field.name == "day-of-week":
        full.discard(7)
    if values == full:
        return "*"
    return ",".join(str(v) for v in sorted(values))


def _check_can_fire(expr: CronExpr) -> None:
    if expr.days_or:
        return  # some listed weekday occurs in every month
    doms, months = expr.values[2], expr.values[3]
    longest = {m: 29 if m == 2 else calendar.monthrange(2001, m)[1] for m in months}
    if not any(d <= longest[m] for m in months for d in doms):
        raise CronError(f"cron expression {expr.text!r} can never fire (no such date)")


# ------------------------------------------------------------------ next fire time


@functools.lru_cache(maxsize=16384)
def next_fire(expr: CronExpr, zone: ZoneInfo, after: dt.datetime) -> dt.datetime:
    """The first fire instant strictly after ``after``, as an aware UTC datetime.

    Pure, so cached: many jobs share a schedule and compute the same next fire from
    the same nominal time (10,000 jobs due in one minute cost one computation).
    """
    after = after.astimezone(UTC)
    local = after.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    best = _first_forward(expr, zone, after, wall)
    if expr.hour_wildcard:
        repeat = _first_repeat(expr, zone, after, local)
        if repeat is not None and repeat < best:
            best = repeat
    return best


def _matches_after(expr: CronExpr, wall: dt.datetime) -> croniter:
    return croniter(expr.croniter_text, wall, day_or=expr.days_or)


def _first_forward(expr: CronExpr, zone: ZoneInfo, after: dt.datetime, wall: dt.datetime) -> dt.datetime:
    matches = _matches_after(expr, wall)
    # Bounded: every iteration but those inside a DST gap or overlap yields an instant.
    for _ in range(10_000):
        candidate: dt.datetime = matches.get_next(dt.datetime)
        for instant in wall_to_instants(candidate, zone, fixed=not expr.hour_wildcard):
            if instant > after:
                return instant
    raise CronError(f"cron expression {expr.text!r}: no fire time found after {after}")


def _first_repeat(
    expr: CronExpr, zone: ZoneInfo, after: dt.datetime, local: dt.datetime
) -> dt.datetime | None:
    """During the first pass of a fall-back overlap, the repeated (second) occurrences
    of earlier wall times are still in the future; find the first of them."""
    first, second = local.replace(fold=0).utcoffset(), local.replace(fold=1).utcoffset()
    if local.fold or first is None or second is None or first <= second:
        return None
    shift = first - second
    transition = _transition_instant(zone, after, after + shift)
    overlap_start = transition.astimezone(zone).replace(tzinfo=None, fold=0)
    wall = local.replace(tzinfo=None, fold=0)
    start = max(wall - shift, overlap_start - dt.timedelta(microseconds=1))
    candidate: dt.datetime = _matches_after(expr, start).get_next(dt.datetime)
    if candidate > wall:
        return None
    return (candidate - second).replace(tzinfo=UTC)


def wall_to_instants(wall: dt.datetime, zone: ZoneInfo, *, fixed: bool) -> list[dt.datetime]:
    """The real instants (UTC) at which the naive wall time ``wall`` fires in ``zone``.

    ``fixed`` selects the rules for fixed-hour schedules (one fire per wall time, gap
    times at the end of the gap); otherwise every real occurrence fires.
    """
    before = wall.replace(tzinfo=zone, fold=0).utcoffset()
    later = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert before is not None and later is not None
    if before == later:
        return [(wall - before).replace(tzinfo=UTC)]
    first = (wall - before).replace(tzinfo=UTC)
    second = (wall - later).replace(tzinfo=UTC)
    if before > later:  # fall-back: the wall time happens twice
        return [first] if fixed else [first, second]
    # spring-forward gap: the wall time never happens
    return [_transition_instant(zone, second, first)] if fixed else []


def _transition_instant(zone: ZoneInfo, low: dt.datetime, high: dt.datetime) -> dt.datetime:
    """The first instant in ``(low, high]`` whose UTC offset differs from ``low``'s."""
    base = low.astimezone(zone).utcoffset()
    lo, hi = int(low.timestamp()), int(high.timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, zone).utcoffset() == base:
            lo = mid
        else:
            hi = mid
    return dt.datetime.fromtimestamp(hi, UTC)
