"""The ``program`` runner: one OS process per run.

* ``command`` is executed directly (PATH lookup) with ``args``, or with
  ``shell: true`` as ``/bin/sh -c <command> -- <args...>`` (args become ``$1``...).
* The child gets its own session and process group, stdin ``/dev/null``, the server's
  environment minus its API tokens, ``TERM_LLM_JOB_ID``/``_JOB_NAME``/``_RUN_ID``/
  ``_RUN_ATTEMPT``, ``PYTHONUNBUFFERED=1``, then the job's ``env``. With ``run_as``
  (``--run-as``, the server runs as root) it runs as that user, with its groups and
  ``HOME``/``USER``/``LOGNAME``.
* On a stop request the group gets SIGTERM, and SIGKILL after ``kill_grace_seconds``.
  When the main process has exited (in every outcome) the rest of its group is
  killed, and so is any descendant that left the group but still carries the run's
  marker variable (found through ``/proc``), so nothing a run started outlives it.
* stdout/stderr are captured head+tail (``HeadTail``) and streamed live
  (``LiveOutput``). ``exit_code`` is the real status, 128+N when killed by signal N.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import signal
import subprocess
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

import trio

from termjobs.config import RunAs
from termjobs.jobdef import Job
from termjobs.model import EventType, ExitReason, RunOutput
from termjobs.runners import spawn
from termjobs.runners.base import RunContext, RunResult
from termjobs.runners.config import DEFAULT_KILL_GRACE_SECONDS, PROTECTED_ENV, ProgramConfig, with_overrides
from termjobs.runners.output import HeadTail, LiveOutput

logger = logging.getLogger(__name__)

#: Variables of the server that a job must never see.
SECRET_ENV = PROTECTED_ENV
MARKER_ENV = "TERMJOBS_RUN_MARKER"
#: Variables every run sets for itself (see ProgramRunner._env)
RUN_ENV = frozenset(
    {"TERM_LLM_JOB_ID", "TERM_LLM_JOB_NAME", "TERM_LLM_RUN_ID", "TERM_LLM_RUN_ATTEMPT", MARKER_ENV}
)
SHELL = "/bin/sh"
PIPE_DRAIN_S = 1.0
#: How long finished runs are collected before one /proc scan serves them all.
SWEEP_BATCH_S = 0.1
#: How long the last live output may take to be written once the program has ended.
LIVE_CLOSE_S = 5.0
_READ_SIZE = 65536
#: After a read of less than SETTLE_BELOW bytes, a pipe is left to fill for this long
#: (unless the program ends): a program printing a line at a time is read a few lines
#: at a time, not a wake-up and a read per line.
PUMP_SETTLE_S = 0.005
SETTLE_BELOW = 4096

#: A running program: started from the event loop (``runners/spawn.py``), or by
#: ``trio.lowlevel.open_process`` where that cannot (a working directory, another user).
Child = trio.Process | spawn.SpawnedProcess


class ProgramRunner:
    """Runs ``program`` jobs."""

    @staticmethod
    def reap_orphans(run_ids: Iterable[str]) -> int:
        """Kill what runs of a dead server left running (see :func:`kill_orphans`)."""
        return kill_orphans(run_ids)

    @staticmethod
    def local_runs() -> set[str]:
        """Runs with processes on this host (see :func:`marked_runs`)."""
        return marked_runs()

    def __init__(
        self, *, base_env: Mapping[str, str], sweep_proc: bool = True, run_as: RunAs | None = None
    ) -> None:
        # A run's own variables are set by _env; the rest is the same for every run,
        # read-only (spawn keeps it laid out while it is the same object: spawn.Environ).
        base = {k: v for k, v in base_env.items() if k not in SECRET_ENV and k not in RUN_ENV}
        base["PYTHONUNBUFFERED"] = "1"
        if run_as is not None:
            base.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
        self._base_env: Mapping[str, str] = MappingProxyType(base)
        self._run_as = run_as
        self.sweeper = Sweeper() if sweep_proc and Path("/proc/self/environ").exists() else None

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work shared by all runs (batched sweeps for escaped processes)."""
        if self.sweeper is None:
            task_status.started()
            return
        await self.sweeper.serve(task_status=task_status)

    def stop_grace(self, job: Job) -> float:
        config = job.spec.parsed.runner
        return config.kill_grace_seconds if isinstance(config, ProgramConfig) else DEFAULT_KILL_GRACE_SECONDS

    async def run(self, ctx: RunContext) -> RunResult:
        config = ctx.job.spec.parsed.runner
        if not isinstance(config, ProgramConfig):
            problem = ctx.job.spec.parsed.problem or "not a program job"
            return RunResult(
                error=f"invalid program runner config: {problem}", exit_reason=ExitReason.EXCEPTION
            )
        config = with_overrides(config, ctx.run.overrides)
        marker = f"{ctx.run.id}-{secrets.token_hex(8)}"
        try:
            proc = await self._spawn(config, self._env(ctx, config, marker))
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument or variable
            return RunResult(
                error=f"program could not start: {_describe_spawn_error(exc, config)}",
                exit_reason=ExitReason.EXCEPTION,
            )
        return await _Execution(ctx, config, proc, marker, self.sweeper).run()

    def _env(self, ctx: RunContext, config: ProgramConfig, marker: str) -> spawn.Environ:
        """The server's variables, then the run's (the job's own win over both)."""
        own = {
            "TERM_LLM_JOB_ID": ctx.job.id,
            "TERM_LLM_JOB_NAME": ctx.job.spec.name,
            "TERM_LLM_RUN_ID": ctx.run.id,
            "TERM_LLM_RUN_ATTEMPT": str(ctx.run.attempt),
        }
        own.update(config.env)
        own[MARKER_ENV] = marker
        return spawn.Environ(self._base_env, own)

    async def _spawn(self, config: ProgramConfig, env: spawn.Environ) -> Child:
        if config.cwd is not None and not await trio.Path(config.cwd).is_dir():
            raise FileNotFoundError(errno.ENOENT, "working directory does not exist", config.cwd)
        argv = (
            [SHELL, "-c", config.command, "--", *config.args]
            if config.shell
            else [config.command, *config.args]
        )
        run_as = self._run_as
        if spawn.usable(cwd=config.cwd, as_other_user=run_as is not None):
            await trio.lowlevel.checkpoint_if_cancelled()
            return spawn.spawn(argv, env)
        return await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=config.cwd,
            env=env.merged(),
            start_new_session=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=list(run_as.groups) if run_as else None,
        )


