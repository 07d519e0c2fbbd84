"""A job cannot read the server's token from the server's command line or environment.

The reproduction of the reliability issue: a job (same user) read the token from
``/proc/$PPID/cmdline`` or ``/proc/$PPID/environ``. Each way of giving the token
(``--token``, ``$TERM_LLM_SERVE_TOKEN``, ``--token-file``, ``$TERM_LLM_SERVE_TOKEN_FILE``)
is checked against a job that dumps both; with ``--run-as`` (root only) the job runs as
another user and cannot read the token file either.
"""

from __future__ import annotations

import os
import pwd
import signal
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from termjobs.testing import ServerProcess, serve_process

LIMIT_S = 60
SECRET = "s3cret-token-0123456789-abcdefghij"
SNOOP = 'tr "\\0" "\\n" < /proc/$PPID/cmdline; tr "\\0" "\\n" < /proc/$PPID/environ; env'


@asynccontextmanager
async def server(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    async with serve_process(
        "--db", str(tmp_path / "jobs.db"), *args, env=env, teardown=signal.SIGKILL
    ) as proc:
        proc.token = SECRET
        yield proc


async def job_output(client: httpx.AsyncClient, command: str) -> dict[str, Any]:
    """Run ``command`` as a shell job; its finished run."""
    body = {
        "name": "snoop",
        "runner_type": "program",
        "runner_config": {"command": command, "shell": True, "cwd": "/"},
        "trigger_type": "manual",
    }
    job = (await client.post("/v2/jobs", json=body)).json()
    run = (await client.post(f"/v2/jobs/{job['id']}/trigger")).json()
    while run["status"] not in ("succeeded", "failed"):
        await trio.sleep(0.1)
        run = (await client.get(f"/v2/runs/{run['id']}")).json()
    return dict(run)


def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("how", ["--token", "env", "--token-file", "env file"])
async def test_a_job_cannot_read_the_token_from_the_servers_proc_entries(tmp_path: Path, how: str) -> None:
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    if how == "--token":
        args = ("--token", SECRET)
    elif how == "env":
        env = {"TERM_LLM_SERVE_TOKEN": SECRET}
    elif how == "--token-file":
        args = ("--token-file", str(token_file(tmp_path)))
    else:
        env = {"TERM_LLM_SERVE_TOKEN_FILE": str(token_file(tmp_path))}
    with trio.fail_after(LIMIT_S):
        async with server(tmp_path, *args, env=env) as proc, proc.client() as client:
            run = await job_output(client, SNOOP)
            assert run["status"] == "succeeded", run
            assert "TERM_LLM_JOB_ID=" in run["stdout"]  # it did read the server's entries
            assert SECRET not in run["stdout"] + run.get("stderr", "")
            if "file" in how:
                assert SECRET not in proc.log  # the banner does not print a token from a file
                assert "(from --token-file)" in proc.log


async def test_token_file_errors_are_clear(tmp_path: Path) -> None:
    with trio.fail_after(LIMIT_S):
        empty = tmp_path / "empty"
        empty.write_text("\n")
        for args, message in (
            (("--token-file", str(tmp_path / "missing")), "cannot read --token-file"),
            (("--token-file", str(empty)), "must hold one token"),
            (("--token-file", str(token_file(tmp_path)), "--token", "x"), "not both"),
        ):
            with pytest.raises(BaseException) as failed:
                async with server(tmp_path, *args):
                    pass
            assert message in "".join(traceback.format_exception(failed.value))


@pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs the tests to run as root")
async def test_with_run_as_jobs_cannot_read_the_token_file(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    secret_file = token_file(tmp_path)
    with trio.fail_after(LIMIT_S):
        async with (
            server(tmp_path, "--token-file", str(secret_file), "--run-as", "nobody") as proc,
            proc.client() as client,
        ):
            run = await job_output(client, f'id -u; cat {secret_file}; echo "home=$HOME"; {SNOOP}')
            assert run["stdout"].splitlines()[0] == str(nobody.pw_uid)
            assert f"home={nobody.pw_dir}" in run["stdout"]
            assert SECRET not in run["stdout"] + run.get("stderr", "")
            assert "Permission denied" in run.get("stderr", "")
            assert "program jobs run as: nobody" in proc.log
