"""The program runner against real processes (real time, each test bounded)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from termjobs.model import EventType, JSONValue, RunTrigger
from termjobs.rundomain import new_run
from termjobs.runners import program, spawn
from termjobs.runners.base import RunContext, RunResult, StopReason, StopSignal
from termjobs.runners.program import MARKER_ENV, ProgramRunner
from tests.helpers import EPOCH, alive, gone, make_job

LIMIT_S = 20


class Call:
    """One runner invocation with its live events."""

    def __init__(self, config: dict[str, Any], *, env: dict[str, str] | None = None) -> None:
        fields: dict[str, Any] = {"runner_config": config}
        self.job = make_job("prog", **fields)
        self.run = new_run(self.job.id, trigger=RunTrigger.MANUAL, scheduled_for=EPOCH, now=EPOCH)
        self.stop = StopSignal()
        self.events: list[tuple[float, str, str]] = []
        self.first_output = trio.Event()
        self.runner = ProgramRunner(base_env=env if env is not None else dict(os.environ))

    async def emit(self, event_type: EventType, message: str | None, data: JSONValue) -> None:
        assert event_type is EventType.OUTPUT and isinstance(data, dict)
        stream, text = data["stream"], data["text"]
        assert isinstance(stream, str) and isinstance(text, str)
        self.events.append((trio.current_time(), stream, text))
        self.first_output.set()

    def live(self, stream: str = "stdout") -> str:
        return "".join(text for _, s, text in self.events if s == stream)

    async def __call__(self) -> RunResult:
        ctx = RunContext(job=self.job, run=self.run, stop=self.stop, emit=self.emit)
        with trio.fail_after(LIMIT_S):
            return await self.runner.run(ctx)


def sh(script: str, **config: Any) -> dict[str, Any]:
    return {"command": script, "shell": True, **config}


async def test_success_captures_and_streams_output() -> None:
    call = Call({"command": "echo", "args": ["hello", "world"]})
    result = await call()
    assert (result.output.exit_code, result.error, result.output.stdout, result.output.stderr) == (
        0,
        None,
        "hello world\n",
        None,
    )
    assert call.live() == "hello world\n"


async def test_non_zero_exit_fails_with_the_real_code() -> None:
    call = Call(sh("echo oops >&2; exit 3"))
    result = await call()
    assert result.output.exit_code == 3 and result.error == "program exited with code 3"
    assert result.output.stderr == "oops\n" and call.live("stderr") == "oops\n"


async def test_shell_args_become_positional_parameters() -> None:
    result = await Call(sh('printf \'%s %s\' "$1" "$2"', args=["alpha", "beta"]))()
    assert result.output.stdout == "alpha beta"


async def test_environment_cwd_and_stdin(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "TERM_LLM_SERVE_TOKEN": "secret", "KEEP": "base", "OVERRIDE": "base"}
    script = (
        'echo "$TERM_LLM_JOB_ID $TERM_LLM_JOB_NAME $TERM_LLM_RUN_ATTEMPT $PYTHONUNBUFFERED"; '
        'echo "token=${TERM_LLM_SERVE_TOKEN:-none} $KEEP $OVERRIDE"; pwd; cat'
    )
    call = Call(sh(script, cwd=str(tmp_path), env=["OVERRIDE=job"]), env=env)
    result = await call()
    lines = (result.output.stdout or "").splitlines()
    assert lines[0] == f"{call.job.id} prog 1 1"
    assert lines[1] == "token=none base job"
    assert lines[2] == str(tmp_path)
    assert len(lines) == 3  # stdin is /dev/null, so cat printed nothing


PROBE = """
import os
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
env = os.environ
print(fds[:3], len(fds), os.getsid(0) == os.getpid(), env["KEEP"], env.get("TERM_LLM_SERVE_TOKEN"))
print(repr(open(0).read()))
"""


#: The three ways a program starts: the C library's posix_spawn through ctypes,
#: os.posix_spawn where ctypes cannot reach it, and trio's open_process (a working directory)
SPAWN_PATHS = pytest.mark.parametrize(
    ("cwd", "libc"),
    [(None, True), (None, False), ("{tmp}", True)],
    ids=["posix_spawn-ctypes", "posix_spawn-os", "open_process"],
)


@SPAWN_PATHS
async def test_a_program_starts_clean_in_its_own_session(
    cwd: str | None, libc: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Started from the event loop (runners/spawn.py: the C library's posix_spawn through
    # ctypes, or os.posix_spawn where ctypes cannot reach it) or, with a working
    # directory, by trio's open_process: the child sees the same either way.
    assert spawn._LIBC is not None  # this machine's C library has it
    if not libc:
        monkeypatch.setattr(spawn, "_LIBC", None)
    env = {"PATH": os.environ["PATH"], "TERM_LLM_SERVE_TOKEN": "secret", "KEEP": "base"}
    where = {} if cwd is None else {"cwd": cwd.format(tmp=tmp_path)}
    assert spawn.usable(cwd=where.get("cwd"), as_other_user=False) is (cwd is None)
    probe = await Call({"command": sys.executable, "args": ["-c", PROBE], **where}, env=env)()
    assert probe.error is None, probe.output.stderr
    assert (probe.output.stdout or "").splitlines() == [
        # stdin, stdout, stderr and the directory being listed: nothing inherited;
        # a session of its own; the server's tokens removed
        "[0, 1, 2] 4 True base None",
        "''",  # stdin is /dev/null
    ]
    status = await Call({"command": "cat", "args": ["/proc/self/status"], **where}, env=env)()
    signals = dict(line.split(":\t") for line in (status.output.stdout or "").splitlines() if ":\t" in line)
    # Python ignores SIGPIPE and SIGXFSZ in the server: the child must not inherit that.
    # (glibc's posix_spawn leaves its own two real-time signals, 32 and 33, ignored;
    # no program built on glibc can use them, see runners/spawn.py.)
    standard = (1 << 31) - 1  # signals 1 to 31
    assert (int(signals["SigIgn"], 16) & standard, int(signals["SigBlk"], 16)) == (0, 0)


@pytest.mark.parametrize("libc", [True, False], ids=["ctypes", "os"])
async def test_a_command_is_looked_up_in_the_path_the_job_sets(
    libc: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's PATH is searched by the C library; a job's own PATH by termjobs.
    if not libc:
        monkeypatch.setattr(spawn, "_LIBC", None)
    tool = tmp_path / "only-here"
    tool.write_text('#!/bin/sh\necho found "$@"\n')
    tool.chmod(0o755)
    env = {"PATH": os.environ["PATH"]}
    mine = await Call({"command": "only-here", "args": ["it"], "env": [f"PATH={tmp_path}"]}, env=env)()
    assert (mine.error, mine.output.stdout) == (None, "found it\n")
    servers = await Call({"command": "only-here"}, env=env)()
    assert servers.error is not None and "command not found: 'only-here'" in servers.error
    # an argument or a variable with a NUL byte cannot reach the C library
    broken = await Call({"command": "echo", "args": ["a\0b"]}, env=env)()
    assert broken.output.exit_code is None
    assert (
        broken.error
        == "program could not start: embedded null byte in the command, its arguments or its environment"
    )


ENVIRON = "import os; print(open('/proc/self/environ').read().replace(chr(0), chr(10)), end='')"


@SPAWN_PATHS
@pytest.mark.parametrize("job_sets", ["NEW", "SHARED"], ids=["job-adds", "job-replaces-a-server-variable"])
async def test_a_program_sees_the_servers_variables_then_the_runs_then_the_jobs(
    cwd: str | None, libc: bool, job_sets: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's variables are laid out once for every run (spawn.Environ); a run's
    # own, and its job's, come on top, each variable once, the job's winning. A job that
    # replaces a server variable has its whole environment laid out for it.
    if not libc:
        monkeypatch.setattr(spawn, "_LIBC", None)
    base = {"PATH": os.environ["PATH"], "KEEP": "server", "SHARED": "server", "TERM_LLM_RUN_ID": "stale"}
    where = {} if cwd is None else {"cwd": cwd.format(tmp=tmp_path)}
    config = {"command": sys.executable, "args": ["-c", ENVIRON], "env": [f"{job_sets}=job"], **where}
    call = Call(config, env=base)
    for round_ in range(2):  # the second run with the first's layout of the server's part
        result = await call()
        assert result.error is None, result.output.stderr
        entries = (result.output.stdout or "").splitlines()
        names = [entry.partition("=")[0] for entry in entries]
        assert len(names) == len(set(names)), entries
        seen = dict(entry.partition("=")[::2] for entry in entries)
        assert seen.pop(MARKER_ENV).startswith(f"{call.run.id}-")
        assert seen == {
            "PATH": os.environ["PATH"],
            "KEEP": "server",
            "SHARED": "server",
            job_sets: "job",
            "PYTHONUNBUFFERED": "1",
            "TERM_LLM_JOB_ID": call.job.id,
            "TERM_LLM_JOB_NAME": "prog",
            "TERM_LLM_RUN_ID": call.run.id,
            "TERM_LLM_RUN_ATTEMPT": "1",
        }, round_


def test_the_c_librarys_environment_is_the_merged_one() -> None:
    libc = spawn._LIBC
    assert libc is not None

    def entries(env: spawn.Environ) -> list[bytes]:
        array, _held = libc._environ(env)
        found = []
        for item in array:
            if item is None:
                break
            found.append(item)
        return found

    base = {"A": "1", "B": "2"}
    assert entries(spawn.Environ(base, {"C": "3"})) == [b"A=1", b"B=2", b"C=3"]
    assert entries(spawn.Environ(base, {"D": "4"})) == [b"A=1", b"B=2", b"D=4"]  # the base kept
    assert entries(spawn.Environ(base, {"B": "job"})) == [b"A=1", b"B=job"]  # a base variable replaced
    other = {"Z": "9"}
    assert entries(spawn.Environ(other, {"C": "3"})) == [b"Z=9", b"C=3"]  # another runner's base
    for bad, message in [
        (spawn.Environ(base, {"X=Y": "1"}), "illegal environment variable name"),
        (spawn.Environ(base, {"X": "a\0b"}), "embedded null byte"),
        (spawn.Environ({"X": "a\0b"}, {}), "embedded null byte"),
        (spawn.Environ({"": "1"}, {}), "illegal environment variable name"),
    ]:
        with pytest.raises(ValueError, match=message):
            entries(bad)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"command": "definitely-not-a-command-xyz"}, "program could not start: command not found"),
        ({"command": "true", "cwd": "/no/such/dir"}, "working directory '/no/such/dir' does not exist"),
        ({"command": "{tmp}/plain.txt"}, "permission denied: '{tmp}/plain.txt'"),
        ({"command": "{tmp}/noshebang"}, "'{tmp}/noshebang' is not an executable program"),
    ],
)
async def test_start_failures_have_no_exit_code(config: dict[str, Any], message: str, tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("echo hi\n")
    (tmp_path / "noshebang").write_bytes(b"\x00\x01binary")
    (tmp_path / "noshebang").chmod(0o755)
    config = {key: value.format(tmp=tmp_path) for key, value in config.items()}
    result = await Call(config)()
    assert result.output.exit_code is None and result.error is not None
    assert message.format(tmp=tmp_path) in result.error


async def test_stop_kills_the_whole_process_group_including_background_grandchildren() -> None:
    call = Call(sh("sleep 1000 & echo $!; sleep 1000; wait"))
    async with trio.open_nursery() as nursery:
        result_box: list[RunResult] = []

        async def run() -> None:
            result_box.append(await call())

        nursery.start_soon(run)
        await call.first_output.wait()
        grandchild = int(call.live().strip())
        assert alive(grandchild)
        started = trio.current_time()
        call.stop.request(StopReason.CANCEL)
    (result,) = result_box
    assert trio.current_time() - started < 3
    assert result.output.exit_code == 143  # SIGTERM
    assert await gone(grandchild)


async def test_a_program_ignoring_sigterm_is_killed_after_the_grace() -> None:
    call = Call(sh("trap '' TERM; echo ready; while :; do sleep 0.05; done", kill_grace_seconds=0.3))
    async with trio.open_nursery() as nursery:
        results: list[RunResult] = []

        async def run() -> None:
            results.append(await call())

        nursery.start_soon(run)
        await call.first_output.wait()
        started = trio.current_time()
        call.stop.request(StopReason.TIMEOUT)
    assert results[0].output.exit_code == 137  # SIGKILL
    assert 0.3 <= trio.current_time() - started < 3


async def test_background_children_of_a_successful_run_do_not_outlive_it() -> None:
    result = await Call(sh("sleep 1000 >/dev/null 2>&1 & echo $!"))()
    assert result.output.exit_code == 0
    assert await gone(int((result.output.stdout or "").strip()))


def escaping(tmp_path: Path) -> str:
    """A script that starts a daemon in its own session and prints its pid once the
    daemon has left the run's process group."""
    pidfile = tmp_path / "daemon.pid"
    return (
        f"setsid sh -c 'echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; exec sleep 1000' "
        f">/dev/null 2>&1 </dev/null & while [ ! -s {pidfile} ]; do sleep 0.01; done; cat {pidfile}"
    )


