"""Completion webhooks against a receiver on loopback (real server, real time, bounded)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.e2e.receiver import Answer, receiver
from tests.e2e.server import serve

LIMIT_S = 60
KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


def failing_job(name: str, url: str, **target: Any) -> dict[str, Any]:
    return {
        "name": name,
        "runner_type": "program",
        "runner_config": {"command": "echo output; echo 'it broke' >&2; exit 3", "shell": True},
        "trigger_type": "manual",
        "notify": [{"url": url, **target}],
    }


async def final(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    while True:
        run: dict[str, Any] = (await client.get(f"/v2/runs/{run_id}")).json()
        if run["status"] in ("succeeded", "failed", "timed_out", "cancelled", "skipped"):
            return run
        await trio.sleep(0.05)


async def event(client: httpx.AsyncClient, run_id: str, event_type: str) -> dict[str, Any]:
    while True:
        for item in (await client.get(f"/v2/runs/{run_id}/events")).json()["data"]:
            if item["event_type"] == event_type:
                return dict(item)
        await trio.sleep(0.05)


def expected_signature(message_id: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(KEY, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


async def test_a_failed_run_is_reported_once_signed_and_recorded(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with receiver() as hook, serve(tmp_path / "jobs.db") as server, server.client() as client:
            job = (await client.post("/v2/jobs", json=failing_job("fails", hook.url, secret=SECRET))).json()
            assert job["notify"] == [{"url": hook.url, "secret": "***"}]  # secrets are write-only
            run = (await client.post("/v2/jobs/fails/trigger")).json()
            assert (await final(client, run["id"]))["status"] == "failed"
            (got,) = await hook.wait_for(1)
            sent = await event(client, run["id"], "notify_sent")
    assert got.method == "POST" and got.path == "/hook"
    assert got.headers["webhook-id"] == f"{run['id']}.1"
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 30
    assert got.headers["webhook-signature"] == expected_signature(
        got.headers["webhook-id"], got.headers["webhook-timestamp"], got.body
    )
    body = json.loads(got.body)
    assert body["type"] == "run.finished" and body["job"]["notify"][0]["secret"] == "***"
    assert body["run"]["id"] == run["id"] and body["run"]["status"] == "failed"
    assert "stdout" not in body["run"] and body["run"]["excerpt"] == "program exited with code 3"
    assert sent["data"]["status_code"] == 200 and sent["data"]["attempts"] == 1
    assert sent["data"]["webhook_id"] == f"{run['id']}.1"


async def test_retries_honour_retry_after_then_give_up_with_an_event(tmp_path: Path) -> None:
    script = (Answer(503, {"retry-after": "2"}), Answer(500), Answer(500))
    with trio.fail_after(LIMIT_S):
        async with (
            receiver(*script) as hook,
            serve(tmp_path / "jobs.db") as server,
            server.client() as client,
        ):
            await client.post("/v2/jobs", json=failing_job("flaky-hook", hook.url, on=["failed"]))
            ok = failing_job("quiet", hook.url, on=["failed"])
            ok["runner_config"] = {"command": "true"}
            await client.post("/v2/jobs", json=ok)
            quiet = (await client.post("/v2/jobs/quiet/trigger")).json()
            run = (await client.post("/v2/jobs/flaky-hook/trigger")).json()
            failed = await event(client, run["id"], "notify_failed")
            assert (await final(client, quiet["id"]))["status"] == "succeeded"
    first, second, third = hook.received
    assert second.at - first.at >= 1.9  # Retry-After: 2
    assert third.at - second.at >= 1.9  # then the second delay, 2 s
    assert failed["data"]["attempts"] == 3 and failed["data"]["error"] == "HTTP 500"
    assert failed["message"] == f"webhook to {hook.url} failed: HTTP 500"
    assert len(hook.received) == 3  # the succeeded run of "quiet" did not want a webhook


async def test_a_webhook_cut_off_by_a_crash_is_delivered_after_the_restart(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with trio.fail_after(LIMIT_S):
        async with receiver(Answer(200, delay=30)) as hook:
            async with serve(db) as server, server.client() as client:
                await client.post("/v2/jobs", json=failing_job("crash", hook.url))
                run = (await client.post("/v2/jobs/crash/trigger")).json()
                await hook.wait_for(1)  # the first delivery is in flight...
                await server.stop(signal.SIGKILL)  # ...when the server dies
            async with serve(db) as server, server.client() as client:
                await hook.wait_for(2)
                sent = await event(client, run["id"], "notify_sent")
                events = (await client.get(f"/v2/runs/{run['id']}/events")).json()["data"]
    first, again = hook.received[:2]
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == f"{run['id']}.1"
    assert sent["data"]["status_code"] == 200
    assert [e["event_type"] for e in events].count("notify_sent") == 1


async def test_a_run_a_crash_cut_short_is_reported_as_soon_as_the_restart_ends_it(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    with trio.fail_after(LIMIT_S):
        async with receiver(Answer(200)) as hook:
            job = {**failing_job("cut", hook.url), "runner_config": {"command": "sleep", "args": ["60"]}}
            async with serve(db) as server, server.client() as client:
                await client.post("/v2/jobs", json=job)
                run = (await client.post("/v2/jobs/cut/trigger")).json()
                await event(client, run["id"], "running")
                await server.stop(signal.SIGKILL)
            async with serve(db) as server, server.client() as client:
                # Ended by the restart's recovery; its webhook goes out at once, not
                # with the notifier's next look at the outbox a minute later.
                with trio.fail_after(15):
                    await hook.wait_for(1)
                ended = await final(client, run["id"])
    assert (ended["status"], ended["exit_reason"]) == ("failed", "worker_lost")
    assert json.loads(hook.received[0].body)["run"]["id"] == run["id"]


async def test_the_server_default_target_serves_jobs_without_their_own(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with receiver() as default, receiver() as own:
            extra = ("--notify-url", default.url, "--notify-secret", SECRET)
            async with serve(tmp_path / "jobs.db", *extra) as server, server.client() as client:
                plain = failing_job("plain", own.url)
                del plain["notify"]
                await client.post("/v2/jobs", json=plain)
                await client.post("/v2/jobs", json=failing_job("mine", own.url))
                for name in ("plain", "mine"):
                    run = (await client.post(f"/v2/jobs/{name}/trigger")).json()
                    await event(client, run["id"], "notify_sent")
    (to_default,) = default.received
    (to_own,) = own.received
    assert json.loads(to_default.body)["job"]["name"] == "plain"
    assert "webhook-signature" in to_default.headers
    assert json.loads(to_own.body)["job"]["name"] == "mine" and "webhook-signature" not in to_own.headers


async def test_a_patch_that_sends_the_mask_back_keeps_the_secret(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with receiver() as hook, serve(tmp_path / "jobs.db") as server, server.client() as client:
            job = (await client.post("/v2/jobs", json=failing_job("keep", hook.url, secret=SECRET))).json()
            edited = {"notify": job["notify"], "timeout_seconds": 60}  # as a GET showed it
            assert (await client.patch("/v2/jobs/keep", json=edited)).status_code == 200
            run = (await client.post("/v2/jobs/keep/trigger")).json()
            (got,) = await hook.wait_for(1)
            bad = await client.patch("/v2/jobs/keep", json={"notify": [{"url": "ftp://x"}]})
    assert got.headers["webhook-signature"] == expected_signature(
        got.headers["webhook-id"], got.headers["webhook-timestamp"], got.body
    )
    assert json.loads(got.body)["run"]["id"] == run["id"]
    assert (
        bad.status_code == 400
        and bad.json()["error"]["message"] == "notify[0].url must be an http:// or https:// URL"
    )
