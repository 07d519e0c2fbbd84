"""``POST /v2/schedule/preview``: the next fire times of a trigger, before a job has it
(the dashboard's cron field shows them as the user types)."""

from __future__ import annotations

from typing import Final

from quart import Response

from termjobs.http.api import Api, Operation
from termjobs.http.jobs import json_body
from termjobs.http.responses import json_response
from termjobs.jobspec import SchedulePreview, SchedulePreviewInput, parse_schedule_preview
from termjobs.model import JSONObject, JSONValue, format_ts
from termjobs.schedule import DEFAULT_TIMEZONE, CronTrigger, upcoming_fires
from termjobs.services import Services

_EXAMPLE_TIMES: Final = [f"2026-03-0{day}T01:30:00Z" for day in range(2, 7)]


def register(api: Api, services: Services) -> None:
    """Add the schedule preview route."""

    @api.route(
        Operation(
            method="POST",
            path="/v2/schedule/preview",
            operation_id="previewSchedule",
            summary="The next fire times of a trigger",
            description=(
                "The trigger fields of a job (trigger_type, trigger_config, schedule_timezone) and "
                "count (1-50, default 5): the next fire times after now, in UTC, and the zone the "
                "schedule is evaluated in. A trigger a job could not have is the 400 that creating "
                "the job would answer, with the same message."
            ),
            tag="jobs",
            status=200,
            response="SchedulePreview",
            body=SchedulePreviewInput,
            body_required=True,
            errors=(400, 413, 415),
            request_example={
                "trigger_type": "cron",
                "trigger_config": {"expression": "30 2 * * *", "timezone": "Europe/Berlin"},
                "count": 5,
            },
            response_example=_preview_json("Europe/Berlin", _EXAMPLE_TIMES),
        )
    )
    async def preview_schedule() -> Response:
        preview = parse_schedule_preview(await json_body())
        fires = upcoming_fires(preview.trigger, services.clock.now(), preview.count)
        return json_response(_preview_json(_zone_of(preview), [format_ts(at) for at in fires]))


def _zone_of(preview: SchedulePreview) -> str:
    if isinstance(preview.trigger, CronTrigger):
        return preview.trigger.zone_name
    return preview.schedule_timezone or DEFAULT_TIMEZONE


def _preview_json(timezone: str, times: list[str]) -> JSONObject:
    fire_times: list[JSONValue] = [*times]
    return {"timezone": timezone, "fire_times": fire_times}
