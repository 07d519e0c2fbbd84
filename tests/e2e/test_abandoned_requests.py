"""Nothing a client does half-way leaves state half-done.

The reproduction of the reliability issue: a valid create whose client closes the
socket 0-7 ms later used to leave a job that was stored but unknown to the supervisor
(trigger, PATCH and DELETE answered 404, its schedule never fired). Here every write
route is abandoned that way, many times, on SQLite and PostgreSQL; afterwards every
stored job must be usable and its schedule must fire, and no run may be left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import signal
import socket
import struct
from typing import Any

import httpx
import trio
from sqlalchemy.engine import URL

from termjobs.testing import serve_process
from tests.e2e.server import TOKEN, Server

LIMIT_S = 150
TRIES = 40
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "skipped"}


def request(method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    return (head + "\r\n").encode() + data


async def abandon(server: Server, raw: bytes, rng: random.Random) -> None:
    """Send a whole request, then reset the connection 0-7 ms later."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(raw)
    await trio.sleep(rng.uniform(0, 0.007))
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


def once_job(name: str, fire_at: dt.datetime) -> dict[str, Any]:
    return {
        "name": name,
        "runner_type": "program",
        "runner_config": {"command": "true"},
        "trigger_type": "once",
        "trigger_config": {"run_at": fire_at.isoformat().replace("+00:00", "Z")},
        "concurrency_policy": "allow",
        "max_concurrent_runs": 50,
    }


async def all_jobs(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await client.get("/v2/jobs", params={"limit": 200})).json()["data"])


async def settle(client: httpx.AsyncClient, within: float) -> list[dict[str, Any]]:
    """Runs, once none is active (or ``within`` has passed)."""
    with trio.move_on_after(within):
        while True:
            runs = (await client.get("/v2/runs", params={"summary": 1, "limit": 200})).json()["data"]
            if all(run["status"] in TERMINAL for run in runs):
                return list(runs)
            await trio.sleep(0.2)
    return list((await client.get("/v2/runs", params={"summary": 1, "limit": 200})).json()["data"])


async def test_abandoned_writes_leave_nothing_half_done(db_url: URL) -> None:
    rng = random.Random(3)
    with trio.fail_after(LIMIT_S):
        db = db_url.render_as_string(hide_password=False)
        async with (
            serve_process("--db", db, token=TOKEN, teardown=signal.SIGKILL) as server,
            server.client() as client,
        ):
            fire_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=12)
            for i in range(TRIES):
                await abandon(server, request("POST", "/v2/jobs", once_job(f"abandoned-{i}", fire_at)), rng)
            await trio.sleep(1)
            jobs = await all_jobs(client)
            assert jobs, "no abandoned create was stored: the test proves nothing"
            # Every other write route, abandoned the same way.
            for job in jobs:
                for method, path, body in [
                    ("POST", f"/v2/jobs/{job['id']}/trigger", None),
                    ("PATCH", f"/v2/jobs/{job['id']}", {"labels": {"patched": True}}),
                    ("POST", f"/v2/jobs/{job['id']}/pause", None),
                    ("POST", f"/v2/jobs/{job['id']}/resume", None),
                ]:
                    await abandon(server, request(method, path, body), rng)
            runs = (await client.get("/v2/runs", params={"summary": 1, "limit": 200})).json()["data"]
            for run in runs[:10]:
                await abandon(server, request("POST", f"/v2/runs/{run['id']}/cancel"), rng)
            for job in jobs[:5]:
                await abandon(server, request("DELETE", f"/v2/jobs/{job['id']}?cancel_active=true"), rng)
            await trio.sleep(1)
            # Whatever was stored is fully usable: resume (a pause may have landed), PATCH.
            survivors = await all_jobs(client)
            for job in survivors:
                assert (await client.post(f"/v2/jobs/{job['id']}/resume")).status_code == 200, job
                patched = await client.patch(f"/v2/jobs/{job['id']}", json={"labels": {"ok": 1}})
                assert patched.status_code == 200, patched.text
            # The once jobs fire (their actors are registered and armed).
            await trio.sleep(max(0.0, (fire_at - dt.datetime.now(dt.UTC)).total_seconds()) + 3)
            runs = await settle(client, within=30)
            assert all(run["status"] in TERMINAL for run in runs), [r["status"] for r in runs]
            for job in survivors:
                mine = [r for r in runs if r["job_id"] == job["id"]]
                assert any(r["trigger"] == "schedule" for r in mine), f"{job['name']} never fired"
                # A once job disables itself after its fire: resume it, then trigger it.
                assert (await client.post(f"/v2/jobs/{job['id']}/resume")).status_code == 200
                assert (await client.post(f"/v2/jobs/{job['id']}/trigger")).status_code == 202
            await settle(client, within=30)
            for job in survivors:
                deleted = await client.delete(f"/v2/jobs/{job['id']}", params={"cancel_active": "true"})
                assert deleted.status_code == 200, deleted.text
            assert await all_jobs(client) == []
            assert "Traceback" not in server.log, server.log
