"""Several real servers on one PostgreSQL database (real time, bounded; a short lease).

What an operator of a cluster relies on: a job created anywhere is usable everywhere,
``forbid`` holds across servers, a dead or stalled server's jobs are taken over without
a fire lost or doubled, a joining server takes a share, and a live stream on any server
shows every server's runs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio_websocket

from termjobs.model import format_ts
from termjobs.testing import ServerProcess, free_port, postgres_schema, serve_process, server_argv
from tests.conftest import POSTGRES_ENV, POSTGRES_SKIP

TOKEN = "cluster-token"
LEASE_S = 3.0
LIMIT_S = 90

pytestmark = pytest.mark.postgres


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh schema shared by every server of one test."""
    raw = os.environ.get(POSTGRES_ENV)
    if not raw:
        pytest.skip(POSTGRES_SKIP)
    with postgres_schema(raw) as url:
        yield url.render_as_string(hide_password=False)


@asynccontextmanager
async def server(db: str, *extra: str, own_host: bool = False) -> AsyncIterator[ServerProcess]:
    """A server of the cluster; ``own_host``: as if on a host of its own (its death is
    then noticed by its lease alone, not by its pid)."""
    env = {"TERMJOBS_CLUSTER_NAMESPACE": f"host-{secrets.token_hex(4)}"} if own_host else {}
    async with serve_process(
        "--db", db, "--lease-seconds", str(LEASE_S), *extra, token=TOKEN, teardown=signal.SIGKILL, env=env
    ) as started:
        yield started


def job(name: str, command: str = "echo hello", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "runner_type": "program",
        "runner_config": {"command": command, "shell": True},
        "trigger_type": "manual",
        **fields,
    }


def once_at(when: dt.datetime) -> dict[str, Any]:
    return {"trigger_type": "once", "trigger_config": {"run_at": format_ts(when)}}


