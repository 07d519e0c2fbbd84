"""``/v2/jobs`` routes. Every ``{ref}`` is a job id or an exact job name."""

from __future__ import annotations

from quart import Response, request

from termjobs import jobspec, wire
from termjobs.actors.protocol import Idempotency
from termjobs.errors import JobNotFound, UnsupportedMediaType
from termjobs.http.api import Api, Operation
from termjobs.http.cache import ListingCache
from termjobs.http.examples import JOB_BODY, job_example, run_example
from termjobs.http.idempotency import answer_once
from termjobs.http.queries import DeleteJobQuery, JobListQuery, parse_query
from termjobs.http.responses import json_response
from termjobs.jobdef import Job
from termjobs.jobspec import JobCreate, JobUpdate, RunOverrides
from termjobs.model import JSONObject
from termjobs.runners.llm.origin import is_loopback, sanitize_runner_config
from termjobs.services import Services
from termjobs.storage import JobFilters

JOB_PAGE_DEFAULT = 50
JOB_PAGE_MAX = 200
#: single jobs' answers kept (``GET /v2/jobs/{id}``, see http/cache.py)
JOB_VIEWS_KEPT = 256
_REF = {"ref": "a job id or its exact name"}
_JOB_LINKS = dict.fromkeys(("getJob", "updateJob", "deleteJob", "triggerJob", "pauseJob", "resumeJob"), "ref")
_RUN_LINKS = dict.fromkeys(("getRun", "listRunEvents", "cancelRun"), "run_id")


