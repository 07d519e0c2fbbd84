"""``/v2/runs`` routes over real program runs."""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

import pytest
from sqlalchemy.engine import URL

from termjobs.model import Run
from termjobs.storage import Page
from tests.helpers import alive, job_body
from tests.http.conftest import Api


async def test_a_triggered_program_run_succeeds_with_its_timeline(api: Api) -> None:
    job = await api.create(job_body("echo", runner_config={"command": "echo", "args": ["hello-jobs"]}))
    run = (await api.post(f"/v2/jobs/{job['id']}/trigger")).body
    final = await api.wait_final(run["id"])
    assert final["status"] == "succeeded" and final["exit_code"] == 0
    assert final["stdout"] == "hello-jobs\n" and final["exit_reason"] == "natural_completion"
    assert final["worker_id"].startswith("worker_") and final["started_at"] <= final["finished_at"]
    events = (await api.get(f"/v2/runs/{run['id']}/events")).body
    types = [e["event_type"] for e in events["data"]]
    assert types == ["queued", "claimed", "running", "output", "succeeded"]
    assert events["data"][3]["data"] == {"stream": "stdout", "text": "hello-jobs\n"}
    assert {k: events[k] for k in ("object", "total", "offset", "limit", "since_id")} == {
        "object": "list",
        "total": 5,
        "offset": 0,
        "limit": 200,
        "since_id": 0,
    }
    listed = (await api.get(f"/v2/jobs/{job['id']}")).body
    assert listed["last_run"]["id"] == run["id"] and "stdout" not in listed["last_run"]


async def test_failed_run_reports_exit_code_and_stderr(api: Api) -> None:
    await api.create(
        job_body("fail", runner_config={"command": "sh", "args": ["-c", "echo bad >&2; exit 4"]})
    )
    run = (await api.post("/v2/jobs/fail/trigger")).body
    final = await api.wait_final(run["id"])
    assert (final["status"], final["exit_code"], final["error"], final["exit_reason"]) == (
        "failed",
        4,
        "program exited with code 4",
        "exception",
    )
    assert final["stderr"] == "bad\n"


async def test_run_list_summary_filters_and_paging(api: Api) -> None:
    a = await api.create(
        job_body(
            "a",
            runner_config={"command": "echo", "args": ["A"]},
            concurrency_policy="allow",
            max_concurrent_runs=5,
        )
    )
    await api.create(job_body("b", runner_config={"command": "false"}))
    ids = [(await api.post("/v2/jobs/a/trigger")).body["id"] for _ in range(3)]
    other = (await api.post("/v2/jobs/b/trigger")).body["id"]
    for run_id in [*ids, other]:
        await api.wait_final(run_id)
    full = (await api.get("/v2/runs")).body
    assert [r["id"] for r in full["data"]] == [other, *reversed(ids)]
    assert full["data"][1]["stdout"] == "A\n"
    summary = (await api.get("/v2/runs?summary=1&limit=2")).body
    assert summary["limit"] == 2 and summary["total"] == 4 and len(summary["data"]) == 2
    assert all("stdout" not in r for r in summary["data"])
    by_job = (await api.get(f"/v2/runs?job_id={a['id']}&summary=true")).body
    assert by_job["total"] == 3
    by_name = (await api.get("/v2/runs?job_id=a")).body
    assert by_name["total"] == 3
    failed = (await api.get("/v2/runs?status=failed")).body
    assert [r["id"] for r in failed["data"]] == [other]
    assert (await api.get("/v2/runs?status=exploded")).status == 400
    assert (await api.get("/v2/runs?limit=x")).status == 400


async def test_run_and_event_lookups_404(api: Api) -> None:
    for path in ("/v2/runs/run_missing", "/v2/runs/run_missing/events"):
        reply = await api.get(path)
        assert reply.status == 404 and reply.body == {
            "error": {"message": "run not found", "type": "invalid_request_error"}
        }
    assert (await api.post("/v2/runs/run_missing/cancel")).status == 404


