"""``/v2/jobs`` routes. Every ``{ref}`` is a job id or an exact job name."""

from __future__ import annotations

from quart import Quart, Response, request

from termjobs import jobspec, wire
from termjobs.errors import InvalidRequest, JobNotFound, UnsupportedMediaType
from termjobs.http.params import flag, paging
from termjobs.http.responses import json_response
from termjobs.jobdef import Job
from termjobs.model import JSONObject, TriggerType
from termjobs.runners.llm.origin import is_loopback, sanitize_runner_config
from termjobs.services import Services
from termjobs.storage import JobFilters, JobView

JOB_PAGE_DEFAULT = 50
JOB_PAGE_MAX = 200


async def json_body() -> JSONObject:
    """The request body, which must be declared and parse as one JSON object."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    raw = await request.get_data(as_text=False)
    return jobspec.decode_body(raw.encode() if isinstance(raw, str) else raw)


def register(app: Quart, services: Services) -> None:
    """Add the job routes to ``app``."""
    storage, supervisor = services.storage, services.supervisor

    async def render(job: Job) -> Response:
        """The job with its newest run."""
        view = await storage.job_view(job.id)
        return json_response(wire.job_json(job, view.last_run if view else None))

    @app.post("/v2/jobs", strict_slashes=False)
    async def create_job() -> Response:
        body = await json_body()
        runner_type = body.get("runner_type")
        if isinstance(runner_type, str) and runner_type.strip() == "llm":
            _server_managed_origin(body)
        job = await supervisor.create_job(jobspec.definition_for_create(body))
        return json_response(wire.job_json(job), 201)

    @app.get("/v2/jobs", strict_slashes=False)
    async def list_jobs() -> Response:
        page = paging(request.args, default=JOB_PAGE_DEFAULT, maximum=JOB_PAGE_MAX)
        result = await storage.jobs_page(limit=page.limit, offset=page.offset, filters=_job_filters())
        items = [wire.job_json(view.job, view.last_run) for view in result.items]
        return json_response(
            wire.list_envelope(items, total=result.total, offset=page.offset, limit=page.limit)
        )

    @app.get("/v2/jobs/<ref>", strict_slashes=False)
    async def get_job(ref: str) -> Response:
        view: JobView | None = await storage.job_view(ref)
        if view is None:
            raise JobNotFound()
        return json_response(wire.job_json(view.job, view.last_run))

    @app.patch("/v2/jobs/<ref>", strict_slashes=False)
    async def patch_job(ref: str) -> Response:
        body = await json_body()
        _server_managed_origin(body)
        patch = jobspec.parse_patch(body)
        return await render(await supervisor.update(ref, patch))

    @app.delete("/v2/jobs/<ref>", strict_slashes=False)
    async def delete_job(ref: str) -> Response:
        cancel_active = bool(flag(request.args, "cancel_active"))
        job_id = await supervisor.delete(ref, cancel_active=cancel_active)
        return json_response({"id": job_id, "deleted": True})

    @app.post("/v2/jobs/<ref>/trigger", strict_slashes=False)
    async def trigger_job(ref: str) -> Response:
        return json_response(wire.run_json(await supervisor.trigger(ref)), 202)

    @app.post("/v2/jobs/<ref>/pause", strict_slashes=False)
    async def pause_job(ref: str) -> Response:
        return await render(await supervisor.pause(ref))

    @app.post("/v2/jobs/<ref>/resume", strict_slashes=False)
    async def resume_job(ref: str) -> Response:
        return await render(await supervisor.resume(ref))


def _server_managed_origin(body: JSONObject) -> None:
    """Replace any client-sent ``notify_origin`` by the one this request may set."""
    if "runner_config" in body:
        body["runner_config"] = sanitize_runner_config(
            body["runner_config"],
            {k.lower(): v for k, v in request.headers.items()},
            loopback=is_loopback(request.remote_addr),
        )


def _job_filters() -> JobFilters:
    trigger = request.args.get("trigger_type", "").strip()
    if trigger and trigger not in {t.value for t in TriggerType}:
        raise InvalidRequest("trigger_type must be one of: manual, once, cron")
    return JobFilters(
        name=request.args.get("name", "").strip() or None,
        enabled=flag(request.args, "enabled"),
        trigger_type=TriggerType(trigger) if trigger else None,
        id_prefix=request.args.get("id_prefix", "").strip() or None,
    )
