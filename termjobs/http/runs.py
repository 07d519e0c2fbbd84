"""``/v2/runs`` routes."""

from __future__ import annotations

from quart import Response, request

from termjobs import wire
from termjobs.errors import RunNotFound
from termjobs.http.api import Api, Operation
from termjobs.http.cache import ListingCache, RenderedRuns
from termjobs.http.examples import event_example, run_example
from termjobs.http.queries import EventListQuery, RunListQuery, parse_query
from termjobs.http.responses import json_response
from termjobs.services import Services
from termjobs.storage import RunFilters

RUN_PAGE_DEFAULT = 50
RUN_PAGE_MAX = 200
EVENT_PAGE_DEFAULT = 200
EVENT_PAGE_MAX = 500
_RUN = {"run_id": "a run id"}


def register(api: Api, services: Services) -> None:
    """Add the run routes."""
    storage = services.storage
    listings, rendered = ListingCache(storage), RenderedRuns()

    @api.route(
        Operation(
            method="GET",
            path="/v2/runs",
            operation_id="listRuns",
            summary="List runs, newest first",
            tag="runs",
            status=200,
            response="RunList",
            query=RunListQuery,
            errors=(400,),
            response_example=wire.list_envelope([run_example(finished=True)], total=1, offset=0, limit=50),
        )
    )
    async def list_runs() -> Response:
        query = parse_query(RunListQuery, request.args)
        limit = query.effective_limit(default=RUN_PAGE_DEFAULT, maximum=RUN_PAGE_MAX)
        filters = RunFilters(
            job_ref=query.job_id,
            statuses=tuple(query.status),
            trigger=query.trigger,
            created_after=query.created_after,
            created_before=query.created_before,
        )
        full = not query.summary

        async def listing() -> str:
            result = await storage.runs_page(limit=limit, offset=query.offset, filters=filters, full=full)
            items = [rendered.text(run, full=full) for run in result.items]
            return wire.list_text(items, total=result.total, offset=query.offset, limit=limit)

        return await listings.answer((request.path, request.query_string), listing)

    @api.route(
        Operation(
            method="GET",
            path="/v2/runs/<run_id>",
            operation_id="getRun",
            summary="Get a run with its output",
            tag="runs",
            status=200,
            response="Run",
            errors=(404,),
            params=_RUN,
            response_example=run_example(finished=True),
        )
    )
    async def get_run(run_id: str) -> Response:
        run = await storage.get_run(run_id)
        if run is None:
            raise RunNotFound()
        return json_response(wire.run_json(run))

    @api.route(
        Operation(
            method="GET",
            path="/v2/runs/<run_id>/events",
            operation_id="listRunEvents",
            summary="A run's timeline, oldest first",
            tag="runs",
            status=200,
            response="RunEventList",
            query=EventListQuery,
            errors=(400, 404),
            params=_RUN,
            response_example=wire.list_envelope(
                [event_example()], total=1, offset=0, limit=EVENT_PAGE_DEFAULT, since_id=0
            ),
        )
    )
    async def list_events(run_id: str) -> Response:
        query = parse_query(EventListQuery, request.args)
        limit = query.effective_limit(default=EVENT_PAGE_DEFAULT, maximum=EVENT_PAGE_MAX)
        result = await storage.events_page(run_id, since_id=query.since_id, limit=limit, offset=query.offset)
        if result is None:
            raise RunNotFound()
        items = [wire.event_json(event) for event in result.items]
        return json_response(
            wire.list_envelope(
                items, total=result.total, offset=query.offset, limit=limit, since_id=query.since_id
            )
        )

    @api.route(
        Operation(
            method="POST",
            path="/v2/runs/<run_id>/cancel",
            operation_id="cancelRun",
            summary="Cancel a run",
            description=(
                "A queued run ends cancelled at once; a running one becomes cancel_requested, then "
                "cancelled once stopped; a finished run is returned unchanged."
            ),
            tag="runs",
            status=200,
            response="Run",
            errors=(404,),
            params=_RUN,
            response_example=run_example(finished=True),
        )
    )
    async def cancel_run(run_id: str) -> Response:
        return json_response(wire.run_json(await services.control.cancel_run(run_id)))