async def test_events_since_id(api: Api) -> None:
    await api.create(job_body("ev", runner_config={"command": "true"}))
    run = (await api.post("/v2/jobs/ev/trigger")).body
    await api.wait_final(run["id"])
    every = (await api.get(f"/v2/runs/{run['id']}/events")).body["data"]
    after = (await api.get(f"/v2/runs/{run['id']}/events?since_id={every[1]['id']}&limit=1")).body
    assert [e["id"] for e in after["data"]] == [every[2]["id"]]
    assert after["total"] == len(every) - 2 and after["since_id"] == every[1]["id"]
    assert (await api.get(f"/v2/runs/{run['id']}/events?since_id=-3")).status == 400


async def test_cancel_a_running_program(api: Api) -> None:
    await api.create(job_body("sleepy", runner_config={"command": "sleep", "args": ["60"]}))
    run = (await api.post("/v2/jobs/sleepy/trigger")).body
    await api.wait_event(run["id"], "running")
    reply = await api.post(f"/v2/runs/{run['id']}/cancel")
    assert reply.status == 200 and reply.body["status"] == "cancel_requested"
    final = await api.wait_final(run["id"])
    assert (final["status"], final["exit_reason"], final["exit_code"]) == ("cancelled", "cancelled", 143)
    again = await api.post(f"/v2/runs/{run['id']}/cancel")
    assert again.status == 200 and again.body["status"] == "cancelled"


async def test_timed_out_program(api: Api) -> None:
    await api.create(job_body("slow", runner_config={"command": "sleep", "args": ["60"]}, timeout_seconds=1))
    run = (await api.post("/v2/jobs/slow/trigger")).body
    final = await api.wait_final(run["id"])
    assert final["status"] == "timed_out" and final["exit_reason"] == "timeout"
    assert final["error"] == "run timed out after 1s (timeout_seconds)"


async def test_replace_kills_the_old_run_process_group(api: Api) -> None:
    script = "sleep 1000 & echo $!; wait"
    body = job_body("rep", runner_config={"command": script, "shell": True}, concurrency_policy="replace")
    await api.create(body)
    old = (await api.post("/v2/jobs/rep/trigger")).body
    await api.wait_event(old["id"], "output")
    grandchild = int((await api.get(f"/v2/runs/{old['id']}/events")).body["data"][3]["data"]["text"])
    assert alive(grandchild)
    new = await api.post("/v2/jobs/rep/trigger")
    assert new.status == 202
    replaced = await api.wait_final(old["id"])
    assert replaced["status"] == "cancelled" and replaced["exit_code"] == 143
    assert replaced["error"] == "cancelled: replaced by a newer run (concurrency_policy replace)"
    assert not alive(grandchild)
    await api.wait_event(new.body["id"], "running")
    await api.post(f"/v2/runs/{new.body['id']}/cancel")


async def test_a_listing_is_answered_again_only_while_the_database_is_unchanged(
    api: Api, sqlite_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Listings are kept rendered between writes; a write by this server or by any
    other process is seen by the next request, never an answer from before it."""
    storage = api.services.storage
    reads = 0
    runs_page = storage.runs_page

    async def counted(**kw: Any) -> Page[Run]:
        nonlocal reads
        reads += 1
        return await runs_page(**kw)

    monkeypatch.setattr(storage, "runs_page", counted)
    await api.create(job_body("cached", runner_config={"command": "true"}))
    first = (await api.post("/v2/jobs/cached/trigger")).body["id"]
    await api.wait_final(first)
    listed = (await api.get("/v2/runs?summary=1")).body
    assert [run["id"] for run in listed["data"]] == [first] and reads == 1
    again = await api.get("/v2/runs?summary=1")
    assert again.body == listed and reads == 1  # nothing written: answered again
    assert (await api.get("/v2/runs?summary=1&limit=1")).body["data"] == listed["data"] and reads == 2

    second = (await api.post("/v2/jobs/cached/trigger")).body["id"]  # this server writes
    await api.wait_final(second)
    assert [run["id"] for run in (await api.get("/v2/runs?summary=1")).body["data"]] == [second, first]

    # Another process changes the database behind the server's back.
    database = sqlite_url.database
    assert database is not None
    with contextlib.closing(sqlite3.connect(database)) as other:
        other.execute("UPDATE runs SET error = 'edited elsewhere' WHERE id = ?", (first,))
        other.commit()
    edited = (await api.get("/v2/runs?summary=1")).body["data"]
    assert [run.get("error") for run in edited] == [None, "edited elsewhere"]
