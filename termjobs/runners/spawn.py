"""Start a program without forking the server: ``posix_spawn`` and a pidfd.

``trio.lowlevel.open_process`` hands each spawn to a worker thread, which runs
``subprocess.Popen``'s Python set-up and then forks; the thread must win the GIL back
from the busy event loop at every step. :func:`spawn` starts the child from the event
loop itself with ``posix_spawn`` (glibc's clone with ``CLONE_VFORK``: no copy of the
server's memory, the loop waits only until the child has called ``exec``) and waits for
it through a pidfd, which the event loop polls like a socket. On this machine it costs
the server 0.4 ms of CPU per child instead of 0.9 ms (``benchmarks/RESULTS.md``).

What the child gets is what :class:`~termjobs.runners.program.ProgramRunner` asks of
``open_process``: its own session, stdin ``/dev/null``, stdout and stderr pipes, the
given environment, default signal dispositions and an empty signal mask, and no other
file descriptor: every descriptor the server opens is close-on-exec, and those it was
started with are made so before the first spawn (``subprocess`` closes them in the
child instead). One difference is glibc's: the child of ``posix_spawn`` keeps glibc's
two internal real-time signals (32 and 33) ignored, which no program built on glibc
can use (its ``SIGRTMIN`` is 34).

``posix_spawn`` cannot change the working directory or the user, and needs Linux's
pidfds: :func:`usable` says whether a program can be started this way. The spawn
itself runs on the event loop: a command on a stalled network file system would stall
the loop while ``exec`` loads it (``open_process`` would stall a worker thread).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal

import trio

#: Signals Python ignores in the server, which a child must not inherit ignored.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


def _supported() -> bool:
    if not hasattr(os, "posix_spawn") or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel older than 5.3
        return False
    return True


_SUPPORTED = _supported()
_sealed = False


def _seal_inherited_descriptors() -> None:
    """Make every descriptor the server was started with (beyond stdin, stdout and
    stderr) close-on-exec, once: ``posix_spawn`` does not close descriptors as
    ``subprocess`` does, and one inherited from whoever started the server (a pipe of
    a supervisor, say) must not reach every job. Those the server opens itself are
    close-on-exec already (Python's, SQLite's and libpq's)."""
    global _sealed
    if _sealed:
        return
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):  # the directory being listed, closed now
                os.set_inheritable(fd, False)
    _sealed = True


def usable(*, cwd: str | None, as_other_user: bool) -> bool:
    """Whether :func:`spawn` can start a program with these settings."""
    return _SUPPORTED and cwd is None and not as_other_user


class SpawnedProcess:
    """A child started by :func:`spawn`: the parts of ``trio.Process`` the runner uses."""

    def __init__(
        self, pid: int, pidfd: int, stdout: trio.lowlevel.FdStream, stderr: trio.lowlevel.FdStream
    ) -> None:
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        #: the exit status once reaped: the code, or ``-N`` if killed by signal N
        self.returncode: int | None = None
        self._pidfd = pidfd

    async def wait(self) -> int:
        """Wait until the child has exited and reap it; its :attr:`returncode`."""
        if self.returncode is None:
            await trio.lowlevel.wait_readable(self._pidfd)
            # The pidfd is readable once the child has exited: this does not block.
            _, status = os.waitpid(self.pid, os.WNOHANG)  # noqa: ASYNC222
            self.returncode = os.waitstatus_to_exitcode(status)
            os.close(self._pidfd)
        return self.returncode


def _executable(command: str, env: dict[str, str]) -> str:
    """``command``'s path, looked up in the child's ``PATH`` as ``execvpe`` would."""
    if "/" in command:
        return command
    found = shutil.which(command, path=env.get("PATH", os.defpath))
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
    return found


def spawn(argv: list[str], env: dict[str, str]) -> SpawnedProcess:
    """Start ``argv`` (see the module docstring); raises ``OSError`` as ``exec`` failed."""
    _seal_inherited_descriptors()
    path = _executable(argv[0], env)
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(
            path,
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_write, 1),
                (os.POSIX_SPAWN_DUP2, err_write, 2),
            ],
            setsid=True,
            setsigdef=_DEFAULT_SIGNALS,
            setsigmask=(),
        )
    except BaseException as exc:
        for fd in (out_read, err_read):
            os.close(fd)
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = argv[0]
        raise
    finally:
        for fd in (out_write, err_write):
            os.close(fd)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for fd in (out_read, err_read):
            os.close(fd)
        raise
    return SpawnedProcess(pid, pidfd, trio.lowlevel.FdStream(out_read), trio.lowlevel.FdStream(err_read))
