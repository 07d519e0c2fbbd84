"""What every ``term-llm jobs`` command shares: the global options, the translation
of failures into exit statuses, arguments, and reading a job definition.

Exit status: 0 on success; 1 when the server refuses the request, cannot be reached, or
a payload cannot be read (``Error: <message>`` on stderr, see :class:`JobsGroup`); 2 for
a mistake in the command line itself (click's usage errors, with the usage line).
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncclick as click
import trio

from termjobs.cli import render
from termjobs.cli.client import DEFAULT_SERVER, ApiError, ClientSettings, check_server, parse_timeout
from termjobs.cli.completion import complete_job_ref, complete_run_id
from termjobs.cli.payload import PayloadError, decode_text, parse_payload
from termjobs.clock import SystemClock

SERVER_ENV = "TERM_LLM_JOBS_SERVER"
TOKEN_ENV = "TERM_LLM_JOBS_TOKEN"
CONTEXT = {"help_option_names": ["-h", "--help"]}
JSON_HELP = "Print JSON (for scripts) instead of tables."


@dataclass(frozen=True, slots=True)
class Options:
    """The ``jobs`` group's options, handed to every command as ``ctx.obj``."""

    settings: ClientSettings
    json: bool
    style: render.Style


def _server_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:  # only the late copy of the option (see JobsCommand) has no default
        return None
    try:
        return check_server(value)
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx) from None


def _token_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else value.strip()


def _timeout_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_timeout(value)
    except ValueError as exc:
        raise click.UsageError(str(exc), ctx) from None


_LATE_OPTIONS = {"late_server", "late_token", "late_timeout", "late_json"}


def _late_global_options() -> list[click.Parameter]:
    """The ``jobs`` options again, for use after the command name."""
    return [
        click.Option(["--server", "late_server"], hidden=True, callback=_server_option),
        click.Option(["--token", "late_token"], hidden=True, callback=_token_option),
        click.Option(["--timeout", "late_timeout"], hidden=True, callback=_timeout_option),
        click.Option(["--json", "late_json"], is_flag=True, help=JSON_HELP),
    ]


class JobsCommand(click.Command):
    """A ``jobs`` subcommand. It also accepts the group's options after its name
    (``jobs runs --json``), as the reference CLI's persistent flags allow; given
    there, they win over the same options given before the name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.extend(_late_global_options())

    async def invoke(self, ctx: click.Context) -> Any:
        late = {name: ctx.params.pop(name) for name in _LATE_OPTIONS}
        opts: Options = ctx.obj
        settings = opts.settings
        ctx.obj = Options(
            ClientSettings(
                server=late["late_server"] or settings.server,
                token=settings.token if late["late_token"] is None else late["late_token"],
                timeout=late["late_timeout"] or settings.timeout,
            ),
            json=opts.json or bool(late["late_json"]),
            style=opts.style,
        )
        return await super().invoke(ctx)


class JobsGroup(click.Group):
    """The ``jobs`` group: a failed request or an unreadable payload, raised anywhere
    below it, becomes ``Error: <message>`` on stderr and exit status 1."""

    command_class = JobsCommand

    async def invoke(self, ctx: click.Context) -> Any:
        try:
            return await super().invoke(ctx)
        except (ApiError, PayloadError) as exc:
            # The message may quote server-side text: keep it to one safe line.
            raise click.ClickException(render.one_line(str(exc))) from None


F = TypeVar("F", bound=Callable[..., Any])


def global_options(func: F) -> F:
    """``--server``, ``--token``, ``--timeout`` and ``--json``, for the ``jobs`` group."""
    decorators = [
        click.option(
            "--server",
            metavar="URL",
            envvar=SERVER_ENV,
            show_envvar=True,
            default=DEFAULT_SERVER,
            show_default=True,
            callback=_server_option,
            help="Base URL of the jobs server.",
        ),
        click.option(
            "--token",
            metavar="TOKEN",
            envvar=TOKEN_ENV,
            show_envvar=True,
            callback=_token_option,
            help="Bearer token (the one `term-llm serve` printed).",
        ),
        click.option(
            "--timeout",
            "http_timeout",
            metavar="DURATION",
            default="15s",
            show_default=True,
            callback=_timeout_option,
            help="HTTP timeout, e.g. 15s, 1m, 500ms.",
        ),
        click.option("--json", "as_json", is_flag=True, help=JSON_HELP),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func


def echo(opts: Options, text: str) -> None:
    """Print rendered text (colour codes are only in it when colour is on)."""
    click.echo(text, nl=False, color=opts.style.enabled)


def echo_json(value: Any) -> None:
    """Print pretty JSON."""
    click.echo(render.pretty_json(value), nl=False)


def job_ref(raw: str) -> str:
    """A JOB argument, trimmed; blank is a usage error."""
    ref = raw.strip()
    if not ref:
        raise click.UsageError("job id/name is required")
    return ref


def run_ref(raw: str) -> str:
    """A RUN_ID argument, trimmed; blank is a usage error."""
    run_id = raw.strip()
    if not run_id:
        raise click.UsageError("run id is required")
    return run_id


def now() -> dt.datetime:
    """The current time, for relative times in tables."""
    return SystemClock().now()


def job_argument(func: F) -> F:
    """The JOB argument (id, exact name or unique id prefix), with completion."""
    return click.argument("ref", metavar="JOB", shell_complete=complete_job_ref)(func)


def run_argument(func: F) -> F:
    """The RUN_ID argument, with completion."""
    return click.argument("run_id", metavar="RUN_ID", shell_complete=complete_run_id)(func)


def payload_options(func: F) -> F:
    """``--file`` and ``--data``, the sources of a job definition besides stdin."""
    func = click.option("-d", "--data", metavar="TEXT", help="The job as JSON or YAML text.")(func)
    return click.option(
        "-f", "--file", "file", metavar="PATH", help="Read the job from a JSON or YAML file (- for stdin)."
    )(func)


async def read_payload(file: str | None, data: str | None) -> dict[str, Any]:
    """The job mapping from ``--file``, ``--data`` or (when piped) stdin."""
    if file is not None and data is not None:
        raise click.UsageError("use only one of --file or --data")
    if data is not None:
        return parse_payload(data)
    if file is not None and file != "-":
        try:
            raw = await trio.Path(file).read_bytes()
        except OSError as exc:
            raise PayloadError(f"read {file}: {exc.strerror or exc}") from None
        return parse_payload(decode_text(raw, file))
    stdin = sys.stdin
    # Without an explicit ``--file -``, an interactive terminal would wait silently
    # for input nobody means to type.
    if stdin is None or (file is None and stdin.isatty()):
        raise click.UsageError("missing payload: provide --file, --data, or stdin")
    text = decode_text(await trio.to_thread.run_sync(stdin.buffer.read), "stdin")
    if not text.strip():
        raise PayloadError("empty payload from stdin")
    return parse_payload(text)
