"""A private PostgreSQL instance for the outage drill: its own data directory and port.

The drill must never stop or reconfigure a shared server, so it runs its own
``postgres`` (Debian's binaries under ``/usr/lib/postgresql/*/bin``) as a child
process, stops it by pid (SIGINT: fast shutdown) and starts it again on the same data
directory and port. As root, ``initdb`` and ``postgres`` refuse to run, so both are
started as the ``postgres`` user through ``setpriv`` (which execs: the child's pid is
the server's pid).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from termjobs.testing import free_port


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries here, or they could not start; the message says why."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise PostgresUnavailable("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


class PrivatePostgres:
    """One throw-away PostgreSQL server on ``127.0.0.1:port`` (see the module docstring)."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="termjobs-drill-pg-"))
        self.data = self.root / "data"
        self.process: subprocess.Popen[bytes] | None = None
        self._user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable("running as root and there is no 'postgres' user") from None
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _argv(self, *argv: str) -> list[str]:
        if self._user is None:
            return list(argv)
        return [
            "setpriv",
            f"--reuid={self._user.pw_uid}",
            f"--regid={self._user.pw_gid}",
            "--init-groups",
            *argv,
        ]

    def init(self) -> None:
        """Create the data directory (trust authentication, loopback only)."""
        done = subprocess.run(
            self._argv(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres"),
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {done.stderr.decode(errors='replace')[-500:]}")

    def start(self, *, within: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            self._argv(
                str(self.bindir / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.root),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=50",
                "-c",
                "fsync=off",
            ),
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "server.log", "ab"),  # noqa: SIM115 (the child keeps it)
        )
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if ready.returncode == 0:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise PostgresUnavailable(f"postgres did not start; see {self.root / 'server.log'}")

    def stop(self, *, within: float = 30.0) -> None:
        """Fast shutdown (SIGINT to our server's pid): clients are disconnected."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(within)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP to its processes): connections stay open, nothing answers."""
        self._signal_all(signal.SIGSTOP)

    def unpause(self) -> None:
        self._signal_all(signal.SIGCONT)

    def _signal_all(self, sig: signal.Signals) -> None:
        for pid in self._pids():
            with contextlib.suppress(ProcessLookupError):  # a backend that just exited
                os.kill(pid, sig)

    def _pids(self) -> list[int]:
        """The postmaster and its children (ours only: found by parent pid)."""
        if self.process is None:
            return []
        pids = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.process.pid:
                pids.append(int(entry.name))
        return pids

    def close(self) -> None:
        """Stop the server and remove its files (whatever fails on the way)."""
        try:
            self.unpause()
        finally:
            try:
                self.stop()
            finally:
                shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        self.init()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