async def json_body() -> JSONObject:
    """The request body, which must be declared and parse as one JSON object."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    raw = await request.get_data(as_text=False)
    return jobspec.decode_body(raw.encode() if isinstance(raw, str) else raw)


async def optional_json_body() -> JSONObject | None:
    """The request body as a JSON object, or ``None`` when there is none."""
    raw = await request.get_data(as_text=False)
    if not raw.strip():
        return None
    return await json_body()


def register(api: Api, services: Services) -> None:
    """Add the job routes."""
    storage, supervisor = services.storage, services.control
    listings = ListingCache(storage)
    views = ListingCache(storage, answers=JOB_VIEWS_KEPT)

    async def render(job: Job) -> Response:
        """The job with its newest run."""
        view = await storage.job_view(job.id)
        return json_response(wire.job_json(job, view.last_run if view else None))

    @api.route(
        Operation(
            method="POST",
            path="/v2/jobs",
            operation_id="createJob",
            summary="Create a job",
            status=201,
            response="Job",
            body=JobCreate,
            body_required=True,
            errors=(400, 409, 413, 415, 422),
            idempotent=True,
            links=_JOB_LINKS,
            request_example=JOB_BODY,
            response_example=job_example(),
        )
    )
    async def create_job() -> Response:
        body = await json_body()
        runner_type = body.get("runner_type")
        if isinstance(runner_type, str) and runner_type.strip() == "llm":
            _server_managed_origin(body)
        spec = jobspec.definition_for_create(body)

        async def create(idempotency: Idempotency | None) -> Response:
            job = await supervisor.create_job(spec, idempotency=idempotency)
            return json_response(wire.job_json(job), 201)

        return await answer_once(services, body, create)

    @api.route(
        Operation(
            method="GET",
            path="/v2/jobs",
            operation_id="listJobs",
            summary="List jobs, newest first",
            status=200,
            response="JobList",
            query=JobListQuery,
            errors=(400,),
            response_example=wire.list_envelope([job_example()], total=1, offset=0, limit=JOB_PAGE_DEFAULT),
        )
    )
    async def list_jobs() -> Response:
        query = parse_query(JobListQuery, request.args)
        limit = query.effective_limit(default=JOB_PAGE_DEFAULT, maximum=JOB_PAGE_MAX)
        filters = JobFilters(
            name=query.name,
            enabled=query.enabled,
            trigger_type=query.trigger_type,
            runner_type=query.runner_type,
            labels=tuple(query.label),
            id_prefix=query.id_prefix,
        )

        async def listing() -> str:
            result = await storage.jobs_page(limit=limit, offset=query.offset, filters=filters)
            items = [wire.job_json(view.job, view.last_run) for view in result.items]
            return wire.dumps(wire.list_envelope(items, total=result.total, offset=query.offset, limit=limit))

        return await listings.answer((request.path, request.query_string), listing)

    @api.route(
        Operation(
            method="GET",
            path="/v2/jobs/<ref>",
            operation_id="getJob",
            summary="Get a job, with its newest run",
            status=200,
            response="Job",
            errors=(404,),
            params=_REF,
            response_example=job_example(),
        )
    )
    async def get_job(ref: str) -> Response:
        async def one() -> str:
            view = await storage.job_view(ref)
            if view is None:
                raise JobNotFound()
            return wire.dumps(wire.job_json(view.job, view.last_run))

        return await views.answer((request.path, b""), one)

    @api.route(
        Operation(
            method="PATCH",
            path="/v2/jobs/<ref>",
            operation_id="updateJob",
            summary="Change some fields of a job",
            description="Absent fields keep their value; null resets a field to its default.",
            status=200,
            response="Job",
            body=JobUpdate,
            body_required=True,
            errors=(400, 404, 409, 413, 415),
            params=_REF,
            request_example={"timeout_seconds": 900, "labels": {"team": "ops"}},
            response_example=job_example(),
        )
    )
    async def patch_job(ref: str) -> Response:
        body = await json_body()
        _server_managed_origin(body)
        patch = jobspec.parse_patch(body)
        return await render(await supervisor.update(ref, patch))

    @api.route(
        Operation(
            method="DELETE",
            path="/v2/jobs/<ref>",
            operation_id="deleteJob",
            summary="Delete a job and its history",
            description="A job with active runs is refused (409) unless cancel_active=true.",
            status=200,
            response="Deleted",
            query=DeleteJobQuery,
            errors=(400, 404, 409),
            params=_REF,
            response_example={"id": "job_7rTq0LmZ2bXc", "deleted": True},
        )
    )
    async def delete_job(ref: str) -> Response:
        query = parse_query(DeleteJobQuery, request.args)
        job_id = await supervisor.delete(ref, cancel_active=bool(query.cancel_active))
        return json_response({"id": job_id, "deleted": True})

    @api.route(
        Operation(
            method="POST",
            path="/v2/jobs/<ref>/trigger",
            operation_id="triggerJob",
            summary="Queue a manual run now",
            description="An optional body changes this run only: args and env (program jobs), "
            "instructions (llm jobs), timeout_seconds.",
            status=202,
            response="Run",
            body=RunOverrides,
            request_example={"args": ["--full"], "env": {"REPORT_DAY": "2026-03-01"}, "timeout_seconds": 900},
            idempotent=True,
            errors=(400, 404, 409, 413, 415, 422),
            params=_REF,
            links=_RUN_LINKS,
            response_example=run_example(),
        )
    )
    async def trigger_job(ref: str) -> Response:
        body = await optional_json_body()
        overrides = jobspec.parse_overrides(body) if body is not None else None

        async def trigger(idempotency: Idempotency | None) -> Response:
            run = await supervisor.trigger(ref, overrides=overrides, idempotency=idempotency)
            return json_response(wire.run_json(run), 202)

        return await answer_once(services, body, trigger)

    @api.route(_switch("pause", "Disable a job (active runs carry on)"))
    async def pause_job(ref: str) -> Response:
        return await render(await supervisor.pause(ref))

    @api.route(_switch("resume", "Enable a job"))
    async def resume_job(ref: str) -> Response:
        return await render(await supervisor.resume(ref))


def _switch(action: str, summary: str) -> Operation:
    return Operation(
        method="POST",
        path=f"/v2/jobs/<ref>/{action}",
        operation_id=f"{action}Job",
        summary=summary,
        status=200,
        response="Job",
        errors=(404,),
        params=_REF,
        response_example=job_example(),
    )


def _server_managed_origin(body: JSONObject) -> None:
    """Replace any client-sent ``notify_origin`` by the one this request may set."""
    if "runner_config" in body:
        body["runner_config"] = sanitize_runner_config(
            body["runner_config"],
            {k.lower(): v for k, v in request.headers.items()},
            loopback=is_loopback(request.remote_addr),
        )