def _describe_spawn_error(exc: OSError | ValueError, config: ProgramConfig) -> str:
    if isinstance(exc, ValueError):
        return f"{exc} in the command, its arguments or its environment"
    if exc.filename == config.cwd and config.cwd is not None:
        return f"working directory {config.cwd!r} does not exist"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {config.command!r}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {config.command!r} (is it executable?)"
    if exc.errno == errno.ENOEXEC:
        return f"{config.command!r} is not an executable program (a script needs a #! line)"
    return str(exc)


class Sweeper:
    """Kills descendants of finished runs that left their process group (daemons).

    Listing ``/proc`` costs about a millisecond, so runs do not each scan it: they
    hand their marker over and one scan, at most every ``SWEEP_BATCH_S``, serves every
    run that finished meanwhile. Without :meth:`serve` running, each request scans at
    once (the runner used on its own, as in its tests).
    """

    def __init__(self) -> None:
        self._pending: set[str] = set()
        self._wake = trio.Event()
        self._serving = False

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._serving = True
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                await trio.sleep(SWEEP_BATCH_S)  # let more finished runs join this scan
                self._wake = trio.Event()
                batch, self._pending = self._pending, set()
                await trio.to_thread.run_sync(kill_marked_processes_many, batch)
        finally:
            self._serving = False
            if self._pending:  # shutting down: runs that finished in the last batch window
                batch, self._pending = self._pending, set()
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(kill_marked_processes_many, batch)

    async def sweep(self, marker: str) -> None:
        """Kill what still carries ``marker`` (now, or with the next batched scan)."""
        if not self._serving:
            await trio.to_thread.run_sync(kill_marked_processes_many, {marker})
            return
        self._pending.add(marker)
        self._wake.set()


