"""``term-llm serve jobs``: start the jobs server.

The server stack (quart, hypercorn, SQLAlchemy) is imported inside the functions that
run it, so that ``term-llm jobs ...``, which imports this module to build the command
tree, starts quickly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, TypeVar

import asyncclick as click
import trio

if TYPE_CHECKING:
    from termjobs.config import Settings

logger = logging.getLogger("termjobs")

PLATFORMS = ("web", "api", "jobs", "telegram")


def _platforms(positional: tuple[str, ...], options: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for raw in (*positional, *options):
        for part in raw.split(","):
            name = part.strip().lower()
            if name and name not in names:
                names.append(name)
    for name in names:
        if name not in PLATFORMS:
            raise click.UsageError(f"unknown platform {name!r} (valid: {', '.join(PLATFORMS)})")
    if not names:
        raise click.UsageError("no platforms specified: run `term-llm serve jobs`")
    others = [name for name in names if name != "jobs"]
    if others:
        raise click.UsageError(f"platform {others[0]!r} is not part of termjobs; only 'jobs' can be served")
    return names


def banner(settings: Settings, url: str) -> str:
    """The start-up banner printed on stderr."""
    from termjobs.storage.engine import redact

    lines = [f"term-llm serve listening on {url}"]
    if settings.auth == "none":
        lines.append("auth: disabled")
    else:
        lines.append("auth: bearer required")
        note = {
            "flag": "(from --token)",
            "file": "(from --token-file)",
            "env": "(from $TERM_LLM_SERVE_TOKEN)",
            "generated": "(auto-generated; export TERM_LLM_SERVE_TOKEN to persist)",
        }.get(settings.token_source, "")
        shown = "(not shown)" if settings.token_source == "file" else settings.token
        lines.append(f"token: {shown} {note}".rstrip())
    lines.append(f"jobs workers: {settings.jobs_workers}")
    lines.append(f"dashboard: {url}/ui/")
    lines.append(f"api: {url}/openapi.json (OpenAPI 3.1), metrics: {url}/metrics, readiness: {url}/readyz")
    if settings.run_as is not None:
        lines.append(f"program jobs run as: {settings.run_as.name} (uid {settings.run_as.uid})")
    lines.append(f"database: {redact(settings.db_url)}")
    if settings.db_url.get_backend_name() == "postgresql":
        lines.append(
            f"cluster: every server on this database shares its jobs (lease {settings.lease_seconds:g}s; "
            "see: term-llm jobs cluster)"
        )
    lines.append(llm_banner(settings))
    return "\n".join(lines)


def llm_banner(settings: Settings) -> str:
    """The banner's line about LLM providers."""
    llm = settings.llm
    if not llm.providers:
        return f"llm providers: none (llm runs will fail; configure providers in {llm.config_path})"
    names = []
    for provider in llm.providers:
        text = provider.describe()
        if provider.name == (llm.provider or llm.default_provider or "").split(":", 1)[0]:
            text += " [default]"
        names.append(text)
    return "llm providers: " + ", ".join(names)


def warn_missing_keys(settings: Settings, env: dict[str, str]) -> None:
    """Log providers whose key variable is not set (their runs will fail saying so)."""
    for provider in settings.llm.providers:
        if provider.api_key_env and not env.get(provider.api_key_env):
            logger.warning(
                "llm provider %r: $%s is not set; its runs will fail until it is exported",
                provider.name,
                provider.api_key_env,
            )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("platforms", nargs=-1)
