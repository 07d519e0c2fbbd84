"""The ``shell`` tool's process: ``/bin/sh -c COMMAND`` in the run's ``cwd``.

The process gets its own session and process group, stdin ``/dev/null``, the server's
environment without tokens and provider keys, a timeout and an output cap (head and
tail kept). Whatever happens (exit, timeout, the run being cancelled) the whole group
is killed before this returns, so nothing it started outlives the tool call.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from termjobs.runners.output import HeadTail

SHELL = "/bin/sh"
#: After the command exited, how long to keep reading output its children still write.
DRAIN_S = 1.0


@dataclass(frozen=True, slots=True)
class ShellResult:
    """How a command ended and what it printed (stdout and stderr interleaved)."""

    exit_code: int | None
    output: str
    timed_out: bool
    truncated: bool


async def run_shell(
    command: str, *, cwd: str, env: Mapping[str, str], time_limit: float, limit: int
) -> ShellResult:
    """Run ``command``; cancellation kills it at once."""
    captured = HeadTail(max(1, limit // 2))
    process = await trio.lowlevel.open_process(
        [SHELL, "-c", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    timed_out = False
    try:
        with trio.move_on_after(time_limit) as scope:
            async with trio.open_nursery() as nursery:
                done = trio.Event()
                nursery.start_soon(_read, process, captured, done)
                await process.wait()
                with trio.move_on_after(DRAIN_S):
                    await done.wait()
                nursery.cancel_scope.cancel()
        timed_out = scope.cancelled_caught
    finally:
        with trio.CancelScope(shield=True):
            _kill_group(process.pid)
            with trio.move_on_after(5):
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()
    code = process.returncode
    exit_code = None if code is None else (128 - code if code < 0 else code)
    return ShellResult(exit_code, captured.text(), timed_out, captured.truncated)


async def _read(process: trio.Process, captured: HeadTail, done: trio.Event) -> None:
    assert process.stdout is not None
    try:
        while chunk := await process.stdout.receive_some(65536):
            captured.feed(chunk)
    except (trio.ClosedResourceError, trio.BrokenResourceError):
        pass
    finally:
        done.set()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
