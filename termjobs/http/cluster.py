"""``GET /v2/cluster``: the servers sharing this database, and what each runs."""

from __future__ import annotations

import os
import socket

from quart import Response

from termjobs.cluster import advertised_url
from termjobs.http.api import Api, Operation
from termjobs.http.responses import json_response
from termjobs.model import JSONObject, JSONValue, format_ts
from termjobs.services import Services
from termjobs.storage.database import SqlStorage

_EXAMPLE: JSONObject = {
    "mode": "cluster",
    "this_server": "worker_Xb2kq9LmT0aZ",
    "lease_seconds": 15,
    "servers": [
        {
            "id": "worker_Xb2kq9LmT0aZ",
            "host": "jobs-1",
            "pid": 4242,
            "url": "http://jobs-1:8080",
            "version": "0.1.0",
            "started_at": "2026-03-01T00:00:00Z",
            "heartbeat_age_seconds": 1.2,
            "alive": True,
            "leader": True,
            "jobs_owned": 412,
            "runs_active": 3,
        }
    ],
}


def register(api: Api, services: Services) -> None:
    """Add the cluster route."""

    @api.route(
        Operation(
            method="GET",
            path="/v2/cluster",
            operation_id="getCluster",
            summary="The servers on this database and what each runs",
            description=(
                "On PostgreSQL every server on the database, oldest first: alive while its heartbeat "
                "is younger than lease_seconds; the leader (oldest live server) runs retention. "
                "On SQLite (mode single) only this server."
            ),
            tag="cluster",
            status=200,
            response="Cluster",
            response_example=_EXAMPLE,
        )
    )
    async def get_cluster() -> Response:
        cluster = services.cluster
        if cluster is None or not isinstance(services.storage, SqlStorage):
            return json_response(_single(services))
        storage, lease = services.storage, cluster.node.lease_s
        rows = await storage.servers(lease_s=lease)
        owned, running = await storage.owned_counts(), await storage.running_counts()
        live = [row.id for row in rows if row.alive]
        servers: list[JSONValue] = [
            {
                "id": row.id,
                "host": row.host,
                "pid": row.pid,
                "url": row.url,
                "version": row.version,
                "started_at": format_ts(row.started_at),
                "heartbeat_age_seconds": round(row.heartbeat_age, 3),
                "alive": row.alive,
                "leader": bool(live) and live[0] == row.id,
                "jobs_owned": owned.get(row.id, 0),
                "runs_active": running.get(row.id, 0),
            }
            for row in rows
        ]
        body: JSONObject = {
            "mode": "cluster",
            "this_server": cluster.worker_id,
            "lease_seconds": lease,
            "servers": servers,
        }
        return json_response(body)


def _single(services: Services) -> JSONObject:
    settings, supervisor = services.settings, services.supervisor
    server: JSONObject = {
        "id": supervisor.worker_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "url": advertised_url(settings.host, settings.port),
        "version": services.version,
        "started_at": format_ts(supervisor.started_at),
        "heartbeat_age_seconds": 0.0,
        "alive": True,
        "leader": True,
        "jobs_owned": supervisor.job_count,
        "runs_active": supervisor.run_counts()[1],
    }
    return {"mode": "single", "this_server": supervisor.worker_id, "lease_seconds": None, "servers": [server]}
