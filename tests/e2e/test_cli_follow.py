"""``--follow`` and ``watch``: live events in the CLI against the real server process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.e2e.server import TOKEN, Server, free_port, serve, wait_for_metric
from tests.e2e.test_cli import CLEAN_ENV, term_llm

LIMIT_S = 60
TICKER = "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done; echo done"


@dataclass
class Lines:
    """Lines a running CLI process printed, each with when it arrived."""

    process: trio.Process
    lines: list[tuple[float, str]] = field(default_factory=list)

    async def read(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        while chunk := await self.process.stdout.receive_some(65536):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            now = trio.current_time()
            self.lines += [(now, line.decode()) for line in complete]

    def texts(self) -> list[str]:
        return [text for _, text in self.lines]


async def start_cli(server: Server, *args: str) -> trio.Process:
    argv = [sys.executable, "-m", "termjobs", "jobs", "--server", server.url, "--token", TOKEN, *args]
    return await trio.lowlevel.open_process(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=CLEAN_ENV
    )


async def create(client: httpx.AsyncClient, name: str, script: str) -> dict[str, Any]:
    body = {
        "name": name,
        "runner_type": "program",
        "runner_config": {"command": script, "shell": True},
        "trigger_type": "manual",
        "concurrency_policy": "allow",
        "max_concurrent_runs": 5,
    }
    reply = await client.post("/v2/jobs", json=body)
    assert reply.status_code == 201, reply.text
    job: dict[str, Any] = reply.json()
    return job


async def test_trigger_follow_shows_output_as_the_program_prints_it(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server, server.client() as client:
            go = tmp_path / "go"  # the program ticks once the CLI follows (a busy machine
            # may start the CLI late, and then the ticks would come as one replay)
            await create(client, "ticker", f"while [ ! -e {go} ]; do sleep 0.02; done; {TICKER}")
            cli = Lines(await start_cli(server, "trigger", "ticker", "--follow"))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cli.read)
                await wait_for_metric(server, "termjobs_stream_subscribers 1.0")
                go.touch()
            code = await cli.process.wait()
            await server.stop()
    texts = cli.texts()
    assert code == 0, texts
    assert texts[0].startswith("run run_") and "of job ticker queued; following its events" in texts[0]
    ticks = [(at, text) for at, text in cli.lines if "stdout | tick" in text]
    assert [text.split("| ")[1] for _, text in ticks] == [f"tick {i}" for i in range(1, 6)]
    finished = next(at for at, text in cli.lines if " succeeded " in text)
    # the first line arrived while the program still had a second to go
    assert finished - ticks[0][0] > 0.6
    assert "stdout | done" in texts[-2]


async def test_follow_of_a_failing_run_exits_1_and_json_mode_prints_event_lines(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server, server.client() as client:
            job = await create(client, "flaky", "echo bad >&2; exit 3")
            run = (await client.post(f"/v2/jobs/{job['id']}/trigger")).json()
            env = {"TERM_LLM_JOBS_SERVER": server.url, "TERM_LLM_JOBS_TOKEN": TOKEN}
            text = await term_llm("jobs", "run", "events", run["id"], "--follow", env=env)
            lines = await term_llm("jobs", "--json", "run", "events", run["id"], "-f", env=env)
            await server.stop()
    assert text.code == 1
    assert "stderr | bad" in text.out
    assert "failed" in text.out.splitlines()[-1] and "program exited with code 3" in text.out.splitlines()[-1]
    events = [json.loads(line) for line in lines.out.splitlines()]
    assert lines.code == 1 and [e["event_type"] for e in events][-1] == "failed"
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)


async def test_watch_resumes_after_server_restarts_without_gaps_repeats_or_old_history(
    tmp_path: Path,
) -> None:
    db, port = tmp_path / "jobs.db", free_port()
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            watcher: Lines | None = None
            try:
                async with serve(db, port=port) as server, server.client() as client:
                    job = await create(client, "watched", "echo hi")
                    old = (await client.post(f"/v2/jobs/{job['id']}/trigger")).json()["id"]
                    await wait_for_run(client, old)
                    watcher = Lines(await start_cli(server, "--json", "watch", "watched"))
                    nursery.start_soon(watcher.read)
                    # connected (a CLI can take seconds to start on a busy machine), no event seen yet
                    await wait_for_metric(server, "termjobs_stream_subscribers 1.0")
                    await server.stop(signal.SIGTERM)
                # a watch that lost its connection before any event resumes from where it
                # started: neither the run before it nor anything after is lost
                async with serve(db, port=port) as again, again.client() as client:
                    first = (await client.post(f"/v2/jobs/{job['id']}/trigger")).json()["id"]
                    await wait_for_lines(watcher, first, "succeeded")
                    await again.stop(signal.SIGTERM)
                async with serve(db, port=port) as third, third.client() as client:
                    second = (await client.post(f"/v2/jobs/{job['id']}/trigger")).json()["id"]
                    await wait_for_lines(watcher, second, "succeeded")
                    stored = (await client.get(f"/v2/runs/{second}/events")).json()["data"]
                    watcher.process.send_signal(signal.SIGINT)
                    assert await watcher.process.wait() == 0
                    await third.stop()
            finally:
                if watcher is not None and watcher.process.returncode is None:
                    watcher.process.kill()
                    with trio.CancelScope(shield=True):
                        await watcher.process.wait()
    events = [json.loads(text) for text in watcher.texts()]
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})  # no repeats, in order
    assert [e["run_id"] for e in events if e["event_type"] == "queued"] == [first, second]
    assert old not in {e["run_id"] for e in events}
    assert [e["id"] for e in events if e["run_id"] == second] == [e["id"] for e in stored]


async def test_watch_with_a_refused_token_is_a_clear_error(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "jobs.db") as server:
            env = {"TERM_LLM_JOBS_SERVER": server.url, "TERM_LLM_JOBS_TOKEN": "wrong-token"}
            refused = await term_llm("jobs", "watch", env=env)
            await server.stop()
    assert refused.code == 1 and "Traceback" not in refused.err
    assert "the event stream refused the credentials" in refused.err


async def wait_for_run(client: httpx.AsyncClient, run_id: str) -> None:
    while True:
        if (await client.get(f"/v2/runs/{run_id}")).json()["status"] in {"succeeded", "failed"}:
            return
        await trio.sleep(0.05)


async def wait_for_lines(watcher: Lines, run_id: str, event_type: str) -> None:
    while True:
        for text in watcher.texts():
            event = json.loads(text)
            if event["run_id"] == run_id and event["event_type"] == event_type:
                return
        await trio.sleep(0.05)
