"""Start a program without forking the server: ``posix_spawn`` and a pidfd.

``trio.lowlevel.open_process`` hands each spawn to a worker thread, which runs
``subprocess.Popen``'s Python set-up and then forks; the thread must win the GIL back
from the busy event loop at every step. :func:`spawn` starts the child from the event
loop itself with ``posix_spawn`` (glibc's clone with ``CLONE_VFORK``: no copy of the
server's memory, the loop waits only until the child has called ``exec``) and waits for
it through a pidfd, which the event loop polls like a socket. On this machine it costs
the server 0.4 ms of CPU per child instead of 0.9 ms (``benchmarks/RESULTS.md``).
``os.posix_spawn`` holds the GIL until the child has called ``exec``; the C library's,
called through ctypes (:class:`_Libc`), lets the server's other threads (the storage
writer) run meanwhile. A command is looked up by the C library (``posix_spawnp``) in
the server's ``PATH``, or, when the job sets a ``PATH`` of its own, by
:func:`_executable` in that one, as ``execvpe`` would.

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
import ctypes
import errno
import os
import shutil
import signal
from collections.abc import Mapping
from typing import Any

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


def _executable(command: str, path: str | None) -> str:
    """``command``'s path, looked up in the child's ``PATH`` as ``execvpe`` would."""
    if "/" in command:
        return command
    found = shutil.which(command, path=os.defpath if path is None else path)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), command)
    return found


class _Libc:
    """The C library's ``posix_spawn`` and ``posix_spawnp``, called through ctypes.

    ``os.posix_spawn`` holds the GIL for the whole call, and the call lasts until the
    child has called ``exec``: about 0.3 ms per program on this machine, in which no
    other thread of the server (the storage writer) can run. ctypes gives the GIL up
    around a foreign call. Only the spawn itself is called that way; the calls that set
    up its arguments take microseconds and keep the GIL (a thread waiting for it would
    otherwise take it at every one). The spawn attributes never change: they are set
    once."""

    # <spawn.h>, the same in glibc and musl
    SETSIGDEF = 0x04
    SETSIGMASK = 0x08
    SETSID = 0x80
    #: glibc's posix_spawnattr_t is 336 bytes, posix_spawn_file_actions_t 80, sigset_t 128
    OPAQUE_WORDS = 128
    DEVNULL = os.fsencode(os.devnull)

    def __init__(self) -> None:
        gil_kept = ctypes.PyDLL(None)
        gil_free = ctypes.CDLL(None)
        pointer, text, number = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        strings = ctypes.POINTER(ctypes.c_char_p)
        self._fa_init = self._function(gil_kept, "posix_spawn_file_actions_init", pointer)
        self._fa_destroy = self._function(gil_kept, "posix_spawn_file_actions_destroy", pointer)
        self._fa_open = self._function(
            gil_kept, "posix_spawn_file_actions_addopen", pointer, number, text, number, ctypes.c_uint
        )
        self._fa_dup2 = self._function(gil_kept, "posix_spawn_file_actions_adddup2", pointer, number, number)
        self._spawn = self._function(
            gil_free, "posix_spawn", pointer, text, pointer, pointer, strings, strings
        )
        self._spawnp = self._function(
            gil_free, "posix_spawnp", pointer, text, pointer, pointer, strings, strings
        )
        self._base: _CEntries | None = None
        self._attributes = self._opaque()
        default, mask = self._opaque(), self._opaque()
        empty = self._function(gil_kept, "sigemptyset", pointer)
        add = self._function(gil_kept, "sigaddset", pointer, number)
        self._check(empty(default), empty(mask))
        self._check(*(add(default, sig) for sig in _DEFAULT_SIGNALS))
        self._check(
            self._function(gil_kept, "posix_spawnattr_init", pointer)(self._attributes),
            self._function(gil_kept, "posix_spawnattr_setflags", pointer, ctypes.c_short)(
                self._attributes, self.SETSID | self.SETSIGDEF | self.SETSIGMASK
            ),
            self._function(gil_kept, "posix_spawnattr_setsigdefault", pointer, pointer)(
                self._attributes, default
            ),
            self._function(gil_kept, "posix_spawnattr_setsigmask", pointer, pointer)(self._attributes, mask),
        )

    @staticmethod
    def _function(library: ctypes.CDLL, name: str, *argtypes: Any) -> Any:
        function = getattr(library, name)
        function.argtypes, function.restype = argtypes, ctypes.c_int
        return function

    @classmethod
    def _opaque(cls) -> ctypes.Array[ctypes.c_uint64]:
        return (ctypes.c_uint64 * cls.OPAQUE_WORDS)()

    @staticmethod
    def _check(*codes: int) -> None:
        for code in codes:
            if code:
                raise OSError(code, os.strerror(code))

    def spawn(self, command: str, argv: list[str], env: Environ, out: int, err: int, *, search: bool) -> int:
        """Start ``command`` (looked up in the server's ``PATH`` if ``search``) with
        stdin ``/dev/null`` and ``out``/``err`` as its stdout and stderr; its pid."""
        args = [os.fsencode(arg) for arg in argv]
        if any(b"\0" in arg for arg in args):  # the command is argv[0] or found for it
            raise ValueError("embedded null byte")
        c_argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
        c_env, _strings = self._environ(env)  # the strings the array points to, held
        actions = self._opaque()
        pid = ctypes.c_int()
        self._check(self._fa_init(actions))
        try:
            self._check(
                self._fa_open(actions, 0, self.DEVNULL, os.O_RDONLY, 0),
                self._fa_dup2(actions, out, 1),
                self._fa_dup2(actions, err, 2),
            )
            start = self._spawnp if search else self._spawn
            code = start(ctypes.byref(pid), os.fsencode(command), actions, self._attributes, c_argv, c_env)
        finally:
            self._fa_destroy(actions)
        if code:
            raise OSError(code, os.strerror(code), argv[0])
        return pid.value

    def _environ(self, env: Environ) -> tuple[ctypes.Array[ctypes.c_char_p], _CEntries]:
        """``env`` as the C library takes it: an array of ``NAME=value`` strings, then
        ``NULL``; and what holds the base's strings (to be kept until the call).

        The server's part is encoded, checked and laid out once (see :class:`Environ`);
        a run's own variables are added after a copy of its pointers."""
        if not env.apart():
            whole = _CEntries(env.merged())
            return whole.array, whole
        base = self._base
        if base is None or base.variables is not env.base:
            base = self._base = _CEntries(env.base)  # a runner's base: built once
        own: list[ctypes.c_char_p | bytes | None] = [_encoded(key, value) for key, value in env.own.items()]
        size = len(base.entries)
        array = (ctypes.c_char_p * (size + len(own) + 1))()
        ctypes.memmove(array, base.array, size * ctypes.sizeof(ctypes.c_char_p))
        array[size : size + len(own)] = own  # the array holds these
        return array, base


class _CEntries:
    """Variables encoded as ``NAME=value`` strings, and a ``NULL``-ended C array of them."""

    def __init__(self, variables: Mapping[str, str]) -> None:
        self.variables = variables
        self.entries = [_encoded(key, value) for key, value in variables.items()]
        self.array = (ctypes.c_char_p * (len(self.entries) + 1))(*self.entries, None)


def _encoded(key: str, value: str) -> bytes:
    if not key or "=" in key:
        raise ValueError(f"illegal environment variable name: {key!r}")
    entry = os.fsencode(f"{key}={value}")
    if b"\0" in entry:
        raise ValueError("embedded null byte")
    return entry


class Environ:
    """A program's environment: ``base``, the same for every program a runner starts
    (the server's variables), and ``own``, a run's (its ids, its job's variables, its
    marker), which win over the base's.

    ``posix_spawn`` takes an environment as an array of ``NAME=value`` strings. Encoded,
    checked and copied into a new array for every program, the server's variables cost
    the event loop a few per cent of its time with no-op programs fired together, more
    the more variables the server has (``benchmarks/RESULTS.md``); kept apart, the base is
    laid out once (:class:`_Libc` keeps it while the runner's ``base`` is the same
    object, which must not change) and a run encodes only its own."""

    __slots__ = ("base", "own")

    def __init__(self, base: Mapping[str, str], own: Mapping[str, str]) -> None:
        self.base = base
        self.own = own

    def get(self, key: str) -> str | None:
        return self.own.get(key, self.base.get(key))

    def apart(self) -> bool:
        """Whether no variable of ``own`` is in ``base`` too (the usual case)."""
        return not any(key in self.base for key in self.own)

    def merged(self) -> dict[str, str]:
        return {**self.base, **self.own}


def _libc() -> _Libc | None:
    try:
        return _Libc()
    except (AttributeError, OSError):  # no such C library functions: os.posix_spawn
        return None


_LIBC = _libc() if _SUPPORTED else None


def _start(argv: list[str], env: Environ, out: int, err: int) -> int:
    # The server's own PATH is the child's (the usual case): the C library looks the
    # command up, as execvp does, without a Python lookup of every PATH entry first.
    path = env.get("PATH")
    search = "/" not in argv[0] and path == os.environ.get("PATH")
    command = argv[0] if search else _executable(argv[0], path)
    if _LIBC is not None:
        return _LIBC.spawn(command, argv, env, out, err, search=search)
    start = os.posix_spawnp if search else os.posix_spawn
    return start(
        command,
        argv,
        env.merged(),
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, err, 2),
        ],
        setsid=True,
        setsigdef=_DEFAULT_SIGNALS,
        setsigmask=(),
    )


def spawn(argv: list[str], env: Environ) -> SpawnedProcess:
    """Start ``argv`` (see the module docstring); raises ``OSError`` as ``exec`` failed."""
    _seal_inherited_descriptors()
    out_read, out_write = os.pipe2(os.O_CLOEXEC)
    err_read, err_write = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _start(argv, env, out_write, err_write)
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
