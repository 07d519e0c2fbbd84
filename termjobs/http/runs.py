"""``/v2/runs`` routes."""

from __future__ import annotations

from quart import Quart, Response, request

from termjobs import wire
from termjobs.errors import InvalidRequest, RunNotFound
from termjobs.http.params import flag, non_negative_int, paging
from termjobs.http.responses import json_response
from termjobs.model import RunStatus
from termjobs.services import Services

RUN_PAGE_DEFAULT = 50
RUN_PAGE_MAX = 200
EVENT_PAGE_DEFAULT = 200
EVENT_PAGE_MAX = 500


def _statuses() -> list[RunStatus]:
    raw = request.args.get("status", "").strip()
    if not raw:
        return []
    try:
        return [RunStatus(part.strip()) for part in raw.split(",") if part.strip()]
    except ValueError:
        allowed = ", ".join(status.value for status in RunStatus)
        raise InvalidRequest(f"status must be a comma-separated list of: {allowed}") from None


def register(app: Quart, services: Services) -> None:
    """Add the run routes to ``app``."""
    storage = services.storage

    @app.get("/v2/runs", strict_slashes=False)
    async def list_runs() -> Response:
        page = paging(request.args, default=RUN_PAGE_DEFAULT, maximum=RUN_PAGE_MAX)
        full = not flag(request.args, "summary")
        result = await storage.runs_page(
            limit=page.limit,
            offset=page.offset,
            job_ref=request.args.get("job_id", "").strip() or None,
            statuses=_statuses(),
            full=full,
        )
        items = [wire.run_json(run, full=full) for run in result.items]
        return json_response(
            wire.list_envelope(items, total=result.total, offset=page.offset, limit=page.limit)
        )

    @app.get("/v2/runs/<run_id>", strict_slashes=False)
    async def get_run(run_id: str) -> Response:
        run = await storage.get_run(run_id)
        if run is None:
            raise RunNotFound()
        return json_response(wire.run_json(run))

    @app.get("/v2/runs/<run_id>/events", strict_slashes=False)
    async def list_events(run_id: str) -> Response:
        page = paging(request.args, default=EVENT_PAGE_DEFAULT, maximum=EVENT_PAGE_MAX)
        since_id = non_negative_int(request.args, "since_id", 0)
        result = await storage.events_page(run_id, since_id=since_id, limit=page.limit, offset=page.offset)
        if result is None:
            raise RunNotFound()
        items = [wire.event_json(event) for event in result.items]
        return json_response(
            wire.list_envelope(
                items, total=result.total, offset=page.offset, limit=page.limit, since_id=since_id
            )
        )

    @app.post("/v2/runs/<run_id>/cancel", strict_slashes=False)
    async def cancel_run(run_id: str) -> Response:
        return json_response(wire.run_json(await services.supervisor.cancel_run(run_id)))
