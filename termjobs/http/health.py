"""Liveness, readiness and the API's own description (no token needed for any)."""

from __future__ import annotations

import trio
from quart import Response, request

from termjobs.http.api import Api, Operation
from termjobs.http.auth import is_authorised
from termjobs.http.openapi import document
from termjobs.http.responses import json_response
from termjobs.model import JSONObject
from termjobs.services import Services
from termjobs.storage import StorageError

#: How long readiness waits for storage to answer.
STORAGE_PROBE_S = 2.0


def register(api: Api, services: Services) -> None:
    """Add ``/healthz``, ``/readyz`` and ``/openapi.json``."""

    @api.route(
        Operation(
            method="GET",
            path="/healthz",
            operation_id="health",
            summary="Liveness: the process answers",
            description="With the token, also the version and capabilities.",
            tag="health",
            status=200,
            response="Health",
            auth=False,
            response_example={"status": "ok"},
        )
    )
    async def healthz() -> Response:
        body: JSONObject = {"status": "ok"}
        if is_authorised(services.settings, request.headers):
            body.update(version=services.version, capabilities=["jobs"])
        return json_response(body)

    @api.route(
        Operation(
            method="GET",
            path="/readyz",
            operation_id="ready",
            summary="Readiness: storage answers, the schema is current, the scheduler runs",
            description="503 with the failing checks while not ready, and from the moment a shutdown begins.",
            tag="health",
            status=200,
            response="Readiness",
            auth=False,
            response_example={"status": "ready"},
        )
    )
    async def readyz() -> Response:
        failing = await _failing_checks(services)
        if failing:
            return json_response({"status": "not_ready", "failing": [*failing]}, 503)
        return json_response({"status": "ready"})

    @api.app.route("/openapi.json", methods=["GET"])
    async def openapi() -> Response:
        return json_response(document(api.operations, version=services.version))


async def _failing_checks(services: Services) -> list[str]:
    if services.state.shutting_down:
        return ["shutting_down"]
    failing: list[str] = []
    with trio.move_on_after(STORAGE_PROBE_S) as probe:
        try:
            if not await services.storage.schema_is_current():
                failing.append("migrations")
        except StorageError:
            failing.append("storage")
    if probe.cancelled_caught:
        failing.append("storage")
    if not services.supervisor.started:
        failing.append("scheduler")
    if services.cluster is not None and not services.cluster.node.heartbeat_fresh:
        failing.append("cluster_lease")  # other servers may be taking this one's jobs
    return failing
