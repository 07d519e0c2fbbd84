"""End to end: the real server process, driven over HTTP (real time, bounded)."""

from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path
from typing import Any

import httpx
import trio
from sqlalchemy.engine import URL

from tests.e2e.server import serve
from tests.helpers import alive

LIMIT_S = 60
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "skipped"}

NIGHTLY = {
    "name": "nightly-report",
    "runner_type": "program",
    "runner_config": {"command": "sh", "args": ["-c", "echo report for $(date -u +%F); uname -s"]},
    "trigger_type": "cron",
    "trigger_config": {"expression": "30 2 * * *", "timezone": "Europe/Berlin"},
    "timeout_seconds": 600,
    "retry_policy": {"max_attempts": 3, "backoff": "exponential", "initial_delay": "30s"},
}


def one_off(run_at: dt.datetime) -> dict[str, Any]:
    return {
        "name": "say-hello-later",
        "runner_type": "program",
        "runner_config": {"command": "echo", "args": ["hello from termjobs"]},
        "trigger_type": "once",
        "trigger_config": {"run_at": run_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
    }


async def wait_for_run(client: httpx.AsyncClient, path: str) -> dict[str, Any]:
    """Poll ``path`` (a run, or a runs list whose newest entry is used) until terminal."""
    while True:
        body = (await client.get(path)).json()
        run = body["data"][0] if body.get("object") == "list" and body["data"] else body
        if run.get("status") in TERMINAL:
            return dict(run)
        await trio.sleep(0.1)


async def wait_for_status(client: httpx.AsyncClient, run_id: str, *statuses: str) -> None:
    """Poll the run until it has one of ``statuses`` (the e2e tier has no stream to await)."""
    while True:
        if (await client.get(f"/v2/runs/{run_id}")).json()["status"] in statuses:
            return
        await trio.sleep(0.05)


async def test_seed_examples_end_to_end(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server, server.client() as client:
            assert "auth: bearer required" in server.log and "token: e2e-token (from --token)" in server.log
            assert (await client.get("/healthz")).json()["capabilities"] == ["jobs"]
            assert (await client.get("/v2/jobs", headers={"Authorization": "Bearer nope"})).status_code == 401

            nightly = await client.post("/v2/jobs", json=NIGHTLY)
            assert nightly.status_code == 201, nightly.text
            assert nightly.json()["next_run_at"].endswith(":30:00Z")
            soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
            once = await client.post("/v2/jobs", json=one_off(soon))
            assert once.status_code == 201, once.text

            triggered = await client.post("/v2/jobs/nightly-report/trigger")
            assert triggered.status_code == 202
            run = await wait_for_run(client, f"/v2/runs/{triggered.json()['id']}")
            assert run["status"] == "succeeded" and run["stdout"].startswith("report for ")
            events = (await client.get(f"/v2/runs/{run['id']}/events")).json()["data"]
            types = [e["event_type"] for e in events]
            assert types[:3] == ["queued", "claimed", "running"] and types[-1] == "succeeded"
            assert set(types[3:-1]) == {"output"}  # output arrives in one or more batches
            assert "".join(e["data"]["text"] for e in events[3:-1]) == run["stdout"]

            fired = await wait_for_run(client, f"/v2/runs?job_id={once.json()['id']}")
            assert fired["status"] == "succeeded" and fired["trigger"] == "schedule"
            assert fired["stdout"] == "hello from termjobs\n"
            job = (await client.get("/v2/jobs/say-hello-later")).json()
            assert job["enabled"] is False and "next_run_at" not in job
            assert await server.stop() == 0


async def test_sigterm_stops_gracefully_with_exit_0_and_keeps_data(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with trio.fail_after(LIMIT_S):
        async with serve(db) as server, server.client() as client:
            await client.post("/v2/jobs", json={**NIGHTLY, "name": "kept"})
            assert await server.stop(signal.SIGTERM) == 0
            assert "shutting down gracefully" in server.log
        async with serve(db) as server, server.client() as client:
            assert [j["name"] for j in (await client.get("/v2/jobs")).json()["data"]] == ["kept"]
            assert await server.stop(signal.SIGINT) == 0


async def test_a_run_lost_to_sigkill_is_recovered_as_worker_lost_and_retried(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    marker = tmp_path / "first-attempt-pid"
    script = f"if [ -s {marker} ]; then echo recovered; else sleep 600 & echo $! > {marker}; wait; fi"
    body = {
        "name": "fragile",
        "runner_type": "program",
        "runner_config": {"command": script, "shell": True},
        "trigger_type": "manual",
        "retry_policy": {"max_attempts": 2, "initial_delay": "1s"},
    }
    with trio.fail_after(LIMIT_S):
        async with serve(db) as server, server.client() as client:
            await client.post("/v2/jobs", json=body)
            run_id = (await client.post("/v2/jobs/fragile/trigger")).json()["id"]
            # The run's program writes the file; there is nothing to await but the file.
            while not (marker.exists() and marker.read_text().strip()):  # noqa: ASYNC110
                await trio.sleep(0.05)
            orphan = int(marker.read_text())
            await server.stop(signal.SIGKILL)
            assert alive(orphan)  # the killed server could not stop its run's process
        async with serve(db) as server, server.client() as client:
            lost = (await client.get(f"/v2/runs/{run_id}")).json()
            assert lost["status"] == "failed" and lost["exit_reason"] == "worker_lost"
            retry = await wait_for_run(client, "/v2/runs?job_id=fragile&status=succeeded")
            assert retry["trigger"] == "retry" and retry["retry_of"] == run_id and retry["attempt"] == 2
            full = (await client.get(f"/v2/runs/{retry['id']}")).json()
            assert full["stdout"] == "recovered\n"
            assert "recovered 1 run(s) interrupted" in server.log
            assert not alive(orphan)  # crash recovery killed the lost run's leftover process


async def test_sigterm_with_runs_in_flight_follows_the_grace_rules(tmp_path: Path, db_url: URL) -> None:
    # On PostgreSQL the server is in a cluster (of one): its final writes are fenced
    # by its lease, so it must not give its jobs up before its runs have ended.
    db = db_url.render_as_string(hide_password=False)

    def job(name: str, seconds: float) -> dict[str, Any]:
        return {
            "name": name,
            "runner_type": "program",
            "trigger_type": "manual",
            "runner_config": {"command": "sh", "args": ["-c", f"echo started; sleep {seconds}; echo done"]},
        }

    with trio.fail_after(LIMIT_S):
        async with (
            serve(db, "--shutdown-grace", "2", "--jobs-workers", "2", home=tmp_path) as server,
            server.client() as client,
        ):
            ids = {}
            for name, seconds in (("short", 1), ("long", 600), ("waiting", 1)):
                await client.post("/v2/jobs", json=job(name, seconds))
                ids[name] = (await client.post(f"/v2/jobs/{name}/trigger")).json()["id"]
            # Both have started; "waiting" has no worker. (A poll on a busy machine may
            # come after the short one has ended: it must have succeeded then.)
            await wait_for_status(client, ids["short"], "running", "succeeded")
            await wait_for_status(client, ids["long"], "running")
            stopping = trio.current_time()
            assert await server.stop(signal.SIGTERM) == 0
            assert 2 <= trio.current_time() - stopping < 10
        async with serve(db, home=tmp_path) as server, server.client() as client:
            short = (await client.get(f"/v2/runs/{ids['short']}")).json()
            assert short["status"] == "succeeded" and short["stdout"] == "started\ndone\n"
            long = (await client.get(f"/v2/runs/{ids['long']}")).json()
            assert long["status"] == "cancelled" and long["exit_code"] == 143
            assert long["error"] == "cancelled: the server shut down before the run finished"
            waiting = await wait_for_run(client, f"/v2/runs/{ids['waiting']}")
            assert waiting["status"] == "succeeded"  # stayed queued, ran after the restart
            assert await server.stop() == 0
