"""``/v2/jobs`` routes, ``/healthz`` and the common HTTP rules, good and bad input."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest
from sqlalchemy.engine import URL

from termjobs.storage import JobView
from tests.helpers import cron_body, job_body
from tests.http.conftest import TOKEN, Api


async def test_healthz_is_open_and_shows_details_only_to_the_token_holder(api: Api) -> None:
    anonymous = await api.get("/healthz", auth=False)
    assert (anonymous.status, anonymous.body) == (200, {"status": "ok"})
    authed = await api.get("/healthz")
    assert authed.body["status"] == "ok" and authed.body["capabilities"] == ["jobs"]
    assert "version" in authed.body


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"x-api-key": "nope"}],
)
async def test_v2_routes_require_the_token(api: Api, headers: dict[str, str]) -> None:
    reply = await api.get("/v2/jobs", auth=False, headers=headers)
    assert reply.status == 401
    assert reply.body == {
        "error": {"message": "invalid authentication credentials", "type": "invalid_api_key"}
    }


@pytest.mark.parametrize("headers", [{"Authorization": f"bearer {TOKEN}"}, {"x-api-key": TOKEN}])
async def test_token_forms_accepted(api: Api, headers: dict[str, str]) -> None:
    assert (await api.get("/v2/jobs", auth=False, headers=headers)).status == 200


async def test_create_returns_201_with_defaults(api: Api) -> None:
    reply = await api.post("/v2/jobs", job_body("hello", runner_config={"command": "echo", "args": ["hi"]}))
    assert reply.status == 201
    job = reply.body
    assert job["id"].startswith("job_") and len(job["id"]) == 16
    assert {k: job[k] for k in ("name", "enabled", "concurrency_policy", "max_concurrent_runs")} == {
        "name": "hello",
        "enabled": True,
        "concurrency_policy": "forbid",
        "max_concurrent_runs": 1,
    }
    assert (job["timeout_seconds"], job["misfire_policy"], job["misfire_grace_seconds"]) == (300, "skip", 60)
    assert job["trigger_config"] == {} and job["created_at"] == job["updated_at"]
    for absent in ("next_run_at", "last_run", "labels", "retry_policy", "schedule_timezone"):
        assert absent not in job


async def test_create_the_seed_cron_example(api: Api) -> None:
    body = {
        "name": "db-backup",
        "runner_type": "program",
        "runner_config": {"command": "/usr/local/bin/backup.sh", "args": ["--full"], "env": ["MODE=prod"]},
        "trigger_type": "cron",
        "trigger_config": {"expression": "30 2 * * 1-5", "timezone": "Europe/Berlin"},
        "timeout_seconds": 1800,
        "retry_policy": {"max_attempts": 3, "backoff": "exponential", "initial_delay": "30s"},
    }
    job = await api.create(body)
    assert job["runner_config"] == body["runner_config"] and job["retry_policy"] == body["retry_policy"]
    assert job["next_run_at"] == "2026-03-02T01:30:00Z"  # Monday 02:30 CET


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"runner_type": "shell"}, "runner_type must be one of: llm, program (got 'shell')"),
        ({"trigger_type": "hourly"}, "trigger_type must be one of: manual, once, cron (got 'hourly')"),
        ({"timeout_seconds": "10"}, "timeout_seconds must be a whole number (got string)"),
        ({"timeout_seconds": -1}, "timeout_seconds must be a whole number from 1 to 2592000 (got -1)"),
        (
            {"trigger_type": "cron", "trigger_config": {"expression": "61 * * * *"}},
            "trigger_config.expression: minute: value 61 out of bounds (0-59)",
        ),
        (
            {
                "trigger_type": "cron",
                "trigger_config": {"expression": "* * * * *", "timezone": "Europe/Paris2"},
            },
            "trigger_config.timezone: unknown time zone 'Europe/Paris2'",
        ),
        (
            {"trigger_type": "once", "trigger_config": {"run_at": "2026-02-22 00:00"}},
            "trigger_config.run_at must be an RFC 3339 timestamp with an offset",
        ),
        ({"misfire_policy": "later"}, "misfire_policy must be one of: skip, run"),
        (
            {"concurrency_policy": "parallel"},
            "concurrency_policy must be one of: forbid, allow, replace, queue",
        ),
        ({"nmae": "typo"}, "unknown field 'nmae'"),
    ],
)
async def test_create_rejects_bad_fields_with_400(api: Api, fields: dict[str, Any], message: str) -> None:
    reply = await api.post("/v2/jobs", job_body("bad", **fields))
    assert reply.status == 400, reply.body
    assert message in reply.error and reply.body["error"]["type"] == "invalid_request_error"
    assert (await api.get("/v2/jobs")).body["total"] == 0  # nothing stored


@pytest.mark.parametrize(
    ("raw", "headers", "status", "message"),
    [
        (b"{}", {}, 415, "Content-Type must be application/json"),
        (b"{}", {"Content-Type": "text/yaml"}, 415, "Content-Type must be application/json"),
        (b"", {"Content-Type": "application/json"}, 400, "request body is empty"),
        (b'{"name":', {"Content-Type": "application/json"}, 400, "request body is not valid JSON"),
        (b"[]", {"Content-Type": "application/json; charset=utf-8"}, 400, "must be a JSON object, not array"),
    ],
)
async def test_create_body_errors(
    api: Api, raw: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    reply = await api.post("/v2/jobs", raw=raw, headers=headers)
    assert reply.status == status and message in reply.error


async def test_oversized_bodies_are_refused(api: Api) -> None:
    big = b'{"name":"' + b"x" * (11 * 1024 * 1024) + b'"}'
    reply = await api.post("/v2/jobs", raw=big, headers={"Content-Type": "application/json"})
    assert reply.status == 413 and "larger than 10 MiB" in reply.error


async def test_duplicate_names_are_409(api: Api) -> None:
    await api.create(job_body("same"))
    reply = await api.post("/v2/jobs", job_body("same"))
    assert reply.status == 409 and reply.error == "a job named 'same' already exists; choose another name"


async def test_list_jobs_paging_effective_limit_and_filters(api: Api) -> None:
    for i in range(3):
        await api.create(job_body(f"manual-{i}"))
    await api.create(cron_body("nightly", "0 3 * * *", enabled=False))
    reply = await api.get("/v2/jobs?limit=2&offset=1")
    assert reply.status == 200
    assert [j["name"] for j in reply.body["data"]] == ["manual-2", "manual-1"]
    assert {k: reply.body[k] for k in ("object", "total", "offset", "limit")} == {
        "object": "list",
        "total": 4,
        "offset": 1,
        "limit": 2,
    }
    assert (await api.get("/v2/jobs?limit=500")).body["limit"] == 200  # the effective limit
    assert (await api.get("/v2/jobs?limit=0")).body["limit"] == 50
    filtered = await api.get("/v2/jobs?trigger_type=cron&enabled=false&name=NIGHT")
    assert [j["name"] for j in filtered.body["data"]] == ["nightly"] and filtered.body["total"] == 1
    for query, message in [
        ("limit=-1", "limit must be a non-negative integer"),
        ("offset=abc", "offset must be a non-negative integer"),
        ("enabled=maybe", "enabled must be true or false"),
        ("trigger_type=weekly", "trigger_type must be one of"),
        ("limit=%C2%B2", "limit must be a non-negative integer"),
        ("offset=99999999999999999999", "offset is too large"),
    ]:
        bad = await api.get(f"/v2/jobs?{query}")
        assert bad.status == 400 and message in bad.error


async def test_list_jobs_id_prefix_filter(api: Api) -> None:
    first = await api.create(job_body("first"))
    await api.create(job_body("second"))

    async def matches(prefix: str) -> tuple[list[str], int]:
        reply = await api.get(f"/v2/jobs?id_prefix={prefix}")
        assert reply.status == 200, reply.body
        return [job["name"] for job in reply.body["data"]], reply.body["total"]

    assert await matches(first["id"]) == (["first"], 1)
    assert await matches(first["id"][:-1] + "%25") == ([], 0)  # a literal "%", not a wildcard
    last = first["id"][-1]
    assert await matches(first["id"][:-1] + ("B" if last == "A" else "A")) == ([], 0)
    assert (await matches("job_"))[1] == 2
    assert await matches("  ") == (["second", "first"], 2)  # blank: no filter


async def test_get_by_id_or_name_and_404(api: Api) -> None:
    job = await api.create(job_body("lookup"))
    assert (await api.get(f"/v2/jobs/{job['id']}")).body == job
    assert (await api.get("/v2/jobs/lookup")).body == job
    assert (await api.get("/v2/jobs/lookup/")).body == job  # trailing slash
    missing = await api.get("/v2/jobs/nothing")
    assert missing.status == 404 and missing.body == {
        "error": {"message": "job not found", "type": "invalid_request_error"}
    }


async def test_patch_merges_clears_and_validates(api: Api) -> None:
    job = await api.create(job_body("p", labels={"team": "a"}, schedule_timezone="UTC"))
    reply = await api.call("PATCH", "/v2/jobs/p", {"name": "renamed", "labels": None, "timeout_seconds": 30})
    assert reply.status == 200
    patched = reply.body
    assert patched["name"] == "renamed" and patched["timeout_seconds"] == 30 and patched["enabled"] is True
    assert "labels" not in patched and patched["schedule_timezone"] == "UTC"
    assert patched["created_at"] == job["created_at"] and patched["updated_at"] > job["updated_at"]
    bad = await api.call("PATCH", "/v2/jobs/renamed", {"trigger_type": "cron"})
    assert bad.status == 400 and bad.error == "trigger_config.expression is required for cron trigger"
    assert (await api.call("PATCH", "/v2/jobs/nope", {"name": "x"})).status == 404
    wrong_type = await api.call(
        "PATCH", "/v2/jobs/renamed", raw=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert wrong_type.status == 415
    await api.create(job_body("other"))
    clash = await api.call("PATCH", "/v2/jobs/renamed", {"name": "other"})
    assert clash.status == 409 and "already exists" in clash.error


async def test_pause_and_resume(api: Api) -> None:
    await api.create(cron_body("c", "0 * * * *"))
    paused = await api.post("/v2/jobs/c/pause")
    assert paused.status == 200 and paused.body["enabled"] is False and "next_run_at" not in paused.body
    resumed = await api.post("/v2/jobs/c/resume", raw=b"ignored body", headers={"Content-Type": "text/plain"})
    assert resumed.status == 200 and resumed.body["enabled"] is True and "next_run_at" in resumed.body
    assert (await api.post("/v2/jobs/missing/pause")).status == 404


async def test_trigger_returns_202_and_refuses_when_disabled_or_busy(api: Api) -> None:
    await api.create(job_body("busy", runner_config={"command": "sleep", "args": ["30"]}))
    first = await api.post("/v2/jobs/busy/trigger")
    assert first.status == 202 and first.body["status"] == "queued" and first.body["trigger"] == "manual"
    second = await api.post("/v2/jobs/busy/trigger")
    assert second.status == 409
    assert second.error == "job already has an active run (concurrency_policy forbid)"
    await api.post(f"/v2/runs/{first.body['id']}/cancel")
    await api.create(job_body("off", enabled=False))
    disabled = await api.post("/v2/jobs/off/trigger")
    assert disabled.status == 409 and "job is disabled" in disabled.error
    assert (await api.post("/v2/jobs/ghost/trigger")).status == 404


async def test_delete(api: Api) -> None:
    job = await api.create(job_body("long", runner_config={"command": "sleep", "args": ["30"]}))
    run = (await api.post("/v2/jobs/long/trigger")).body
    refused = await api.call("DELETE", "/v2/jobs/long")
    assert refused.status == 409 and "cancel_active=true" in refused.error
    bad = await api.call("DELETE", "/v2/jobs/long?cancel_active=perhaps")
    assert bad.status == 400
    done = await api.call("DELETE", "/v2/jobs/long?cancel_active=true")
    assert done.status == 200 and done.body == {"id": job["id"], "deleted": True}
    assert (await api.get(f"/v2/runs/{run['id']}")).status == 404
    assert (await api.call("DELETE", "/v2/jobs/long")).status == 404


async def test_unknown_paths_and_methods_get_json_errors(api: Api) -> None:
    missing = await api.get("/v2/nothing")
    assert missing.status == 404 and "no such endpoint: GET /v2/nothing" in missing.error
    assert (await api.get("/v2/jobs/a/b/c")).status == 404
    wrong = await api.call("PUT", "/v2/jobs")
    assert (
        wrong.status == 405 and wrong.error == "method not allowed" and wrong.headers["allow"] == "GET, POST"
    )
    item = await api.call("POST", "/v2/jobs/x")
    assert item.status == 405 and item.headers["allow"] == "DELETE, GET, PATCH"


async def test_a_job_is_answered_again_only_while_the_database_is_unchanged(
    api: Api, sqlite_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /v2/jobs/{id} keeps its rendered answer between writes: a change to the job,
    a new run, or a write by another process is seen by the next request."""
    storage = api.services.storage
    reads = 0
    job_view = storage.job_view

    async def counted(ref: str) -> JobView | None:
        nonlocal reads
        reads += 1
        return await job_view(ref)

    monkeypatch.setattr(storage, "job_view", counted)
    job = await api.create(job_body("kept", runner_config={"command": "true"}))
    first = (await api.get(f"/v2/jobs/{job['id']}")).body
    again = await api.get(f"/v2/jobs/{job['id']}")
    assert again.body == first and reads == 1  # nothing written: answered again
    assert (await api.get("/v2/jobs/kept")).body == first and reads == 2  # by name: its own answer

    assert (await api.call("PATCH", f"/v2/jobs/{job['id']}", {"timeout_seconds": 30})).status == 200
    assert (await api.get(f"/v2/jobs/{job['id']}")).body["timeout_seconds"] == 30
    run = (await api.post(f"/v2/jobs/{job['id']}/trigger")).body["id"]
    await api.wait_final(run)
    shown = (await api.get(f"/v2/jobs/{job['id']}")).body
    assert shown["last_run"]["id"] == run and shown["last_run"]["status"] == "succeeded"

    database = sqlite_url.database
    assert database is not None
    with contextlib.closing(sqlite3.connect(database)) as other:  # behind the server's back
        other.execute("UPDATE jobs SET timeout_seconds = 45 WHERE id = ?", (job["id"],))
        other.commit()
    assert (await api.get(f"/v2/jobs/{job['id']}")).body["timeout_seconds"] == 45

    for _ in range(2):  # an unknown job is not kept: 404 every time
        assert (await api.get("/v2/jobs/nope")).status == 404
