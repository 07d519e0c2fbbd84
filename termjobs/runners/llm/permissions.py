"""What an agent's tools may touch. Fail closed: anything not allowed is denied.

* ``read_file`` / ``list_dir``: under the job's ``cwd``, the server's and the job's
  read directories, or the write directories.
* ``write_file``: under the write directories only.
* ``shell``: only commands matching a ``--shell-allow`` glob (against the whole
  command line), unless the server runs with ``--yolo``.

Paths are resolved before they are checked (``..``, symlinks, relative to ``cwd``),
so neither ``../../etc/passwd`` nor a symlink pointing out of a root gets through.
``--yolo`` lifts every check, as upstream's "no approval" mode does.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass


class Denied(Exception):
    """A tool call that the permissions refuse; the message says why and what to change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Permissions:
    """Resolved roots (real paths) and the shell policy of one run."""

    cwd: str
    read_roots: tuple[str, ...]
    write_roots: tuple[str, ...]
    shell_patterns: tuple[str, ...] = ()
    yolo: bool = False

    @classmethod
    def build(
        cls,
        cwd: str,
        *,
        read_dirs: tuple[str, ...],
        write_dirs: tuple[str, ...],
        shell_patterns: tuple[str, ...],
        yolo: bool,
    ) -> Permissions:
        """Roots resolved now; job directories given relative to ``cwd`` are taken so."""
        base = os.path.realpath(cwd)
        writes = tuple(dict.fromkeys(_real(base, d) for d in write_dirs))
        reads = tuple(dict.fromkeys((base, *(_real(base, d) for d in read_dirs), *writes)))
        return cls(cwd=base, read_roots=reads, write_roots=writes, shell_patterns=shell_patterns, yolo=yolo)

    def resolve(self, raw: str) -> str:
        """The real path ``raw`` names (relative to ``cwd``)."""
        if "\x00" in raw:
            raise Denied("the path contains a NUL character")
        return _real(self.cwd, raw)

    def readable(self, raw: str) -> str:
        """The resolved path, if it may be read or listed; else :class:`Denied`."""
        path = self.resolve(raw)
        if self.yolo or _inside(path, self.read_roots):
            return path
        raise Denied(
            f"reading {raw!r} is not allowed: it resolves to {path}, outside the readable directories "
            f"({', '.join(self.read_roots)}); add it to the job's read_dir or the server's --read-dir"
        )

    def writable(self, raw: str) -> str:
        """The resolved path, if it may be written; else :class:`Denied`."""
        path = self.resolve(raw)
        if self.yolo or _inside(path, self.write_roots):
            return path
        where = ", ".join(self.write_roots) if self.write_roots else "none are configured"
        raise Denied(
            f"writing {raw!r} is not allowed: it resolves to {path}, outside the writable directories "
            f"({where}); add one with the job's write_dir or the server's --write-dir"
        )

    def check_shell(self, command: str) -> None:
        """Raise :class:`Denied` unless ``command`` may run."""
        if self.yolo or any(fnmatch.fnmatchcase(command, pattern) for pattern in self.shell_patterns):
            return
        if not self.shell_patterns:
            raise Denied(
                "shell commands are not allowed on this server: it has no --shell-allow pattern "
                "(and does not run with --yolo)"
            )
        raise Denied(
            f"shell command not allowed: it matches none of the --shell-allow patterns "
            f"({', '.join(self.shell_patterns)})"
        )


def _real(base: str, raw: str) -> str:
    return os.path.realpath(os.path.join(base, raw))


def _inside(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)