@click.option("--platform", "platform_options", multiple=True, help="Platform to serve (only: jobs).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on.")
@click.option(
    "--token",
    default=None,
    help="Bearer token clients must send [env: TERM_LLM_SERVE_TOKEN]. Prefer --token-file: "
    "a command line is visible to every process of the same user.",
)
@click.option(
    "--token-file",
    envvar="TERM_LLM_SERVE_TOKEN_FILE",
    default=None,
    help="Read the bearer token from this file (mode 0600) [env: TERM_LLM_SERVE_TOKEN_FILE].",
)
@click.option("--auth", "auth_mode", default=None, help="bearer (default) or none.")
@click.option(
    "--no-auth",
    "--allow-no-auth",
    "no_auth",
    is_flag=True,
    default=None,
    help="Disable authentication (loopback hosts only).",
)
@click.option(
    "--jobs-workers",
    type=int,
    default=4,
    show_default=True,
    help="Maximum number of runs executing at once (a run's program or agent).",
)
@click.option(
    "--db",
    envvar="TERM_LLM_JOBS_DB",
    default=None,
    help="Database: sqlite:///PATH, postgresql://..., or a file path "
    "[env: TERM_LLM_JOBS_DB; default: $XDG_DATA_HOME/term-llm/jobs_v2.db].",
)
@click.option(
    "--shutdown-grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds running runs get to finish on shutdown before they are stopped.",
)
@click.option(
    "--shutdown-drain",
    type=float,
    default=0.0,
    show_default=True,
    help="On shutdown, seconds to keep serving with /readyz failing, so load balancers stop sending.",
)
@click.option(
    "--lease-seconds",
    type=float,
    default=15.0,
    show_default=True,
    help="Cluster (PostgreSQL): how long a silent server is presumed alive before others take its jobs.",
)
@click.option(
    "--retention-days",
    type=int,
    default=30,
    show_default=True,
    help="Delete finished runs (and their events) older than this many days.",
)
@click.option(
    "--max-runs-per-job",
    type=int,
    default=1000,
    show_default=True,
    help="Keep at most this many finished runs per job (the newest).",
)
@click.option(
    "--max-connections",
    type=int,
    default=1000,
    show_default=True,
    help="Open client connections at most; more are answered 503 (lowered to fit the open-files limit).",
)
@click.option(
    "--keep-alive-timeout",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds an idle connection (or an unfinished request head) is kept open.",
)
@click.option(
    "--read-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for more of a request body before giving up on it.",
)
@click.option(
    "--write-timeout",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds a client may take to receive a response before its connection is dropped.",
)
@click.option(
    "--max-header-bytes",
    type=int,
    default=16 * 1024,
    show_default=True,
    help="Largest request line plus headers; larger is answered 431.",
)
@click.option(
    "--max-body-bytes",
    type=int,
    default=10 * 1024 * 1024,
    show_default=True,
    help="Largest request body; larger is answered 413.",
)
@click.option(
    "--metrics-public", is_flag=True, default=False, help="Serve /metrics without the bearer token."
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    help="Let browser pages from this origin call the API (repeatable; * for any).",
)
@click.option(
    "--notify-url", default=None, help="Webhook told when a run ends, for jobs without their own notify."
)
@click.option(
    "--notify-secret",
    envvar="TERM_LLM_NOTIFY_SECRET",
    default=None,
    help="whsec_... secret signing --notify-url messages [env: TERM_LLM_NOTIFY_SECRET].",
)
@click.option(
    "--config",
    "llm_config",
    default=None,
    help="LLM configuration file: providers, agents_dir [default: $XDG_CONFIG_HOME/term-llm/config.yaml].",
)
@click.option("--provider", default=None, help="LLM provider for every llm job: NAME or NAME:MODEL.")
@click.option("--read-dir", "read_dirs", multiple=True, help="A directory agents may read (repeatable).")
@click.option(
    "--write-dir", "write_dirs", multiple=True, help="A directory agents may write, and read (repeatable)."
)
@click.option(
    "--shell-allow",
    "shell_allow",
    multiple=True,
    help="A glob a shell command line must match for agents to run it, e.g. 'git log*' (repeatable).",
)
@click.option("--tools", default=None, help="Narrow every agent's tools: all, none, or a comma list.")
@click.option("--system-message", default=None, help="Text added to every agent's system prompt.")
@click.option(
    "--yolo",
    is_flag=True,
    default=False,
    help="No permission checks for agents: any shell command, any file. Only for sandboxes.",
)
@click.option(
    "--max-subscribers",
    type=int,
    default=1000,
    show_default=True,
    help="Live event streams (websockets) open at once; one more is answered 503.",
)
@click.option(
    "--stream-buffer",
    type=int,
    default=4096,
    show_default=True,
    help="Events a live-stream subscriber may fall behind by before it is closed as lagged (4408).",
)
@click.option(
    "--run-as",
    default=None,
    help="Run program jobs as this user (name or uid); the server must run as root.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"], case_sensitive=False),
    help="json: one JSON object per line (time, level, logger, message, job_id, run_id).",
)
async def serve(
    platforms: tuple[str, ...],
    platform_options: tuple[str, ...],
    host: str,
    port: int,
    token: str | None,
    token_file: str | None,
    auth_mode: str | None,
    no_auth: bool | None,
    jobs_workers: int,
    db: str | None,
    shutdown_grace: float,
    shutdown_drain: float,
    lease_seconds: float,
    retention_days: int,
    max_runs_per_job: int,
    max_connections: int,
    keep_alive_timeout: float,
    read_timeout: float,
    write_timeout: float,
    max_header_bytes: int,
    max_body_bytes: int,
    metrics_public: bool,
    cors_origins: tuple[str, ...],
    notify_url: str | None,
    notify_secret: str | None,
    llm_config: str | None,
    provider: str | None,
    read_dirs: tuple[str, ...],
    write_dirs: tuple[str, ...],
    shell_allow: tuple[str, ...],
    tools: str | None,
    system_message: str | None,
    yolo: bool,
    max_subscribers: int,
    stream_buffer: int,
    run_as: str | None,
    log_level: str,
    log_format: str,
) -> None:
    """Start a server. PLATFORMS must be `jobs`: `term-llm serve jobs --port 8080`."""
    from termjobs.config import HttpLimits, SettingsError, build_llm_settings, build_settings

    _platforms(platforms, platform_options)
    try:
        llm = build_llm_settings(
            config=llm_config,
            env=os.environ,
            provider=provider,
            read_dirs=read_dirs,
            write_dirs=write_dirs,
            shell_allow=shell_allow,
            tools=tools,
            system_message=system_message,
            yolo=yolo,
        )
        settings = build_settings(
            host=host,
            port=port,
            auth=auth_mode,
            no_auth=no_auth,
            token=token,
            token_file=token_file,
            run_as=run_as,
            env_token=os.environ.get("TERM_LLM_SERVE_TOKEN"),
            jobs_workers=jobs_workers,
            db=db,
            shutdown_grace=shutdown_grace,
            retention_days=retention_days,
            max_runs_per_job=max_runs_per_job,
            stream_buffer=stream_buffer,
            limits=HttpLimits(
                max_connections=max_connections,
                keep_alive_timeout=keep_alive_timeout,
                body_timeout=read_timeout,
                write_timeout=write_timeout,
                max_header_bytes=max_header_bytes,
                max_body_bytes=max_body_bytes,
                max_subscribers=max_subscribers,
            ),
            metrics_public=metrics_public,
            cors_origins=cors_origins,
            notify_url=notify_url,
            notify_secret=notify_secret,
            shutdown_drain=shutdown_drain,
            lease_seconds=lease_seconds,
            llm=llm,
        )
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    from termjobs import logs

    logs.configure(log_level, "json" if log_format.lower() == "json" else "text")
    warn_missing_keys(settings, dict(os.environ))
    _hide_secrets(settings, token_file)
    await serve_until_signal(settings)


