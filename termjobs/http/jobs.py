"""``/v2/jobs`` routes. Every ``{ref}`` is a job id or an exact job name."""

from __future__ import annotations

import sqlalchemy as sa
from quart import Quart, Response, request

from termjobs import wire
from termjobs.actors.job import DeleteJob, TriggerNow, UpdateJob
from termjobs.errors import InvalidRequest, JobNotFound, UnsupportedMediaType
from termjobs.http.params import flag, paging
from termjobs.http.responses import json_response
from termjobs.jobspec import decode_body
from termjobs.model import Job, JSONValue, Run, TriggerType
from termjobs.service import Services
from termjobs.storage import store

JOB_PAGE_DEFAULT = 50
JOB_PAGE_MAX = 200


async def json_body() -> dict[str, JSONValue]:
    """The request body, which must be declared and parse as one JSON object."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    raw = await request.get_data(as_text=False)
    return decode_body(raw.encode() if isinstance(raw, str) else raw)


def register(app: Quart, services: Services) -> None:
    """Add the job routes to ``app``."""
    gateway, supervisor = services.gateway, services.supervisor

    async def find(ref: str) -> Job:
        job = await gateway.read(lambda conn: store.find_job(conn, ref))
        if job is None:
            raise JobNotFound()
        return job

    async def render(job: Job) -> dict[str, JSONValue]:
        last = await gateway.read(lambda conn: store.last_runs(conn, [job.id]))
        return wire.job_json(job, last_run=last.get(job.id))

    async def find_with_last_run(ref: str) -> dict[str, JSONValue]:
        def query(conn: sa.Connection) -> tuple[Job | None, dict[str, Run]]:
            job = store.find_job(conn, ref)
            return job, store.last_runs(conn, [job.id]) if job else {}

        job, last = await gateway.read(query)  # one storage round trip for both
        if job is None:
            raise JobNotFound()
        return wire.job_json(job, last_run=last.get(job.id))

    @app.post("/v2/jobs", strict_slashes=False)
    async def create_job() -> Response:
        job = await supervisor.create_job(await json_body())
        return json_response(wire.job_json(job), 201)

    @app.get("/v2/jobs", strict_slashes=False)
    async def list_jobs() -> Response:
        page = paging(request.args, default=JOB_PAGE_DEFAULT, maximum=JOB_PAGE_MAX)
        filters = _job_filters()

        def query(conn: sa.Connection) -> tuple[store.Page[Job], dict[str, Run]]:
            result = store.list_jobs(conn, limit=page.limit, offset=page.offset, filters=filters)
            return result, store.last_runs(conn, [job.id for job in result.items])

        result, last = await gateway.read(query, heavy=True)  # counts every match
        items = [wire.job_json(job, last_run=last.get(job.id)) for job in result.items]
        return json_response(
            wire.list_envelope(items, total=result.total, offset=page.offset, limit=page.limit)
        )

    @app.get("/v2/jobs/<ref>", strict_slashes=False)
    async def get_job(ref: str) -> Response:
        return json_response(await find_with_last_run(ref))

    @app.patch("/v2/jobs/<ref>", strict_slashes=False)
    async def patch_job(ref: str) -> Response:
        body = await json_body()
        job = await find(ref)
        message = UpdateJob(body=body)
        return json_response(await render(await supervisor.ask(job.id, message, message.reply)))

    @app.delete("/v2/jobs/<ref>", strict_slashes=False)
    async def delete_job(ref: str) -> Response:
        cancel_active = bool(flag(request.args, "cancel_active"))
        job = await find(ref)
        message = DeleteJob(cancel_active=cancel_active)
        await supervisor.ask(job.id, message, message.reply)
        return json_response({"id": job.id, "deleted": True})

    @app.post("/v2/jobs/<ref>/trigger", strict_slashes=False)
    async def trigger_job(ref: str) -> Response:
        # An id the supervisor knows needs no lookup (triggers are the hot path).
        job_id = ref if supervisor.has_job(ref) else (await find(ref)).id
        message = TriggerNow()
        run = await supervisor.ask(job_id, message, message.reply)
        return json_response(wire.run_json(run), 202)

    async def set_enabled(ref: str, enabled: bool) -> Response:
        job = await find(ref)
        message = UpdateJob(body={"enabled": enabled})
        return json_response(await render(await supervisor.ask(job.id, message, message.reply)))

    @app.post("/v2/jobs/<ref>/pause", strict_slashes=False)
    async def pause_job(ref: str) -> Response:
        return await set_enabled(ref, False)

    @app.post("/v2/jobs/<ref>/resume", strict_slashes=False)
    async def resume_job(ref: str) -> Response:
        return await set_enabled(ref, True)


def _job_filters() -> store.JobFilters:
    trigger = request.args.get("trigger_type", "").strip()
    if trigger and trigger not in {t.value for t in TriggerType}:
        raise InvalidRequest("trigger_type must be one of: manual, once, cron")
    return store.JobFilters(
        name=request.args.get("name", "").strip() or None,
        enabled=flag(request.args, "enabled"),
        trigger_type=TriggerType(trigger) if trigger else None,
        id_prefix=request.args.get("id_prefix", "").strip() or None,
    )
