"""Trigger parsing, next_run_at rules and the split of due fires."""

from __future__ import annotations

import datetime as dt

import pytest

from termjobs.model import TriggerType
from termjobs.schedule import (
    CronTrigger,
    ManualTrigger,
    OnceTrigger,
    TriggerError,
    due_fires,
    initial_next_run,
    next_fire_after,
    parse_trigger,
)
from tests.helpers import at

NOW = at("2026-03-01T12:07:00Z")


def test_manual_trigger_ignores_its_config() -> None:
    assert parse_trigger(TriggerType.MANUAL, {"anything": 1}, None) == ManualTrigger()
    assert parse_trigger(TriggerType.MANUAL, None, None) == ManualTrigger()


def test_once_trigger_needs_an_rfc3339_run_at_with_offset() -> None:
    trigger = parse_trigger(TriggerType.ONCE, {"run_at": "2026-02-22T00:00:00-08:00"}, None)
    assert trigger == OnceTrigger(run_at=at("2026-02-22T08:00:00Z"))
    with pytest.raises(TriggerError, match="trigger_config.run_at is required for once trigger"):
        parse_trigger(TriggerType.ONCE, {}, None)
    for bad in ("tomorrow", "2026-02-22", "2026-02-22T00:00:00", 12):
        with pytest.raises(TriggerError, match="must be an RFC 3339 timestamp with an offset"):
            parse_trigger(TriggerType.ONCE, {"run_at": bad}, None)


def test_cron_trigger_requires_an_expression_and_a_known_zone() -> None:
    with pytest.raises(TriggerError, match="trigger_config.expression is required for cron trigger"):
        parse_trigger(TriggerType.CRON, {"timezone": "UTC"}, None)
    with pytest.raises(TriggerError, match="trigger_config.expression: minute: value 99 out of bounds"):
        parse_trigger(TriggerType.CRON, {"expression": "99 * * * *"}, None)
    with pytest.raises(TriggerError, match="trigger_config.timezone: unknown time zone 'Mars/Base'"):
        parse_trigger(TriggerType.CRON, {"expression": "0 * * * *", "timezone": "Mars/Base"}, None)
    with pytest.raises(TriggerError, match="schedule_timezone: unknown time zone 'Local'"):
        parse_trigger(TriggerType.CRON, {"expression": "0 * * * *"}, "Local")
    with pytest.raises(TriggerError, match="trigger_config must be a JSON object"):
        parse_trigger(TriggerType.CRON, ["0 * * * *"], None)


def test_cron_timezone_defaults_to_utc_and_schedule_timezone_wins() -> None:
    default = parse_trigger(TriggerType.CRON, {"expression": "0 0 * * *"}, None)
    assert isinstance(default, CronTrigger) and default.zone_name == "UTC"
    both = parse_trigger(
        TriggerType.CRON, {"expression": "0 0 * * *", "timezone": "UTC"}, "America/Los_Angeles"
    )
    assert isinstance(both, CronTrigger) and both.zone_name == "America/Los_Angeles"


def test_schedule_timezone_is_validated_for_every_trigger_type() -> None:
    with pytest.raises(TriggerError, match="schedule_timezone: unknown time zone"):
        parse_trigger(TriggerType.MANUAL, {}, "Nowhere/Town")


def test_initial_next_run() -> None:
    cron = parse_trigger(TriggerType.CRON, {"expression": "*/10 * * * *"}, None)
    once = parse_trigger(TriggerType.ONCE, {"run_at": "2026-03-01T11:00:00Z"}, None)
    assert initial_next_run(cron, enabled=True, now=NOW, last_fire_at=None) == at("2026-03-01T12:10:00Z")
    assert initial_next_run(cron, enabled=False, now=NOW, last_fire_at=None) is None
    # a once job keeps its past run_at until it has fired at it
    assert initial_next_run(once, enabled=True, now=NOW, last_fire_at=None) == at("2026-03-01T11:00:00Z")
    fired = at("2026-03-01T11:00:00Z")
    assert initial_next_run(once, enabled=True, now=NOW, last_fire_at=fired) is None
    assert initial_next_run(ManualTrigger(), enabled=True, now=NOW, last_fire_at=None) is None


def test_next_fire_after_for_each_trigger() -> None:
    assert next_fire_after(ManualTrigger(), NOW) is None
    once = OnceTrigger(run_at=at("2026-03-01T13:00:00Z"))
    assert next_fire_after(once, NOW) == at("2026-03-01T13:00:00Z")
    assert next_fire_after(once, at("2026-03-01T13:00:00Z")) is None


def test_due_fires_splits_missed_from_on_time() -> None:
    cron = parse_trigger(TriggerType.CRON, {"expression": "0 * * * *"}, None)
    # down from 09:00 to 12:07 with a 60 s grace: 09:00..12:00 are missed
    due = due_fires(cron, at("2026-03-01T09:00:00Z"), NOW, dt.timedelta(seconds=60))
    assert (due.missed_count, due.missed_first, due.missed_last) == (
        4,
        at("2026-03-01T09:00:00Z"),
        at("2026-03-01T12:00:00Z"),
    )
    assert due.on_time == ()
    assert due.next_at == at("2026-03-01T13:00:00Z")
    # a larger grace keeps the 12:00 fire on time
    due = due_fires(cron, at("2026-03-01T09:00:00Z"), NOW, dt.timedelta(minutes=10))
    assert due.missed_count == 3 and due.on_time == (at("2026-03-01T12:00:00Z"),)


def test_due_fires_caps_enumeration_after_long_downtime() -> None:
    cron = parse_trigger(TriggerType.CRON, {"expression": "* * * * *"}, None)
    due = due_fires(cron, at("2025-03-01T12:00:00Z"), NOW, dt.timedelta(seconds=30), cap=100)
    assert due.missed_count == 100 and due.missed_capped
    assert due.missed_first == at("2025-03-01T12:00:00Z")
    assert due.on_time == (at("2026-03-01T12:07:00Z"),)
    assert due.next_at == at("2026-03-01T12:08:00Z")


def test_due_fires_for_a_once_trigger() -> None:
    once = OnceTrigger(run_at=at("2026-03-01T12:06:30Z"))
    due = due_fires(once, once.run_at, NOW, dt.timedelta(seconds=60))
    assert due.missed_count == 0 and due.on_time == (once.run_at,) and due.next_at is None
    late = due_fires(once, once.run_at, NOW + dt.timedelta(hours=1), dt.timedelta(seconds=60))
    assert late.missed_count == 1 and late.on_time == () and late.next_at is None
