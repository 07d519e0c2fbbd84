"""The operable API against the real server: OpenAPI, metrics, readiness, CORS, JSON logs,
filters, per-run overrides and idempotency (real time, bounded)."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.e2e.server import serve
from tests.e2e.test_webhooks import final

LIMIT_S = 60


def echo_job(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "runner_type": "program",
        "runner_config": {"command": 'echo "args=$* day=$REPORT_DAY"', "shell": True, "args": ["a"]},
        "trigger_type": "manual",
        "concurrency_policy": "allow",
        "max_concurrent_runs": 50,
        **fields,
    }


async def test_the_openapi_document_describes_every_route(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server, httpx.AsyncClient(base_url=server.url) as anonymous:
            reply = await anonymous.get("/openapi.json")  # no token needed
    assert reply.status_code == 200
    doc = reply.json()
    assert doc["openapi"] == "3.1.0"
    operations = {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if path.startswith("/v2")
    }
    rest = {op["operationId"] for op in operations.values() if op["tags"] in (["jobs"], ["runs"])}
    assert rest == {
        *("createJob", "listJobs", "getJob", "updateJob", "deleteJob", "triggerJob", "pauseJob"),
        *("resumeJob", "previewSchedule", "listRuns", "getRun", "listRunEvents", "cancelRun"),
    }
    assert {op["operationId"] for op in operations.values()} - rest == {
        "listAgents",
        "getSession",
        "getCluster",
    }

    for (method, path), op in operations.items():
        responses = op["responses"]
        assert {"401", "500", "503"} <= set(responses), (method, path)
        assert any(
            r["content"]["application/json"].get("example") for r in responses.values() if r.get("content")
        )
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
    headers = {
        key: [p["name"] for p in op["parameters"] if p["in"] == "header"] for key, op in operations.items()
    }
    assert headers[("POST", "/v2/jobs")] == ["Idempotency-Key"]
    assert headers[("POST", "/v2/jobs/{ref}/trigger")] == ["Idempotency-Key"]
    trigger_body = operations[("POST", "/v2/jobs/{ref}/trigger")]["requestBody"]
    assert trigger_body["required"] is False
    overrides = doc["components"]["schemas"]["RunOverrides"]["properties"]
    assert set(overrides) == {"args", "env", "timeout_seconds", "instructions"}
    job_query = [p["name"] for p in operations[("GET", "/v2/jobs")]["parameters"]]
    assert {"enabled", "name", "trigger_type", "runner_type", "label"} <= set(job_query)
    run_props = doc["components"]["schemas"]["Run"]["properties"]
    assert {"stdout", "turn_count", "overrides", "exit_reason"} <= set(run_props)
    assert "openapi.json" in server.log


async def test_metrics_count_runs_and_requests_by_route_template(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server, server.client() as client:
            async with httpx.AsyncClient(base_url=server.url) as anonymous:
                assert (await anonymous.get("/metrics")).status_code == 401

            await client.post("/v2/jobs", json=echo_job("counted"))
            run = (await client.post("/v2/jobs/counted/trigger")).json()
            await final(client, run["id"])
            text = (await client.get("/metrics")).text
    assert 'termjobs_runs_started_total{runner="program"} 1.0' in text
    assert 'termjobs_runs_finished_total{runner="program",status="succeeded"} 1.0' in text
    assert 'termjobs_run_duration_seconds_count{runner="program"} 1.0' in text
    assert 'route="/v2/jobs/<ref>/trigger"' in text and run["id"] not in text and "counted" not in text
    for gauge in ("runs_queued", "runs_running", "actors_awake", "jobs", "stream_subscribers"):
        assert f"termjobs_{gauge} " in text
    assert "termjobs_jobs 1.0" in text
    assert "termjobs_storage_write_seconds_count" in text and "termjobs_storage_batch_size_bucket" in text
    assert "termjobs_fire_lag_seconds_bucket" in text and "termjobs_stream_lagged_total 0.0" in text


async def test_metrics_can_be_public(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            serve(tmp_path / "jobs.db", "--metrics-public") as server,
            httpx.AsyncClient(base_url=server.url) as anonymous,
        ):
            reply = await anonymous.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/plain")


async def test_readiness_fails_from_the_moment_a_shutdown_begins(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db", "--shutdown-drain", "3") as server:
            async with httpx.AsyncClient(base_url=server.url) as anonymous:
                ready = await anonymous.get("/readyz")
                server.process.send_signal(signal.SIGTERM)
                while (draining := await anonymous.get("/readyz")).status_code == 200:  # noqa: ASYNC110
                    await trio.sleep(0.02)  # polling another process
                alive = await anonymous.get("/healthz")
            assert await server.process.wait() == 0  # the one SIGTERM, after the drain
    assert ready.json() == {"status": "ready"}
    assert draining.status_code == 503
    assert draining.json() == {"status": "not_ready", "failing": ["shutting_down"]}
    assert alive.status_code == 200  # still serving during the drain


async def test_cors_preflights_and_headers_only_for_allowed_origins(tmp_path: Path) -> None:
    preflight = {"Origin": "https://ops.example.com", "Access-Control-Request-Method": "POST"}
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "a.db", "--cors-origin", "https://ops.example.com") as server:
            async with httpx.AsyncClient(base_url=server.url) as anonymous:
                allowed = await anonymous.options("/v2/jobs", headers=preflight)
                other = await anonymous.options(
                    "/v2/jobs", headers={**preflight, "Origin": "https://evil.test"}
                )
            async with server.client() as client:
                listed = await client.get("/v2/jobs", headers={"Origin": "https://ops.example.com"})
        async with serve(tmp_path / "b.db") as plain, plain.client() as client:
            none = await client.get("/v2/jobs", headers={"Origin": "https://ops.example.com"})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == "https://ops.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"]
    assert "access-control-allow-origin" not in other.headers
    assert listed.headers["access-control-allow-origin"] == "https://ops.example.com"
    assert "access-control-allow-origin" not in none.headers


async def test_json_logs_carry_job_and_run_ids(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db", "--log-format", "json") as server, server.client() as client:
            body = echo_job("logged", notify=[{"url": "http://127.0.0.1:1/nothing-listens"}])
            await client.post("/v2/jobs", json=body)
            run = (await client.post("/v2/jobs/logged/trigger")).json()
            while f'"run_id": "{run["id"]}"' not in server.log:  # noqa: ASYNC110
                await trio.sleep(0.1)  # polling another process's log
    lines = [json.loads(line) for line in server.log.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    failed = next(line for line in lines if line.get("run_id") == run["id"])
    assert failed["job_id"] == run["job_id"] and failed["level"] == "warning"


async def test_filters_combine_and_bad_values_name_themselves(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server, server.client() as client:
            await client.post("/v2/jobs", json=echo_job("data-a", labels={"team": "data", "tier": 1}))
            await client.post("/v2/jobs", json=echo_job("data-b", labels={"team": "data"}, enabled=False))
            await client.post("/v2/jobs", json=echo_job("ops", labels={"team": "ops"}))
            run = (await client.post("/v2/jobs/data-a/trigger")).json()
            await final(client, run["id"])

            async def names(query: str) -> list[str]:
                return [job["name"] for job in (await client.get(f"/v2/jobs?{query}")).json()["data"]]

            assert await names("label=team=data") == ["data-b", "data-a"]
            assert await names("label=team=data&label=tier=1") == ["data-a"]
            assert await names("label=team=data&enabled=true&runner_type=program") == ["data-a"]
            assert await names("name=DATA&limit=1") == ["data-b"]
            runs = await client.get(
                "/v2/runs?status=succeeded,failed&trigger=manual&created_after=2020-01-01T00:00:00Z"
            )
            assert [r["id"] for r in runs.json()["data"]] == [run["id"]]
            none = await client.get("/v2/runs?status=failed&status=skipped")
            assert none.json()["total"] == 0
            errors = {
                query: (await client.get(f"/v2/{query}")).json()["error"]["message"]
                for query in (
                    "jobs?label=team",
                    "jobs?runner_type=shell",
                    "runs?status=done",
                    "runs?created_before=x",
                )
            }
    assert errors == {
        "jobs?label=team": "label must look like key=value (got 'team')",
        "jobs?runner_type=shell": "runner_type must be one of: llm, program (got 'shell')",
        "runs?status=done": "status must be one of: queued, claimed, running, cancel_requested, "
        "succeeded, failed, timed_out, cancelled, skipped (got 'done')",
        "runs?created_before=x": "created_before must be an RFC 3339 timestamp with an offset, "
        "e.g. 2026-03-01T00:00:00Z (got 'x')",
    }


async def test_per_run_overrides_apply_to_that_run_only(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server, server.client() as client:
            await client.post("/v2/jobs", json=echo_job("report"))
            body = {"args": ["x", "y"], "env": {"REPORT_DAY": "2026-03-01"}}
            run = (await client.post("/v2/jobs/report/trigger", json=body)).json()
            plain = (await client.post("/v2/jobs/report/trigger")).json()
            sleep = {"command": 'sleep "$1"', "shell": True, "args": ["0"]}
            sleeper = echo_job("sleeper", runner_config=sleep)
            await client.post("/v2/jobs", json=sleeper)
            slow = await client.post("/v2/jobs/sleeper/trigger", json={"timeout_seconds": 1, "args": ["30"]})
            done = await final(client, run["id"])
            again = await final(client, plain["id"])
            timed = await final(client, slow.json()["id"])
            queued = (await client.get(f"/v2/runs/{run['id']}/events")).json()["data"][0]
            refused = {
                key: (await client.post("/v2/jobs/report/trigger", json=value)).json()["error"]["message"]
                for key, value in (
                    ("token", {"env": {"TERM_LLM_SERVE_TOKEN": "x"}}),
                    ("instructions", {"instructions": "do it"}),
                    ("unknown", {"argv": []}),
                    ("range", {"timeout_seconds": 0}),
                )
            }
    assert run["overrides"] == body and "overrides" not in plain
    assert queued["data"]["overrides"] == body
    assert done["stdout"] == "args=x y day=2026-03-01\n" and again["stdout"] == "args=a day=\n"
    assert timed["status"] == "timed_out" and timed["error"] == "run timed out after 1s (timeout_seconds)"
    assert refused == {
        "token": "env may not set TERM_LLM_SERVE_TOKEN (the server's own variable)",
        "instructions": "instructions can only be overridden for llm jobs",
        "unknown": "unknown override 'argv' (args, env, timeout_seconds, instructions)",
        "range": "timeout_seconds must be a whole number from 1 to 2592000 (got 0)",
    }


async def test_an_idempotency_key_makes_retries_return_the_first_answer(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server, server.client() as client:
            key = {"Idempotency-Key": "create-1"}
            created = await client.post("/v2/jobs", json=echo_job("once"), headers=key)
            again = await client.post("/v2/jobs", json=echo_job("once"), headers=key)
            other = await client.post("/v2/jobs", json=echo_job("different"), headers=key)
            replies: list[httpx.Response] = []

            async def trigger() -> None:
                replies.append(await client.post("/v2/jobs/once/trigger", headers={"Idempotency-Key": "t-1"}))

            async with trio.open_nursery() as nursery:
                for _ in range(10):
                    nursery.start_soon(trigger)
            await final(client, replies[0].json()["id"])
            later = await client.post("/v2/jobs/once/trigger", headers={"Idempotency-Key": "t-1"})
            runs = (await client.get("/v2/runs?job_id=once")).json()
    assert created.status_code == again.status_code == 201 and created.content == again.content
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 422 and "different request" in other.json()["error"]["message"]
    ok = [r for r in replies if r.status_code == 202]
    assert ok and all(r.content == ok[0].content for r in ok)
    assert all(r.status_code in (202, 409) for r in replies)
    assert runs["total"] == 1  # ten concurrent triggers with one key: one run
    assert later.status_code == 202 and later.content == ok[0].content  # even after it finished
    assert later.json()["status"] == "queued"
