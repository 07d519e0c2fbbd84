"""End to end: the real ``term-llm jobs`` CLI, run as a subprocess, against the real
server process on a loopback port (real time, every test bounded).

One server serves the whole module (started in a thread with its own trio loop, see
``module_server``); each test uses its own job names. Tests that need an empty server
start their own.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import trio

from tests.e2e.server import TOKEN, free_port, serve

LIMIT_S = 60  # a hang guard, not a timing check: a busy machine starts each CLI slowly
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "skipped"}
# Local times are shown in the zone of the CLI process: pin one without DST.
CLI_ZONE = "Asia/Kolkata"
CLEAN_ENV = {
    key: value
    for key, value in os.environ.items()
    if key not in {"TERM_LLM_JOBS_SERVER", "TERM_LLM_JOBS_TOKEN", "NO_COLOR", "_TERM_LLM_COMPLETE"}
}

NIGHTLY_YAML = """\
name: {name}
runner_type: program
runner_config:
  command: sh
  args: ["-c", "echo report for $(date -u +%F)"]
trigger_type: cron
trigger_config:
  expression: "30 2 * * *"
  timezone: Europe/Berlin
timeout_seconds: 600
retry_policy:
  max_attempts: 3
  backoff: exponential
  initial_delay: 30s
"""

HELLO_YAML = """\
name: {name}
runner_type: program
runner_config:
  command: echo
  args: [hello from termjobs]
trigger_type: once
trigger_config:
  run_at: 2030-01-01T00:00:00Z   # a YAML timestamp: must reach the server as this text
"""


# --------------------------------------------------------------------- harness


@dataclass(frozen=True)
class Result:
    """What one CLI invocation did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


async def term_llm(*args: str, stdin: bytes | int = b"", env: dict[str, str] | None = None) -> Result:
    """Run ``python -m termjobs ARGS`` (the ``term-llm`` command)."""
    process = await trio.run_process(
        [sys.executable, "-m", "termjobs", *args],
        stdin=stdin,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**CLEAN_ENV, "TZ": CLI_ZONE, **(env or {})},
    )
    return Result(process.returncode, process.stdout.decode(), process.stderr.decode())


T = TypeVar("T")


async def concurrently(*calls: Callable[[], Awaitable[T]]) -> list[T]:
    """Run independent CLI invocations at the same time (each one is a process)."""
    results: dict[int, T] = {}

    async def one(index: int, call: Callable[[], Awaitable[T]]) -> None:
        results[index] = await call()

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(one, index, call)
    return [results[index] for index in range(len(calls))]


