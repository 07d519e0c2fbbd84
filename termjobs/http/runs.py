"""``/v2/runs`` routes."""

from __future__ import annotations

import sqlalchemy as sa
from quart import Quart, Response, request

from termjobs import wire
from termjobs.errors import InvalidRequest, RunNotFound
from termjobs.http.params import flag, non_negative_int, paging
from termjobs.http.responses import json_response
from termjobs.model import Run, RunEvent, RunStatus
from termjobs.service import Services
from termjobs.storage import store

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
    gateway = services.gateway

    @app.get("/v2/runs", strict_slashes=False)
    async def list_runs() -> Response:
        page = paging(request.args, default=RUN_PAGE_DEFAULT, maximum=RUN_PAGE_MAX)
        full = not flag(request.args, "summary")
        statuses = _statuses()
        ref = request.args.get("job_id", "").strip() or None

        def query(conn: sa.Connection) -> store.Page[Run]:
            job_id = ref
            if ref is not None and not ref.startswith("job_"):
                job = store.find_job(conn, ref)  # a job name is accepted too
                job_id = job.id if job else ref
            return store.list_runs(
                conn, limit=page.limit, offset=page.offset, job_id=job_id, statuses=statuses, full=full
            )

        result = await gateway.read(query, heavy=True)  # counts every match
        items = [wire.run_json(run, full=full) for run in result.items]
        return json_response(
            wire.list_envelope(items, total=result.total, offset=page.offset, limit=page.limit)
        )

    @app.get("/v2/runs/<run_id>", strict_slashes=False)
    async def get_run(run_id: str) -> Response:
        run = await gateway.read(lambda conn: store.get_run(conn, run_id))
        if run is None:
            raise RunNotFound()
        return json_response(wire.run_json(run))

    @app.get("/v2/runs/<run_id>/events", strict_slashes=False)
    async def list_events(run_id: str) -> Response:
        page = paging(request.args, default=EVENT_PAGE_DEFAULT, maximum=EVENT_PAGE_MAX)
        since_id = non_negative_int(request.args, "since_id", 0)

        def query(conn: sa.Connection) -> store.Page[RunEvent] | None:
            if store.get_run(conn, run_id, full=False) is None:
                return None
            return store.list_events(conn, run_id, since_id=since_id, limit=page.limit, offset=page.offset)

        result = await gateway.read(query, heavy=True)  # counts every match
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
