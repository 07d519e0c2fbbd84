"""``POST /v2/schedule/preview``: the next fire times of a trigger, or the 400 that job
creation would answer (the clock is virtual: now is 2026-03-01 12:00 UTC, a Sunday)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import job_body
from tests.http.conftest import Api

CRON_BERLIN = {"expression": "30 2 * * *", "timezone": "Europe/Berlin"}


async def test_the_next_five_fire_times_of_a_cron_schedule_in_its_zone(api: Api) -> None:
    reply = await api.post("/v2/schedule/preview", {"trigger_type": "cron", "trigger_config": CRON_BERLIN})
    assert reply.status == 200
    assert reply.body == {
        "timezone": "Europe/Berlin",
        # 02:30 in Berlin is 01:30 UTC in winter
        "fire_times": [f"2026-03-0{day}T01:30:00Z" for day in range(2, 7)],
    }


async def test_count_and_the_job_level_zone_which_wins_over_the_triggers(api: Api) -> None:
    reply = await api.post(
        "/v2/schedule/preview",
        {
            "trigger_type": "cron",
            "trigger_config": CRON_BERLIN,
            "schedule_timezone": "America/New_York",
            "count": 2,
        },
    )
    assert reply.body == {
        "timezone": "America/New_York",
        "fire_times": ["2026-03-02T07:30:00Z", "2026-03-03T07:30:00Z"],
    }


async def test_the_spring_forward_gap_fires_once_at_its_end(api: Api) -> None:
    reply = await api.post(
        "/v2/schedule/preview", {"trigger_type": "cron", "trigger_config": CRON_BERLIN, "count": 30}
    )
    times = reply.body["fire_times"]
    assert len(times) == 30
    # 2026-03-29: 02:30 does not exist in Berlin; the fire comes at 03:00 CEST.
    assert times[26:29] == ["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ({"trigger_type": "manual"}, []),
        ({"trigger_type": "once", "trigger_config": {"run_at": "2026-03-01T13:00:00+01:00"}}, []),
        (
            {"trigger_type": "once", "trigger_config": {"run_at": "2026-03-02T09:00:00+01:00"}},
            ["2026-03-02T08:00:00Z"],
        ),
    ],
)
async def test_manual_and_once_triggers(api: Api, trigger: dict[str, Any], expected: list[str]) -> None:
    reply = await api.post("/v2/schedule/preview", trigger)
    assert (reply.status, reply.body["fire_times"], reply.body["timezone"]) == (200, expected, "UTC")


@pytest.mark.parametrize(
    "trigger",
    [
        {"trigger_type": "cron", "trigger_config": {"expression": "61 2 * * *"}},
        {"trigger_type": "cron", "trigger_config": {"expression": "30 2 * *"}},
        {"trigger_type": "cron", "trigger_config": {"expression": "0 0 30 2 *"}},
        {"trigger_type": "cron", "trigger_config": {}},
        {"trigger_type": "cron", "trigger_config": {"expression": 5}},
        {"trigger_type": "cron", "trigger_config": {"expression": "@often"}},
        {"trigger_type": "cron", "trigger_config": {"expression": "* * * * *", "timezone": "Mars/Base"}},
        {
            "trigger_type": "cron",
            "trigger_config": {"expression": "* * * * *"},
            "schedule_timezone": "Nowhere",
        },
        {"trigger_type": "cron", "trigger_config": ["30 2 * * *"]},
        {"trigger_type": "once", "trigger_config": {"run_at": "2026-03-02 09:00"}},
        {"trigger_type": "once"},
        {"trigger_type": "hourly"},
        {"trigger_type": ""},
        {"trigger_type": 3},
    ],
)
async def test_a_trigger_a_job_could_not_have_is_the_same_400_as_creating_one(
    api: Api, trigger: dict[str, Any]
) -> None:
    preview = await api.post("/v2/schedule/preview", trigger)
    creation = await api.post("/v2/jobs", job_body("never-created", **trigger))
    assert preview.status == creation.status == 400
    assert preview.error == creation.error
    assert preview.body["error"]["type"] == "invalid_request_error"


async def test_a_cron_error_names_the_field_first(api: Api) -> None:
    reply = await api.post(
        "/v2/schedule/preview", {"trigger_type": "cron", "trigger_config": {"expression": "61 2 * * *"}}
    )
    assert reply.error == "trigger_config.expression: minute: value 61 out of bounds (0-59)"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"trigger_type": "manual", "count": 0}, "count must be a whole number from 1 to 50 (got 0)"),
        ({"trigger_type": "manual", "count": 51}, "count must be a whole number from 1 to 50 (got 51)"),
        ({"trigger_type": "manual", "count": "5"}, "count must be a whole number (got string)"),
        ({"trigger_type": "manual", "count": True}, "count must be a whole number (got boolean)"),
        ({"trigger_type": "manual", "count": 2.5}, "count must be a whole number (got number)"),
        ({"trigger_type": "manual", "name": "x"}, "unknown field 'name'; see the job fields in the README"),
        ({}, "trigger_type is required (one of: manual, once, cron)"),
        ({"trigger_type": None}, "trigger_type is required (one of: manual, once, cron)"),
    ],
)
async def test_bad_preview_bodies_are_400s_that_say_what_to_fix(
    api: Api, body: dict[str, Any], message: str
) -> None:
    reply = await api.post("/v2/schedule/preview", body)
    assert (reply.status, reply.error) == (400, message)


async def test_a_preview_needs_a_json_object_and_the_token(api: Api) -> None:
    not_json = await api.call("POST", "/v2/schedule/preview", raw=b"trigger_type=cron")
    array = await api.call(
        "POST", "/v2/schedule/preview", raw=b"[]", headers={"Content-Type": "application/json"}
    )
    anonymous = await api.post("/v2/schedule/preview", {"trigger_type": "manual"}, auth=False)
    assert not_json.status == 415
    assert (array.status, array.error) == (400, "request body must be a JSON object, not array")
    assert anonymous.status == 401