async def final(client: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    """The run once it has a final status (polled: the run may live on another server)."""
    while True:
        run: dict[str, Any] = (await client.get(f"/v2/runs/{run_id}")).json()
        if run["status"] in ("succeeded", "failed", "timed_out", "cancelled", "skipped"):
            return run
        await trio.sleep(0.1)


async def runs_of(client: httpx.AsyncClient, job_ref: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = (await client.get(f"/v2/runs?job_id={job_ref}&limit=200")).json()["data"]
    return runs


async def cluster(client: httpx.AsyncClient) -> dict[str, Any]:
    body: dict[str, Any] = (await client.get("/v2/cluster")).json()
    return body


async def wait_until(check: Any, *, every: float = 0.2) -> Any:
    """Poll ``check()`` (another process changes state) until it returns something true."""
    while not (result := await check()):  # noqa: ASYNC110
        await trio.sleep(every)  # polling other processes
    return result


async def owner_of(client: httpx.AsyncClient) -> str:
    """The id of the server that owns the only job (the one with jobs_owned 1)."""

    async def owner() -> str | None:
        servers = (await cluster(client))["servers"]
        owning = [s["id"] for s in servers if s["alive"] and s["jobs_owned"] == 1]
        return owning[0] if len(owning) == 1 else None

    found: str = await wait_until(owner)
    return found


async def test_a_job_created_on_one_server_is_decided_on_through_any_other(database: str) -> None:
    with trio.fail_after(LIMIT_S):
        async with server(database) as a, server(database) as b, a.client() as ca, b.client() as cb:
            created = (await ca.post("/v2/jobs", json=job("shared"))).json()
            run = await cb.post("/v2/jobs/shared/trigger", json={"env": {"FROM": "b"}})
            assert run.status_code == 202, run.text
            assert run.json()["status"] == "queued" and run.json()["overrides"] == {"env": {"FROM": "b"}}
            done = await final(ca, run.json()["id"])
            paused = await cb.post("/v2/jobs/shared/pause")
            refused = await ca.post("/v2/jobs/shared/trigger")
            resumed = await ca.post(f"/v2/jobs/{created['id']}/resume")
            view = await cluster(cb)
            deleted = await cb.delete("/v2/jobs/shared")
            gone = await ca.post("/v2/jobs/shared/trigger")
    assert done["status"] == "succeeded" and done["stdout"] == "hello\n"
    assert paused.json()["enabled"] is False and resumed.json()["enabled"] is True
    assert refused.status_code == 409 and "disabled" in refused.json()["error"]["message"]
    assert view["mode"] == "cluster" and view["this_server"] in {s["id"] for s in view["servers"]}
    assert [s["alive"] for s in view["servers"]] == [True, True]
    assert sum(s["jobs_owned"] for s in view["servers"]) == 1
    assert deleted.status_code == 200 and gone.status_code == 404


async def test_forbid_holds_across_servers(database: str) -> None:
    with trio.fail_after(LIMIT_S):
        async with server(database) as a, server(database) as b, a.client() as ca, b.client() as cb:
            await ca.post("/v2/jobs", json=job("single", "sleep 30", concurrency_policy="forbid"))
            answers: list[int] = []

            async def trigger(client: httpx.AsyncClient) -> None:
                answers.append((await client.post("/v2/jobs/single/trigger")).status_code)

            async with trio.open_nursery() as nursery:
                for client in (ca, cb) * 10:
                    nursery.start_soon(trigger, client)
            active = [r for r in await runs_of(cb, "single") if r["status"] not in ("cancelled", "skipped")]
            await ca.delete("/v2/jobs/single?cancel_active=true")
    assert sorted(answers) == [202] + [409] * 19
    assert len(active) == 1


@pytest.mark.parametrize("hosts", ["one host", "two hosts"])
async def test_a_killed_servers_jobs_fire_on_another_and_its_runs_end_lost(database: str, hosts: str) -> None:
    apart = hosts == "two hosts"  # then only the lease tells the survivor
    with trio.fail_after(LIMIT_S):
        async with (
            server(database, own_host=apart) as a,
            server(database, own_host=apart) as b,
            a.client() as ca,
            b.client() as cb,
        ):
            soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LEASE_S * 3)
            for i in range(8):
                await ca.post("/v2/jobs", json=job(f"once-{i}", **once_at(soon)))
            await ca.post("/v2/jobs", json=job("long", "sleep 60"))
            long_run = (await cb.post("/v2/jobs/long/trigger")).json()
            running = await wait_until(lambda: _status_is(cb, long_run["id"], "running"))
            a_id = (await cluster(ca))["this_server"]
            victim, survivor_client = (a, cb) if running["worker_id"] == a_id else (b, ca)
            survivor_id = (await cluster(survivor_client))["this_server"]
            victim.process.kill()  # SIGKILL: no goodbye, its lease runs out
            killed_at = trio.current_time()
            lost = await final(survivor_client, long_run["id"])
            lost_after = trio.current_time() - killed_at
            fired = [
                await wait_until(lambda i=i: _one_final_run(survivor_client, f"once-{i}")) for i in range(8)
            ]
            await trio.sleep(LEASE_S)  # anything doubled would show by now
            counts = [len(await runs_of(survivor_client, f"once-{i}")) for i in range(8)]
    assert lost["status"] == "failed" and lost["exit_reason"] == "worker_lost"
    # Within a lease plus a heartbeat (and polling); on one host, as soon as the next round
    # finds the dead server's process gone.
    assert lost_after < (LEASE_S * 4 / 3 + 2 if apart else LEASE_S / 3 + 2), lost_after
    assert all(run["status"] == "succeeded" for run in fired)
    assert counts == [1] * 8  # every once job fired exactly once
    assert any(run["worker_id"] == survivor_id for run in fired)


async def _status_is(client: httpx.AsyncClient, run_id: str, status: str) -> dict[str, Any] | None:
    run: dict[str, Any] = (await client.get(f"/v2/runs/{run_id}")).json()
    return run if run["status"] == status else None


async def _one_final_run(client: httpx.AsyncClient, job_ref: str) -> dict[str, Any] | None:
    runs = await runs_of(client, job_ref)
    if runs and runs[0]["status"] in ("succeeded", "failed", "skipped"):
        return runs[0]
    return None


async def test_a_stalled_server_records_nothing_once_its_lease_is_gone(database: str) -> None:
    with trio.fail_after(LIMIT_S):
        async with server(database) as a, server(database) as b, a.client() as ca, b.client() as cb:
            soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=LEASE_S * 2)
            await ca.post("/v2/jobs", json=job("due-while-stalled", **once_at(soon)))
            owner = await owner_of(ca)
            ids = {(await cluster(ca))["this_server"]: a, (await cluster(cb))["this_server"]: b}
            stalled = ids[owner]
            other_id = next(worker for worker in ids if worker != owner)
            other_client = cb if stalled is a else ca
            stalled.process.send_signal(signal.SIGSTOP)
            try:
                fired = await wait_until(lambda: _one_final_run(other_client, "due-while-stalled"))
                await trio.sleep(LEASE_S)
            finally:
                stalled.process.send_signal(signal.SIGCONT)
            # Back: its timers are long overdue; it must find its lease gone and act on nothing.
            await wait_until(lambda: _said(stalled, "lost its jobs"))
            await trio.sleep(LEASE_S)
            runs = await runs_of(other_client, "due-while-stalled")
            view = await cluster(other_client)
    assert fired["worker_id"] == other_id and fired["status"] == "succeeded"
    assert len(runs) == 1
    assert [s["alive"] for s in view["servers"]] == [True, True]  # it rejoined


