"""Triggers and schedule maths. Pure: every input is explicit, nothing reads a clock.

A job's ``trigger_type`` + ``trigger_config`` (+ ``schedule_timezone``) parse into one
of three trigger values; :func:`next_fire_after` and :func:`initial_next_run` compute
fire times from them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from termjobs import cron
from termjobs.model import JSONValue, TriggerType, parse_ts

DEFAULT_TIMEZONE = "UTC"


class TriggerError(ValueError):
    """A trigger definition that cannot be used; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class ManualTrigger:
    """Runs only when triggered through the API."""


@dataclass(frozen=True, slots=True)
class OnceTrigger:
    """Fires once at ``run_at``."""

    run_at: dt.datetime


@dataclass(frozen=True, slots=True)
class CronTrigger:
    """Fires on a cron schedule evaluated in ``zone``."""

    expr: cron.CronExpr
    zone: ZoneInfo

    @property
    def zone_name(self) -> str:
        return self.zone.key


Trigger = ManualTrigger | OnceTrigger | CronTrigger


def load_zone(name: str, *, field: str) -> ZoneInfo:
    """The IANA zone ``name``; :class:`TriggerError` naming ``field`` if it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TriggerError(
            f"{field}: unknown time zone {name!r} "
            "(use an IANA name such as Europe/Berlin, America/New_York or UTC)"
        ) from None


def parse_trigger(trigger_type: TriggerType, config: JSONValue, schedule_timezone: str | None) -> Trigger:
    """Validate a trigger definition and return its parsed form."""
    if config is not None and not isinstance(config, dict):
        raise TriggerError("trigger_config must be a JSON object")
    fields = config or {}
    if schedule_timezone:
        # Validated for every trigger type so a typo is caught before it matters.
        load_zone(schedule_timezone, field="schedule_timezone")
    match trigger_type:
        case TriggerType.MANUAL:
            return ManualTrigger()
        case TriggerType.ONCE:
            return OnceTrigger(run_at=_parse_run_at(fields.get("run_at")))
        case TriggerType.CRON:
            return _parse_cron(fields, schedule_timezone)


def _parse_run_at(value: JSONValue) -> dt.datetime:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise TriggerError("trigger_config.run_at is required for once trigger")
    parsed = parse_ts(value) if isinstance(value, str) else None
    if parsed is None:
        raise TriggerError(
            "trigger_config.run_at must be an RFC 3339 timestamp with an offset, "
            f"e.g. 2026-02-22T00:00:00-08:00 or 2026-02-22T08:00:00Z (got {value!r})"
        )
    return parsed


def _parse_cron(fields: dict[str, JSONValue], schedule_timezone: str | None) -> CronTrigger:
    expression = fields.get("expression")
    if expression is None or (isinstance(expression, str) and not expression.strip()):
        raise TriggerError("trigger_config.expression is required for cron trigger")
    if not isinstance(expression, str):
        raise TriggerError('trigger_config.expression must be a string, e.g. "30 2 * * *"')
    try:
        expr = cron.parse_cron(expression)
    except cron.CronError as exc:
        raise TriggerError(f"trigger_config.expression: {exc}") from None
    return CronTrigger(expr=expr, zone=_cron_zone(fields.get("timezone"), schedule_timezone))


def _cron_zone(config_zone: JSONValue, schedule_timezone: str | None) -> ZoneInfo:
    # The job-level field wins over the trigger's own (reference-system precedence).
    if schedule_timezone and schedule_timezone.strip():
        return load_zone(schedule_timezone.strip(), field="schedule_timezone")
    if config_zone is None or config_zone == "":
        return load_zone(DEFAULT_TIMEZONE, field="trigger_config.timezone")
    if not isinstance(config_zone, str):
        raise TriggerError('trigger_config.timezone must be a string such as "Europe/Berlin"')
    return load_zone(config_zone.strip(), field="trigger_config.timezone")


def next_fire_after(trigger: Trigger, after: dt.datetime) -> dt.datetime | None:
    """The first fire time strictly after ``after``, or ``None`` if there is none."""
    match trigger:
        case ManualTrigger():
            return None
        case OnceTrigger(run_at=run_at):
            return run_at if run_at > after else None
        case CronTrigger(expr=expr, zone=zone):
            return cron.next_fire(expr, zone, after)


def upcoming_fires(trigger: Trigger, after: dt.datetime, count: int) -> list[dt.datetime]:
    """Up to ``count`` fire times strictly after ``after``, in order; fewer when the
    trigger has no more (a manual trigger has none, a ``once`` trigger one at most, and
    nothing lies beyond the year 9999)."""
    fires: list[dt.datetime] = []
    at: dt.datetime | None = after
    while at is not None and len(fires) < count:
        try:
            at = next_fire_after(trigger, at)
        except (ValueError, OverflowError):  # croniter past year 9999
            break
        if at is not None:
            fires.append(at)
    return fires


def initial_next_run(
    trigger: Trigger, *, enabled: bool, now: dt.datetime, last_fire_at: dt.datetime | None
) -> dt.datetime | None:
    """``next_run_at`` for a job that is created, edited, paused or resumed at ``now``.

    A ``once`` job keeps its (possibly past) ``run_at`` until it has fired at that
    time; a cron job's next fire is computed from ``now``; disabled jobs have none.
    """
    if not enabled:
        return None
    match trigger:
        case ManualTrigger():
            return None
        case OnceTrigger(run_at=run_at):
            return None if last_fire_at == run_at else run_at
        case CronTrigger(expr=expr, zone=zone):
            return cron.next_fire(expr, zone, now)


@dataclass(frozen=True, slots=True)
class DueFires:
    """The scheduled fires that are due at some instant, split by lateness.

    ``missed_*`` describe fires late by more than the misfire grace (only the first,
    the last and how many: after a long outage there can be very many); ``on_time``
    lists the fires still within the grace; ``next_at`` is the first fire after now.
    """

    missed_count: int
    missed_first: dt.datetime | None
    missed_last: dt.datetime | None
    missed_capped: bool
    on_time: tuple[dt.datetime, ...]
    next_at: dt.datetime | None


def due_fires(
    trigger: Trigger, first: dt.datetime, now: dt.datetime, grace: dt.timedelta, *, cap: int = 1000
) -> DueFires:
    """Split the fires from ``first`` (the stored ``next_run_at``) up to ``now``.

    At most ``cap`` fires are counted per group; beyond that the count is reported as
    capped and the schedule jumps ahead instead of enumerating every missed minute.
    """
    cutoff = now - grace
    count, head, tail, capped = 0, None, None, False
    at: dt.datetime | None = first
    while at is not None and at < cutoff:
        if count == cap:
            capped = True
            at = next_fire_after(trigger, cutoff - dt.timedelta(microseconds=1))
            break
        head, tail, count = head or at, at, count + 1
        at = next_fire_after(trigger, at)
    on_time: list[dt.datetime] = []
    while at is not None and at <= now and len(on_time) < cap:
        on_time.append(at)
        at = next_fire_after(trigger, at)
    if at is not None and at <= now:
        at = next_fire_after(trigger, now)
    return DueFires(count, head, tail, capped, tuple(on_time), at)