@dataclass(frozen=True)
class Jobs:
    """``term-llm jobs --server URL --token TOKEN ...`` against one server."""

    url: str

    async def __call__(self, *args: str, stdin: bytes | int = b"", token: str = TOKEN) -> Result:
        return await term_llm("jobs", "--server", self.url, "--token", token, *args, stdin=stdin)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = (await self("create", "--data", json.dumps(body))).json()
        return created

    @asynccontextmanager
    async def api(self) -> AsyncIterator[httpx.AsyncClient]:
        """A plain HTTP client, to wait for runs without spawning the CLI in a loop."""
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10) as client:
            yield client

    async def wait_run(self, run_id: str, statuses: set[str]) -> dict[str, Any]:
        """Poll the run until its status is one of ``statuses``."""
        async with self.api() as client:
            while True:
                run: dict[str, Any] = (await client.get(f"/v2/runs/{run_id}")).json()
                if run["status"] in statuses:
                    return run
                await trio.sleep(0.05)


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real server for the module, run by ``serve()`` in a thread with its own
    trio loop (pytest-trio fixtures cannot outlive a test)."""
    db = tmp_path_factory.mktemp("cli") / "jobs.db"
    started: queue.Queue[str | BaseException] = queue.Queue()
    stop = threading.Event()

    async def host() -> None:
        try:
            async with serve(db, "--shutdown-grace", "1") as server:
                started.put(server.url)
                await trio.to_thread.run_sync(stop.wait)
                await server.stop()
        except BaseException as exc:
            started.put(exc)
            raise

    thread = threading.Thread(target=trio.run, args=(host,), name="cli-test-server", daemon=True)
    thread.start()
    url = started.get(timeout=60)
    if isinstance(url, BaseException):
        raise url
    try:
        yield url
    finally:
        stop.set()
        thread.join(timeout=60)


@pytest.fixture
def jobs(module_server: str) -> Jobs:
    return Jobs(module_server)


def program(name: str, command: str = "echo", *args: str, **fields: Any) -> dict[str, Any]:
    """A manual program job."""
    body = {
        "name": name,
        "runner_type": "program",
        "runner_config": {"command": command, "args": list(args)},
        "trigger_type": "manual",
    }
    return {**body, **fields}


def row(table: str, first_cell: str) -> list[str]:
    """The cells of the table line that starts with ``first_cell``."""
    for line in table.splitlines():
        if line.split(" ", 1)[0] == first_cell:
            return re.split(r"\s{2,}", line.strip())
    raise AssertionError(f"no row {first_cell!r} in:\n{table}")


def unique_prefix(job_id: str, ids: list[str]) -> str:
    """The shortest prefix of ``job_id`` (beyond ``job_``) no other id starts with."""
    for length in range(5, len(job_id) + 1):
        prefix = job_id[:length]
        if sum(other.startswith(prefix) for other in ids) == 1:
            return prefix
    return job_id


# --------------------------------------------------------------------- tests


async def test_help_and_a_light_start_up() -> None:
    with trio.fail_after(LIMIT_S):
        helped = await term_llm("jobs", "--help")
        assert helped.code == 0
        for command in ("list", "get", "create", "update", "delete", "trigger", "pause", "resume"):
            assert f"\n  {command} " in helped.out
        assert "TERM_LLM_JOBS_SERVER" in helped.out and "TERM_LLM_JOBS_TOKEN" in helped.out
        run_help = await term_llm("jobs", "run")
        assert run_help.code == 0 and "events" in run_help.out and "cancel" in run_help.out
        heavy = ("quart", "hypercorn", "sqlalchemy", "pydantic", "croniter", "alembic", "httpx")
        probe = f"import sys, termjobs.cli.main; print([m for m in {heavy!r} if m in sys.modules])"
        loaded = await trio.run_process([sys.executable, "-c", probe], capture_stdout=True)
        assert loaded.stdout.decode().strip() == "[]"


async def test_create_from_a_yaml_file_then_get_by_name_id_and_prefix(jobs: Jobs, tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        path = tmp_path / "nightly.yaml"
        path.write_text(NIGHTLY_YAML.format(name="nightly-report"))
        created = await jobs("create", "--file", str(path))
        assert created.code == 0, created.err
        assert created.out.startswith('{\n  "id": "job_') and created.out.endswith("\n}\n")
        job = created.json()
        assert job["retry_policy"] == {"backoff": "exponential", "initial_delay": "30s", "max_attempts": 3}
        assert job["trigger_config"] == {"expression": "30 2 * * *", "timezone": "Europe/Berlin"}

        listed = (await jobs("--json", "list")).json()
        ids = [item["id"] for item in listed]
        prefix = unique_prefix(job["id"], ids)
        for ref in ("nightly-report", job["id"], prefix, prefix.removeprefix("job_")):
            got = await jobs("get", ref)
            assert got.json()["id"] == job["id"], ref
        assert (await jobs("get", "nightly-report", "--json")).out == got.out  # always pretty JSON

        table = await jobs("list")
        assert table.code == 0 and table.out.startswith("NAME ")
        cells = row(table.out, "nightly-report")
        assert cells[:3] == ["nightly-report", "cron", "-"]
        assert re.fullmatch(r"[A-Z][a-z]{2} \d{1,2} 0[67]:00", cells[-1])  # 02:30 Berlin, in Kolkata


async def test_create_from_stdin_keeps_yaml_timestamps_as_text(jobs: Jobs) -> None:
    with trio.fail_after(LIMIT_S):
        created = await jobs("create", stdin=HELLO_YAML.format(name="say-hello-later").encode())
        job = created.json()
        assert job["trigger_type"] == "once" and job["trigger_config"] == {"run_at": "2030-01-01T00:00:00Z"}
        assert job["next_run_at"] == "2030-01-01T00:00:00Z"
        dashed = await jobs("create", "--file", "-", stdin=HELLO_YAML.format(name="hello-dash").encode())
        assert dashed.json()["name"] == "hello-dash"
        cells = row((await jobs("list")).out, "say-hello-later")
        assert cells == ["say-hello-later", "once", "-", "-", "Jan 1 05:30"]  # local time (+05:30)


async def test_update_pause_and_resume(jobs: Jobs) -> None:
    with trio.fail_after(LIMIT_S):
        job = await jobs.create(program("editable"))
        updated = await jobs("update", "editable", "--data", "timeout_seconds: 42\nlabels: {team: ops}")
        assert updated.json()["timeout_seconds"] == 42 and updated.json()["labels"] == {"team": "ops"}
        from_stdin = await jobs("update", job["id"], stdin=b'{"timeout_seconds": 43}')
        assert from_stdin.json()["timeout_seconds"] == 43

        assert (await jobs("pause", "editable")).json()["enabled"] is False
        assert row((await jobs("list")).out, "editable")[:3] == ["editable", "manual", "disabled"]
        refused = await jobs("trigger", "editable")
        assert (
            refused.code == 1 and refused.err == "Error: job is disabled; resume it before triggering runs\n"
        )
        assert (await jobs("resume", "editable")).json()["enabled"] is True


async def test_trigger_then_runs_events_and_run_get(jobs: Jobs) -> None:
    with trio.fail_after(LIMIT_S):
        job = await jobs.create(program("greeter", "echo", "hello", "world"))
        triggered = await jobs("trigger", "greeter")
        run = triggered.json()
        assert run["job_id"] == job["id"] and run["trigger"] == "manual" and run["attempt"] == 1
        await jobs.wait_run(run["id"], TERMINAL)

        table = await jobs("runs", "greeter")
        assert table.out.splitlines()[0].split() == ["RUN_ID", "JOB_ID", "STATUS", "TRIGGER", "SCHEDULED_FOR"]
        cells = row(table.out, run["id"])
        assert cells[:4] == [run["id"], job["id"], "succeeded", "manual"] and cells[4].endswith("+05:30")
        full = (await jobs("runs", "greeter", "--json")).json()  # --json after the command
        assert [r["id"] for r in full] == [run["id"]] and full[0]["stdout"] == "hello world\n"
        paged = await jobs("--json", "runs", "--limit", "1", "--offset", "1", "greeter")
        assert paged.json() == []

        events = await jobs("run", "events", run["id"])
        kinds = [line.split()[1] for line in events.out.splitlines()]
        assert kinds[:3] == ["queued", "claimed", "running"] and kinds[-1] == "succeeded"
        assert "output             stdout | hello world" in events.out
        assert all(line[:25].endswith("+05:30") for line in events.out.splitlines())
        as_json = (await jobs("--json", "run", "events", run["id"])).json()
        assert [event["event_type"] for event in as_json] == kinds
        later = (await jobs("--json", "run", "events", run["id"], "--since-id", str(as_json[1]["id"]))).json()
        assert later == as_json[2:]

        got = await jobs("run", "get", run["id"])
        assert got.out.startswith("{\n  ") and got.json()["stdout"] == "hello world\n"
        last = row((await jobs("list")).out, "greeter")
        assert last[:4] == ["greeter", "manual", "-", "just now ok"]


async def test_active_runs_cancel_and_delete(jobs: Jobs) -> None:
    with trio.fail_after(LIMIT_S):
        job = await jobs.create(program("sleeper", "sleep", "60"))
        run = (await jobs("trigger", "sleeper")).json()
        await jobs.wait_run(run["id"], {"running"})

        active = await jobs("active")
        cells = row(active.out, job["id"])
        assert cells[:4] == [job["id"], "sleeper", run["id"], "running"]
        assert cells[4].endswith("+05:30") and cells[6].startswith("worker_")
        entry = next(e for e in (await jobs("active", "--json")).json() if e["run_id"] == run["id"])
        assert list(entry) == [
            "job_id",
            "job_name",
            "run_id",
            "status",
            "started_at",
            "scheduled_for",
            "worker_id",
        ]
        assert row((await jobs("list")).out, "sleeper")[:3] == ["sleeper", "manual", "running"]

        busy = await jobs("trigger", "sleeper")  # 409
        assert busy.code == 1 and "already has an active run" in busy.err
        kept = await jobs("delete", "sleeper")  # 409
        assert kept.code == 1 and kept.err.startswith("Error: job has 1 active run(s)")
        assert f"term-llm jobs delete {job['id']} --cancel-active" in kept.err

        cancelled = (await jobs("run", "cancel", run["id"])).json()
        assert cancelled["status"] in {"cancel_requested", "cancelled"}
        await jobs.wait_run(run["id"], {"cancelled"})
        kinds = [line.split()[1] for line in (await jobs("run", "events", run["id"])).out.splitlines()]
        assert "cancel_requested" in kinds and kinds[-1] == "cancelled"

        second = (await jobs("trigger", job["id"])).json()
        await jobs.wait_run(second["id"], {"running"})
        deleted = await jobs("delete", "sleeper", "--cancel-active")
        assert deleted.json() == {"id": job["id"], "deleted": True}
        gone = await jobs("get", job["id"])
        assert (gone.code, gone.err) == (1, f'Error: job "{job["id"]}" not found\n')


async def test_references_that_are_ambiguous_or_unknown(jobs: Jobs) -> None:
    with trio.fail_after(LIMIT_S):
        await jobs.create(program("ref-a"))
        await jobs.create(program("ref-b"))
        ambiguous, unknown, no_runs, blank, missing_run = await concurrently(
            partial(jobs, "get", "job_"),
            partial(jobs, "trigger", "no-such-job"),
            partial(jobs, "runs", "no-such-job"),
            partial(jobs, "get", "  "),
            partial(jobs, "run", "get", "run_doesnotexist"),  # a JSON 404 from the server
        )
        assert ambiguous.code == 1
        assert ambiguous.err.startswith('Error: job reference "job_" is ambiguous: it matches job_')
        assert (unknown.code, unknown.err) == (1, 'Error: job "no-such-job" not found\n')
        assert (no_runs.code, no_runs.err) == (1, 'Error: job "no-such-job" not found\n')
        assert blank.code == 2 and "Error: job id/name is required" in blank.err and "Usage:" in blank.err
        assert (missing_run.code, missing_run.err) == (1, "Error: run not found\n")


async def test_server_side_errors(jobs: Jobs) -> None:
    with trio.fail_after(LIMIT_S):
        await jobs.create(program("dupe"))
        duplicate = await jobs("create", "--data", json.dumps(program("dupe")))  # 409
        assert duplicate.err == "Error: a job named 'dupe' already exists; choose another name\n"
        assert duplicate.code == 1
        bad_cron = program("bad-cron", trigger_type="cron", trigger_config={"expression": "61 * * * *"})
        invalid = await jobs("create", "--data", json.dumps(bad_cron))  # 400
        assert (invalid.code, invalid.err) == (
            1,
            "Error: trigger_config.expression: minute: value 61 out of bounds (0-59)\n",
        )
        typo = await jobs("update", "dupe", "--data", "timout_seconds: 5")  # 400
        assert typo.code == 1 and "unknown field 'timout_seconds'" in typo.err


async def test_payload_errors(jobs: Jobs, tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        cases = [
            (("create", "--data", "name: ["), 1, "Error: payload is not valid JSON or YAML: "),
            (("create", "--data", "just words"), 1, "Error: payload must be a JSON object or a YAML mapping"),
            (("create", "--file", str(tmp_path / "nope.yaml")), 1, f"Error: read {tmp_path / 'nope.yaml'}: "),
            (("create",), 1, "Error: empty payload from stdin"),
            (("create", "--file", "x", "--data", "{}"), 2, "Error: use only one of --file or --data"),
        ]
        results = await concurrently(*(partial(jobs, *args) for args, _, _ in cases))
        for (args, code, message), result in zip(cases, results, strict=True):
            assert (result.code, result.err.splitlines()[-1][: len(message)]) == (code, message), args
        assert "No such file or directory" in results[2].err

        primary, secondary = os.openpty()  # stdin is a terminal: no payload is waiting
        try:
            interactive = await jobs("create", stdin=secondary)
        finally:
            os.close(primary)
            os.close(secondary)
        assert interactive.code == 2
        assert "Error: missing payload: provide --file, --data, or stdin" in interactive.err


async def test_connection_and_authentication_errors(jobs: Jobs) -> None:
    with trio.fail_after(LIMIT_S):
        closed = f"http://127.0.0.1:{free_port()}"
        env = {"TERM_LLM_JOBS_SERVER": f" {jobs.url}/ ", "TERM_LLM_JOBS_TOKEN": TOKEN}
        bad_url, refused, wrong, anonymous, from_env = await concurrently(
            partial(term_llm, "jobs", "--server", "127.0.0.1:8080", "list"),
            partial(term_llm, "jobs", "--server", closed, "list"),
            partial(jobs, "list", token="wrong"),
            partial(term_llm, "jobs", "--server", jobs.url, "list"),
            partial(term_llm, "jobs", "--json", env=env),
        )
        assert bad_url.code == 2 and "Usage: term-llm jobs" in bad_url.err
        assert 'Error: invalid --server "127.0.0.1:8080": must start with http:// or https://' in bad_url.err

        expected = f"Error: cannot connect to the jobs server at {closed}: connection refused"
        assert refused.code == 1 and refused.err.startswith(expected)
        assert "--server" in refused.err and "TERM_LLM_JOBS_SERVER" in refused.err

        assert wrong.code == 1 and wrong.err.startswith("Error: invalid authentication credentials")
        assert "--token" in wrong.err and "TERM_LLM_JOBS_TOKEN" in wrong.err
        assert anonymous.code == 1 and f"the server at {jobs.url} requires a token" in anonymous.err
        assert isinstance(from_env.json(), list)


async def test_a_server_that_does_not_answer_times_out() -> None:
    with trio.fail_after(LIMIT_S), socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # connections complete in the backlog, nobody ever answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        result = await term_llm("jobs", "--server", url, "--timeout", "300ms", "list")
        assert result.code == 1
        assert result.err.startswith(f"Error: the jobs server at {url} did not answer within 300ms")
        assert "--timeout" in result.err
        bad = await term_llm("jobs", "--timeout", "soon", "list")
        assert bad.code == 2 and 'invalid --timeout "soon"' in bad.err


async def test_usage_errors_exit_2() -> None:
    with trio.fail_after(LIMIT_S):
        cases = [("list", "extra"), ("nope",), ("runs", "--limit", "0"), ("get",), ("run", "events")]
        results = await concurrently(*(partial(term_llm, "jobs", *args) for args in cases))
        for args, result in zip(cases, results, strict=True):
            assert result.code == 2 and "Usage: term-llm jobs" in result.err, args


async def test_validate_checks_a_definition_without_a_server(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with trio.fail_after(LIMIT_S):
        good = tmp_path / "nightly.yaml"
        good.write_text(NIGHTLY_YAML.format(name="nightly-report"))
        ok = await term_llm("jobs", "--server", nowhere, "validate", "--file", str(good))
        assert ok.code == 0, ok.err
        assert ok.out.startswith('OK: job "nightly-report" is valid (program runner, cron trigger; next run ')
        assert ok.out.rstrip().endswith("+05:30)")
        as_json = await term_llm("jobs", "validate", "--json", stdin=HELLO_YAML.format(name="h").encode())
        assert as_json.json() == {"valid": True, "name": "h", "next_run_at": "2030-01-01T00:00:00Z"}

        bad = tmp_path / "bad.yaml"
        bad.write_text(NIGHTLY_YAML.format(name="x").replace("30 2 * * *", "30 25 * * *"))
        invalid = await term_llm("jobs", "validate", "-f", str(bad))
        assert invalid.code == 1
        hour = "trigger_config.expression: hour: value 25 out of bounds (0-23)"
        assert invalid.err == f"Error: invalid job definition: {hour}\n"


async def test_list_hides_finished_agent_jobs_and_says_why(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        async with serve(tmp_path / "empty.db", "--shutdown-grace", "1") as server:
            jobs = Jobs(server.url)
            assert (await jobs()).out == "No jobs found.\n"  # `jobs` alone is `jobs list`
            assert (await jobs("runs")).out == "No runs found.\n"
            assert (await jobs("active")).out == "No active runs found.\n"
            assert (await jobs("--json", "list")).json() == []

            agent = {
                "name": "sub-agent",
                "runner_type": "llm",
                "runner_config": {"agent_name": "developer", "instructions": "say hi", "cwd": str(tmp_path)},
                "trigger_type": "manual",
            }
            await jobs.create(agent)
            run = (await jobs("trigger", "sub-agent")).json()
            await jobs.wait_run(run["id"], TERMINAL)  # this server has no LLM provider: fails
            assert (await jobs("list")).out == (
                "No active jobs. 1 completed once-off/agent job(s) hidden — use --all to show.\n"
            )
            shown = await jobs("list", "--all")
            assert row(shown.out, "sub-agent")[:4] == ["sub-agent", "manual", "-", "just now FAIL"]
            assert (await jobs("run", "events", run["id"])).out.splitlines()[-1].split()[1] == "failed"

            await jobs.create(program("visible"))
            listed = (await jobs("list")).out
            assert "sub-agent" not in listed and row(listed, "visible")[0] == "visible"
            assert listed.endswith("\n\n1 completed once-off/agent job(s) hidden. Use --all to show.\n")
            assert await server.stop() == 0


async def test_shell_completion(jobs: Jobs) -> None:
    with trio.fail_after(LIMIT_S):
        script, sourced, zsh, fish = await concurrently(
            partial(term_llm, "completion", "bash"),
            partial(term_llm, env={"_TERM_LLM_COMPLETE": "bash_source"}),
            partial(term_llm, "completion", "zsh"),
            partial(term_llm, "completion", "fish"),
        )
        assert script.code == 0 and "_TERM_LLM_COMPLETE=bash_complete" in script.out
        assert sourced.out == script.out
        assert "compdef term-llm" in zsh.out and "complete --no-files --command term-llm" in fish.out

        await jobs.create(program("complete-me"))
        env = {
            "_TERM_LLM_COMPLETE": "bash_complete",
            "COMP_WORDS": "term-llm jobs get complete-",
            "COMP_CWORD": "3",
            "TERM_LLM_JOBS_SERVER": jobs.url,
            "TERM_LLM_JOBS_TOKEN": TOKEN,
        }
        completed = await term_llm(env=env)
        assert completed.out.splitlines() == ["plain,complete-me"]
        commands = await term_llm(env={**env, "COMP_WORDS": "term-llm jobs ru", "COMP_CWORD": "2"})
        assert commands.out.splitlines() == ["plain,run", "plain,runs"]


async def test_colour_is_off_for_pipes_and_with_no_color(jobs: Jobs) -> None:
    with trio.fail_after(LIMIT_S):
        await jobs.create(program("plain-output"))
        assert "\x1b[" not in (await jobs("list")).out  # stdout is a pipe here
        primary, secondary = os.openpty()
        try:
            argv = [sys.executable, "-m", "termjobs", "jobs", "--server", jobs.url, "--token", TOKEN, "list"]
            env = {**CLEAN_ENV, "TERM": "xterm"}
            coloured = await trio.run_process(argv, stdout=secondary, check=False, env=env)
            text = os.read(primary, 65536).decode()
            plain = await trio.run_process(argv, stdout=secondary, check=False, env={**env, "NO_COLOR": "1"})
            plain_text = os.read(primary, 65536).decode()
        finally:
            os.close(primary)
            os.close(secondary)
        assert coloured.returncode == plain.returncode == 0
        assert "\x1b[1mNAME\x1b[0m" in text and "\x1b[" not in plain_text