async def _said(process: ServerProcess, text: str) -> bool:
    return text in process.log


async def test_a_joining_server_takes_a_share_of_the_jobs(database: str) -> None:
    with trio.fail_after(LIMIT_S):
        async with server(database) as a, a.client() as ca:
            for i in range(30):
                await ca.post("/v2/jobs", json=job(f"job-{i:02d}"))
            alone = await cluster(ca)
            async with server(database) as b, b.client() as cb:

                async def shared() -> dict[str, Any] | None:
                    view = await cluster(cb)
                    owned = [s["jobs_owned"] for s in view["servers"]]
                    return view if len(owned) == 2 and min(owned) > 0 and sum(owned) == 30 else None

                view = await wait_until(shared)
                run = (await cb.post("/v2/jobs/job-07/trigger")).json()
                done = await final(ca, run["id"])
    assert [s["jobs_owned"] for s in alone["servers"]] == [30]
    assert sorted(s["jobs_owned"] for s in view["servers"])[0] >= 5  # a real share, not one job
    assert done["status"] == "succeeded"
    assert "handed" in a.log and "joined" in a.log


async def test_a_server_starting_leaves_the_runs_of_another_database_alone(database: str) -> None:
    """A server kills what runs of a killed server on its host left behind; runs that its
    own database does not know belong to another deployment on the host: they go on."""
    with trio.fail_after(LIMIT_S):
        async with server(database) as a, a.client() as ca:
            await ca.post("/v2/jobs", json=job("elsewhere", "sleep 60"))
            started = (await ca.post("/v2/jobs/elsewhere/trigger")).json()
            await wait_until(lambda: _status_is(ca, started["id"], "running"))
            raw = os.environ[POSTGRES_ENV]
            with postgres_schema(raw) as other:
                async with server(other.render_as_string(hide_password=False)):
                    pass  # it reaps strays before it serves
            await trio.sleep(0.5)
            still = (await ca.get(f"/v2/runs/{started['id']}")).json()
            await ca.delete("/v2/jobs/elsewhere?cancel_active=true")
    assert still["status"] == "running", still


async def test_a_stream_on_one_server_shows_runs_executed_on_another(database: str) -> None:
    with trio.fail_after(LIMIT_S):
        async with (
            server(database) as a,
            server(database) as b,
            a.client() as ca,
            trio.open_nursery() as nursery,
        ):
            await ca.post(
                "/v2/jobs",
                json=job("streamed", "echo one; echo two", concurrency_policy="queue", max_concurrent_runs=1),
            )
            stream = await trio_websocket.connect_websocket(
                nursery, "127.0.0.1", b.port, f"/v2/events/stream?token={TOKEN}", use_ssl=False
            )
            runs = [(await ca.post("/v2/jobs/streamed/trigger")).json()["id"] for _ in range(3)]
            seen: list[dict[str, Any]] = []
            while sum(1 for e in seen if e["event_type"] == "succeeded") < 3:
                seen.append(json.loads(await stream.get_message()))
            await stream.aclose()
            resumed = await trio_websocket.connect_websocket(
                nursery,
                "127.0.0.1",
                a.port,
                f"/v2/events/stream?token={TOKEN}&since_id={seen[2]['id']}",
                use_ssl=False,
            )
            replay = [json.loads(await resumed.get_message()) for _ in range(len(seen) - 3)]
            await resumed.aclose()
    ids = [event["id"] for event in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {event["run_id"] for event in seen} == set(runs)
    output = [e["data"]["text"] for e in seen if e["event_type"] == "output" and e["run_id"] == runs[0]]
    assert "".join(output) == "one\ntwo\n"
    assert [event["id"] for event in replay] == ids[3:]  # resumed on another server, no gap


async def test_a_second_server_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    with trio.fail_after(LIMIT_S):
        async with serve_process("--db", db, token=TOKEN) as first:
            argv = server_argv("--db", db, port=free_port())
            second = await trio.run_process(argv, capture_stderr=True, check=False, stdin=subprocess.DEVNULL)
            assert first.process.returncode is None
    assert second.returncode != 0
    assert "another termjobs server is already using" in second.stderr.decode()
    assert "PostgreSQL" in second.stderr.decode()