def _hide_secrets(settings: Settings, token_file: str | None) -> None:
    """Keep the token (and a database password) away from jobs: out of the environment
    they inherit, and out of what /proc shows of this process."""
    from termjobs.cli.conceal import conceal, drop_token_variables
    from termjobs.config import token_file_is_private

    drop_token_variables()
    conceal([s for s in (settings.token, settings.db_url.password) if isinstance(s, str)])
    if token_file and not token_file_is_private(token_file):
        logger.warning("--token-file %s can be read by other users: chmod 600 it", token_file)


async def serve_until_signal(settings: Settings) -> None:
    """Run the server until SIGINT or SIGTERM, then shut down gracefully.

    A second signal during shutdown exits at once; runs still in flight are then
    recorded as lost by the next start's crash recovery.
    """
    from termjobs.service import run_service

    stop = trio.Event()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if stop.is_set():
                    print("second signal: exiting immediately", file=sys.stderr, flush=True)
                    os._exit(130)
                logger.info("%s received: shutting down gracefully", signal.Signals(signum).name)
                stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals)
        try:
            async with trio.open_nursery() as server:
                urls = await server.start(
                    lambda task_status: run_service(
                        settings, shutdown_trigger=stop.wait, task_status=task_status
                    )
                )
                print(banner(settings, urls[0]), file=sys.stderr, flush=True)
        except BaseExceptionGroup as group:
            bind_error = _first(group, OSError)
            if bind_error is None:
                raise
            raise click.ClickException(
                f"cannot listen on {settings.host}:{settings.port}: {bind_error.strerror or bind_error}"
            ) from None
        nursery.cancel_scope.cancel()  # the server has stopped; so does the signal watcher


E = TypeVar("E", bound=BaseException)


def _first(group: BaseExceptionGroup[BaseException], kind: type[E]) -> E | None:
    for exc in group.exceptions:
        if isinstance(exc, kind):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
    return None