async def test_descendants_that_left_the_group_are_found_by_their_marker(tmp_path: Path) -> None:
    result = await Call(sh(escaping(tmp_path)))()
    pid = int((result.output.stdout or "").strip())
    assert await gone(pid)


async def test_a_batched_sweep_still_kills_escaped_processes_when_the_server_stops(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(program, "SWEEP_BATCH_S", LIMIT_S)  # the batch is not due before shutdown
    call = Call(sh(escaping(tmp_path)))
    with trio.fail_after(LIMIT_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(call.runner.serve)
            result = await call()
            pid = int((result.output.stdout or "").strip())
            assert alive(pid)  # waiting for the next batched scan
            nursery.cancel_scope.cancel()  # shutdown before it came
    assert await gone(pid)


async def test_killed_by_a_foreign_signal_reports_128_plus_n() -> None:
    result = await Call(sh("kill -9 $$"))()
    assert result.output.exit_code == 137
    assert result.error == "program was killed by signal 9 (SIGKILL), exit code 137"


async def test_large_output_keeps_the_first_and_last_32_kib_exactly() -> None:
    result = await Call({"command": "seq", "args": ["1", "100000"]})()
    full = "".join(f"{i}\n" for i in range(1, 100_001)).encode()
    assert len(full) > 64 * 1024 and result.output.truncated
    head, marker, tail = (result.output.stdout or "").partition("\n[... termjobs: ")
    assert head.encode() == full[: 32 * 1024]
    dropped = len(full) - 64 * 1024
    assert marker and tail == f"{dropped} bytes of output omitted ...]\n" + full[-32 * 1024 :].decode()


async def test_output_streams_live_before_the_program_ends() -> None:
    program = "import time\nfor i in range(4):\n    print(i)\n    time.sleep(0.2)\n"
    call = Call({"command": sys.executable, "args": ["-c", program]})
    start = trio.current_time()
    await call()
    end = trio.current_time()
    stdout = [(t, text) for t, s, text in call.events if s == "stdout"]
    assert "".join(text for _, text in stdout) == "0\n1\n2\n3\n"
    assert len(stdout) == 4  # one event per line, as printed (PYTHONUNBUFFERED)
    assert stdout[0][0] - start < end - start - 0.4  # the first line arrived well before the end


async def test_a_line_at_a_time_is_read_a_few_lines_at_a_time() -> None:
    # 300 lines, one a millisecond: a pipe is left to fill for PUMP_SETTLE_S after a
    # small read, so the lines arrive several to an event, all of them, in order.
    program = "import os, time\nfor i in range(300):\n    os.write(1, b'%d\\n' % i)\n    time.sleep(0.001)\n"
    call = Call({"command": sys.executable, "args": ["-c", program]})
    result = await call()
    expected = "".join(f"{i}\n" for i in range(300))
    assert result.output.stdout == expected and call.live() == expected
    assert len(call.events) < 150  # one read and one event per line would make 300


async def test_marker_is_set_for_children() -> None:
    result = await Call(sh(f'echo "${MARKER_ENV}"'))()
    assert (result.output.stdout or "").startswith("run_")
