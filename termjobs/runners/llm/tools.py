"""The agent's tools: ``shell(command)``, ``read_file(path)``, ``write_file(path,
content)``, ``list_dir(path)``. A relative path is relative to the run's ``cwd``.

Every call goes through :class:`~termjobs.runners.llm.permissions.Permissions` first. A
refused or failed call is not an exception: it is a :class:`ToolResult` whose text
starts with ``error:`` and says why, which the model sees and can act on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import trio

from termjobs.model import JSONObject
from termjobs.runners.llm.messages import ToolCall, ToolSpec
from termjobs.runners.llm.permissions import Denied, Permissions
from termjobs.runners.llm.shell import run_shell

#: read_file returns at most this much of a file.
READ_LIMIT: Final = 256 * 1024
#: list_dir shows at most this many entries.
LIST_LIMIT: Final = 1000
#: write_file accepts at most this much content.
WRITE_LIMIT: Final = 10 * 1024 * 1024

_PATH: JSONObject = {
    "type": "string",
    "description": "A file path; relative paths are relative to the working directory.",
}

SPECS: Final = {
    "shell": ToolSpec(
        "shell",
        "Run a shell command (/bin/sh -c) in the working directory; returns its exit code and output.",
        {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The command line to run."}},
            "required": ["command"],
        },
    ),
    "read_file": ToolSpec(
        "read_file",
        "Read a text file.",
        {"type": "object", "properties": {"path": _PATH}, "required": ["path"]},
    ),
    "write_file": ToolSpec(
        "write_file",
        "Create or replace a text file with the given content (parent directories are created).",
        {
            "type": "object",
            "properties": {
                "path": _PATH,
                "content": {"type": "string", "description": "The whole new content."},
            },
            "required": ["path", "content"],
        },
    ),
    "list_dir": ToolSpec(
        "list_dir",
        "List a directory: one entry per line, directories end with '/'.",
        {"type": "object", "properties": {"path": _PATH}, "required": ["path"]},
    ),
}


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a call returns to the model; ``error`` is set when it failed or was refused."""

    text: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, reason: str) -> ToolResult:
        return cls(f"error: {reason}", reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShellPolicy:
    """How shell commands run: environment, time limit, output cap."""

    env: Mapping[str, str]
    timeout: float
    output_limit: int


class Toolbox:
    """The tools one run offers, bound to its permissions."""

    def __init__(self, offered: tuple[str, ...], permissions: Permissions, shell: ShellPolicy) -> None:
        self.offered = offered
        self._permissions = permissions
        self._shell = shell

    def specs(self) -> list[ToolSpec]:
        return [SPECS[name] for name in self.offered]

    @staticmethod
    def info(call: ToolCall) -> str:
        """A one-line summary of the call (the ``tool_start`` event shows it)."""
        try:
            args = call.parsed_arguments()
        except ValueError:
            return call.name
        value = args.get("command") if call.name == "shell" else args.get("path")
        if not isinstance(value, str) or not value.strip():
            return call.name
        text = " ".join(value.split())
        return text if len(text) <= 200 else text[:197] + "..."

    async def run(self, call: ToolCall) -> ToolResult:
        """Execute ``call`` if this run offers that tool and allows what it asks."""
        if call.name not in self.offered:
            offered = ", ".join(self.offered) or "none"
            return ToolResult.failed(f"unknown tool {call.name!r}: this agent's tools are {offered}")
        try:
            args = call.parsed_arguments()
            match call.name:
                case "shell":
                    return await self._run_shell(_text_arg(args, "command", call.name))
                case "read_file":
                    path = self._permissions.readable(_text_arg(args, "path", call.name))
                    return await trio.to_thread.run_sync(_read_file, path, abandon_on_cancel=True)
                case "list_dir":
                    path = self._permissions.readable(_text_arg(args, "path", call.name, default="."))
                    return await trio.to_thread.run_sync(_list_dir, path, abandon_on_cancel=True)
                case _:
                    path = self._permissions.writable(_text_arg(args, "path", call.name))
                    content = _text_arg(args, "content", call.name, allow_empty=True)
                    return await trio.to_thread.run_sync(_write_file, path, content, abandon_on_cancel=True)
        except (Denied, ValueError) as exc:
            return ToolResult.failed(str(exc))

    async def _run_shell(self, command: str) -> ToolResult:
        self._permissions.check_shell(command)
        result = await run_shell(
            command,
            cwd=self._permissions.cwd,
            env=self._shell.env,
            time_limit=self._shell.timeout,
            limit=self._shell.output_limit,
        )
        output = result.output if result.output.endswith("\n") or not result.output else result.output + "\n"
        if result.timed_out:
            reason = f"the command did not finish within {self._shell.timeout:g}s and was killed"
            return ToolResult(f"error: {reason}\n{output}", reason)
        if result.exit_code != 0:
            reason = f"the command exited with code {result.exit_code}"
            return ToolResult(f"error: {reason}\n{output}", reason)
        return ToolResult(f"exit code: 0\n{output}")


def _text_arg(
    args: Mapping[str, Any], name: str, tool: str, *, default: str | None = None, allow_empty: bool = False
) -> str:
    value = args.get(name, default)
    if not isinstance(value, str) or (not allow_empty and not value.strip()):
        raise ValueError(f"{tool} needs a {name!r} argument (a string)")
    return value


def _read_file(path: str) -> ToolResult:
    try:
        with open(path, "rb") as handle:
            data = handle.read(READ_LIMIT + 1)
            size = os.fstat(handle.fileno()).st_size
    except IsADirectoryError:
        return ToolResult.failed(f"{path} is a directory: use list_dir")
    except OSError as exc:
        return ToolResult.failed(f"cannot read {path}: {exc.strerror or exc}")
    if b"\x00" in data[:8192]:
        return ToolResult.failed(f"{path} is a binary file ({size} bytes)")
    text = data[:READ_LIMIT].decode("utf-8", "replace")
    if len(data) > READ_LIMIT:
        text += f"\n[... the file has {size} bytes; only the first {READ_LIMIT} are shown]\n"
    return ToolResult(text)


def _list_dir(path: str) -> ToolResult:
    try:
        with os.scandir(path) as entries:
            names = sorted(e.name + ("/" if e.is_dir() else "") for e in entries)
    except NotADirectoryError:
        return ToolResult.failed(f"{path} is not a directory: use read_file")
    except OSError as exc:
        return ToolResult.failed(f"cannot list {path}: {exc.strerror or exc}")
    shown = names[:LIST_LIMIT]
    text = "".join(name + "\n" for name in shown) or "(empty directory)\n"
    if len(names) > LIST_LIMIT:
        text += f"[... {len(names) - LIST_LIMIT} more entries not shown]\n"
    return ToolResult(text)


def _write_file(path: str, content: str) -> ToolResult:
    data = content.encode("utf-8", "surrogatepass")
    if len(data) > WRITE_LIMIT:
        return ToolResult.failed(f"the content is larger than {WRITE_LIMIT} bytes")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # O_NOFOLLOW: a symlink planted at the checked path after the check is not followed.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        return ToolResult.failed(f"cannot write {path}: {exc.strerror or exc}")
    return ToolResult(f"wrote {len(data)} bytes to {path}")