class _Execution:
    """One running process: its output pumps, its stop handling and its cleanup."""

    def __init__(
        self, ctx: RunContext, config: ProgramConfig, proc: Child, marker: str, sweep: Sweeper | None
    ) -> None:
        self.ctx, self.config, self.proc, self.marker, self.sweep = ctx, config, proc, marker, sweep
        self.captured = {"stdout": HeadTail(), "stderr": HeadTail()}
        self.live = LiveOutput(self._publish)
        self._pumps_left = 2
        self._pumps_done = trio.Event()
        self._exited = trio.Event()
        self._live_started = False

    async def _publish(self, stream: str, text: str) -> None:
        await self.ctx.emit(EventType.OUTPUT, None, {"stream": stream, "text": text})

    async def run(self) -> RunResult:
        try:
            async with trio.open_nursery() as writer:
                async with trio.open_nursery() as readers:
                    assert self.proc.stdout is not None and self.proc.stderr is not None
                    readers.start_soon(self._pump, "stdout", self.proc.stdout, writer)
                    readers.start_soon(self._pump, "stderr", self.proc.stderr, writer)
                    await self._wait_or_stop()
                    self._exited.set()
                    await self._reap_descendants()
                    # Descendants that escaped may still hold the pipes open: stop
                    # reading after a short drain instead of waiting for them.
                    with trio.move_on_after(PIPE_DRAIN_S):
                        await self._pumps_done.wait()
                    readers.cancel_scope.cancel()
                writer.cancel_scope.cancel()
            with trio.move_on_after(LIVE_CLOSE_S):
                await self.live.close()
        finally:
            with trio.CancelScope(shield=True):
                await self._hard_cleanup()
        return self._result()

    async def _pump(self, name: str, stream: trio.abc.ReceiveStream, writer: trio.Nursery) -> None:
        try:
            while chunk := await stream.receive_some(_READ_SIZE):
                self.captured[name].feed(chunk)
                self.live.feed(name, chunk)
                if not self._live_started:  # started by the first output (many programs print none)
                    self._live_started = True
                    writer.start_soon(self.live.run)
                if len(chunk) < SETTLE_BELOW and not self._exited.is_set():
                    with trio.move_on_after(PUMP_SETTLE_S):
                        await self._exited.wait()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            self._pumps_left -= 1
            if not self._pumps_left:
                self._pumps_done.set()

    async def _wait_or_stop(self) -> None:
        """Wait for the program to exit; on a stop request (or at the run's timeout)
        SIGTERM its group, and SIGKILL it after the grace."""
        with trio.CancelScope() as waiting:
            self.ctx.stop.cancels(waiting)
            await self.proc.wait()
            return
        _signal_group(self.proc.pid, signal.SIGTERM)
        with trio.move_on_after(self.config.kill_grace_seconds):
            await self.proc.wait()
            return
        _signal_group(self.proc.pid, signal.SIGKILL)
        await self.proc.wait()

    async def _reap_descendants(self) -> None:
        _signal_group(self.proc.pid, signal.SIGKILL)
        if self.sweep is not None:
            await self.sweep.sweep(self.marker)

    async def _hard_cleanup(self) -> None:
        """Last line of defence when the run itself was cancelled mid-flight."""
        if self.proc.returncode is None:
            _signal_group(self.proc.pid, signal.SIGKILL)
            with trio.move_on_after(5):
                await self.proc.wait()
            if self.sweep is not None:
                await self.sweep.sweep(self.marker)
        for stream in (self.proc.stdout, self.proc.stderr):
            if isinstance(stream, trio.lowlevel.FdStream):
                stream.close()  # what aclose() does, without its checkpoint
            elif stream is not None:
                await stream.aclose()

    def _result(self) -> RunResult:
        code = _exit_code(self.proc.returncode)
        out, err = self.captured["stdout"], self.captured["stderr"]
        error = None
        if code != 0 and not self.ctx.stop.requested:
            error = _exit_error(self.proc.returncode)
        output = RunOutput(
            exit_code=code,
            stdout=out.text() or None,
            stderr=err.text() or None,
            truncated=out.truncated or err.truncated,
        )
        return RunResult(output=output, error=error, exit_reason=ExitReason.EXCEPTION if error else None)


def _exit_code(returncode: int | None) -> int | None:
    if returncode is None:
        return None
    return 128 - returncode if returncode < 0 else returncode


def _exit_error(returncode: int | None) -> str:
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else "?"
        return f"program was killed by signal {-returncode} ({name}), exit code {128 - returncode}"
    return f"program exited with code {returncode}"


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def kill_marked_processes_many(markers: Collection[str]) -> int:
    """SIGKILL every process whose environment carries ``MARKER_ENV=<marker>`` for one
    of ``markers``.

    Catches descendants that started their own session (daemons) and so escaped the
    process-group kill. Every process is read: a descendant's pid says nothing about
    its age once pids have wrapped around. Linux only; returns how many processes were
    signalled.
    """
    if not markers:
        return 0
    needles = {f"{MARKER_ENV}={marker}".encode() for marker in markers}
    killed = _kill_matching(needles.__contains__)
    if killed:
        logger.info("killed %d escaped process(es) of finished runs", killed)
    return killed


def kill_orphans(run_ids: Iterable[str]) -> int:
    """SIGKILL processes left behind by runs of a server that died (crash recovery)."""
    prefixes = tuple(f"{MARKER_ENV}={run_id}-".encode() for run_id in run_ids)
    if not prefixes or not Path("/proc/self/environ").exists():
        return 0
    killed = _kill_matching(lambda entry: entry.startswith(prefixes))
    if killed:
        logger.warning("killed %d process(es) left running by runs of the previous server", killed)
    return killed


def marked_runs() -> set[str]:
    """The runs whose processes run on this host now (by their environment marker)."""
    prefix = f"{MARKER_ENV}=".encode()
    found: set[str] = set()
    if not Path("/proc/self/environ").exists():
        return found
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                marker = item[len(prefix) :].decode(errors="replace")
                found.add(marker.rsplit("-", 1)[0])  # <run id>-<16 hex digits>
    return found


def _kill_matching(matches: Callable[[bytes], bool]) -> int:
    killed, me = 0, os.getpid()
    pids = [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]
    for pid in pids:
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        if any(matches(item) for item in environ.split(b"\0")):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    return killed
