"""Server settings: validated once at start-up, then frozen."""

from __future__ import annotations

import base64
import math
import os
import pwd
import secrets
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sqlalchemy.engine import URL

from termjobs.notify import NotifyTarget, parse_notify
from termjobs.runners.llm.settings import LLMConfigError, LLMSettings, load_llm_settings
from termjobs.storage.engine import resolve_url

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

AuthMode = Literal["bearer", "none"]
TokenSource = Literal["flag", "file", "env", "generated", "none"]


class SettingsError(ValueError):
    """An invalid server option; the message names the flag and the fix."""


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpLimits:
    """What one client may hold of the server; each has a serve flag (README: Reliability)."""

    #: open connections at most; one more is answered 503 and closed
    max_connections: int = 1000
    #: an idle keep-alive connection, or one that has not sent a whole request head,
    #: is closed after this many seconds
    keep_alive_timeout: float = 15.0
    #: while a request body arrives, the longest wait for more of it
    body_timeout: float = 30.0
    #: a response the client does not take within this is abandoned with its connection
    write_timeout: float = 30.0
    #: request line plus headers, in bytes
    max_header_bytes: int = 16 * 1024
    #: request body, in bytes
    max_body_bytes: int = 10 * 1024 * 1024
    #: live event streams (websockets) open at once; one more is answered 503
    max_subscribers: int = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class RunAs:
    """The account ``program`` jobs run as (``--run-as``; the server runs as root)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything ``term-llm serve jobs`` was configured with."""

    host: str = "127.0.0.1"
    port: int = 8080
    auth: AuthMode = "bearer"
    token: str | None = None
    token_source: TokenSource = "none"
    jobs_workers: int = 4
    db_url: URL
    shutdown_grace: float = 10.0
    #: on shutdown, seconds /readyz answers 503 before the listener closes
    shutdown_drain: float = 0.0
    request_timeout: float = 10.0
    #: a cluster (PostgreSQL): how long a silent server is presumed alive
    lease_seconds: float = 15.0
    retention_days: int = 30
    max_runs_per_job: int = 1000
    #: events a live-stream subscriber may fall behind by before it is closed as lagged
    stream_buffer: int = 4096
    limits: HttpLimits = HttpLimits()
    #: serve /metrics without a token
    metrics_public: bool = False
    #: origins allowed to call the API from a browser (``*`` = any)
    cors_origins: tuple[str, ...] = ()
    #: the webhook of jobs that have none of their own (``--notify-url``, ``--notify-secret``)
    notify_url: str | None = None
    notify_secret: str | None = None

    def default_notify(self) -> tuple[NotifyTarget, ...]:
        """The default webhook as a target (validated by :func:`build_settings`)."""
        if self.notify_url is None:
            return ()
        return parse_notify([{"url": self.notify_url, "secret": self.notify_secret}])

    #: providers, agents and tool permissions of the llm runner
    llm: LLMSettings = field(default_factory=LLMSettings)
    run_as: RunAs | None = None


def generate_token() -> str:
    """32 random bytes, base64url without padding (43 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def read_token_file(path: str) -> str:
    """The token stored in ``path`` (surrounding whitespace removed)."""
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeError) as exc:
        raise SettingsError(
            f"cannot read --token-file {path!r}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    token = text.strip()
    if not token or any(ch.isspace() for ch in token):
        raise SettingsError(f"--token-file {path!r} must hold one token (no spaces), and nothing else")
    return token


def token_file_is_private(path: str) -> bool:
    """Whether only its owner may read ``path`` (no group or other permissions)."""
    try:
        mode = os.stat(Path(path).expanduser()).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode) or mode & 0o077 == 0


def resolve_run_as(user: str | None) -> RunAs | None:
    """The account of ``--run-as`` (a name or a numeric uid); only root may switch."""
    if not user:
        return None
    if os.geteuid() != 0:
        raise SettingsError(f"--run-as needs the server to run as root (it runs as uid {os.geteuid()})")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise SettingsError(f"--run-as: no such user {user!r}") from None
    if entry.pw_uid == 0:
        raise SettingsError("--run-as root gives jobs everything the server has; name an unprivileged user")
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, home=entry.pw_dir)


def resolve_auth(
    *,
    host: str,
    auth: str | None,
    no_auth: bool | None,
    flag_token: str | None,
    env_token: str | None,
    file_token: str | None = None,
) -> tuple[AuthMode, str | None, TokenSource]:
    """Auth mode, token and where the token came from, per the serve flags:
    ``--token``, else the token file, else ``$TERM_LLM_SERVE_TOKEN``, else a new one."""
    mode = (auth or "bearer").strip().lower() or "bearer"
    if mode not in ("bearer", "none"):
        raise SettingsError(f"invalid --auth {auth!r} (must be bearer or none)")
    if no_auth is not None:
        implied = "none" if no_auth else "bearer"
        if auth is not None and implied != mode:
            raise SettingsError(f"--auth {mode} conflicts with --no-auth={str(no_auth).lower()}")
        mode = implied
    if mode == "none":
        if host.strip().lower() not in LOOPBACK_HOSTS:
            raise SettingsError(f"--auth none is only allowed on loopback hosts (got {host!r})")
        return "none", None, "none"
    if flag_token and flag_token.strip():
        return "bearer", flag_token.strip(), "flag"
    if file_token:
        return "bearer", file_token, "file"
    if env_token and env_token.strip():
        return "bearer", env_token.strip(), "env"
    return "bearer", generate_token(), "generated"


def build_settings(
    *,
    host: str,
    port: int,
    auth: str | None,
    no_auth: bool | None,
    token: str | None,
    env_token: str | None,
    jobs_workers: int,
    db: str | None,
    shutdown_grace: float,
    retention_days: int = 30,
    max_runs_per_job: int = 1000,
    limits: HttpLimits | None = None,
    metrics_public: bool = False,
    cors_origins: tuple[str, ...] = (),
    notify_url: str | None = None,
    notify_secret: str | None = None,
    shutdown_drain: float = 0.0,
    lease_seconds: float = 15.0,
    llm: LLMSettings | None = None,
    stream_buffer: int = 4096,
    token_file: str | None = None,
    run_as: str | None = None,
) -> Settings:
    """Validate the serve options into :class:`Settings`."""
    if not 1 <= port <= 65535:
        raise SettingsError(f"invalid --port {port} (must be 1-65535)")
    if jobs_workers <= 0:
        raise SettingsError(f"invalid --jobs-workers {jobs_workers} (must be > 0)")
    if not math.isfinite(shutdown_drain) or not 0 <= shutdown_drain <= 300:
        raise SettingsError(f"invalid --shutdown-drain {shutdown_drain:g} (must be 0 to 300 seconds)")
    if not math.isfinite(lease_seconds) or not 3 <= lease_seconds <= 600:
        raise SettingsError(f"invalid --lease-seconds {lease_seconds:g} (must be 3 to 600 seconds)")
    if not math.isfinite(shutdown_grace) or shutdown_grace < 0:
        raise SettingsError(f"invalid --shutdown-grace {shutdown_grace:g} (must be >= 0)")
    if retention_days <= 0:
        raise SettingsError(f"invalid --retention-days {retention_days} (must be > 0)")
    if max_runs_per_job <= 0:
        raise SettingsError(f"invalid --max-runs-per-job {max_runs_per_job} (must be > 0)")
    if stream_buffer < 16:
        raise SettingsError(f"invalid --stream-buffer {stream_buffer} (must be >= 16)")
    limits = limits or HttpLimits()
    check_limits(limits)
    if token and token_file:
        raise SettingsError("give the token with --token or with --token-file, not both")
    file_token = read_token_file(token_file) if token_file else None
    mode, resolved, source = resolve_auth(
        host=host, auth=auth, no_auth=no_auth, flag_token=token, env_token=env_token, file_token=file_token
    )
    try:
        url = resolve_url(db)
    except ValueError as exc:
        raise SettingsError(f"invalid --db: {exc}") from None
    settings = Settings(
        host=host,
        port=port,
        auth=mode,
        token=resolved,
        token_source=source,
        jobs_workers=jobs_workers,
        db_url=url,
        shutdown_grace=shutdown_grace,
        retention_days=retention_days,
        max_runs_per_job=max_runs_per_job,
        limits=limits,
        metrics_public=metrics_public,
        cors_origins=check_origins(cors_origins),
        notify_url=notify_url,
        notify_secret=notify_secret,
        shutdown_drain=shutdown_drain,
        lease_seconds=lease_seconds,
        llm=llm or LLMSettings(),
        stream_buffer=stream_buffer,
        run_as=resolve_run_as(run_as),
    )
    _check_notify(notify_url, notify_secret)
    return settings


def _check_notify(url: str | None, secret: str | None) -> None:
    if url is None:
        if secret is not None:
            raise SettingsError("--notify-secret needs --notify-url")
        return
    try:
        parse_notify([{"url": url, "secret": secret}])
    except ValueError as exc:
        message = (
            str(exc).replace("notify[0].url", "--notify-url").replace("notify[0].secret", "--notify-secret")
        )
        raise SettingsError(f"invalid {message}") from None


def check_origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    """``--cors-origin`` values: ``*`` or ``scheme://host[:port]``, without a path."""
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if origin != "*" and (scheme not in ("http", "https") or not sep or not rest or "/" in rest):
            raise SettingsError(
                f"invalid --cors-origin {origin!r} (use * or an origin such as https://ops.example.com)"
            )
    return tuple(origins)


def build_llm_settings(
    *,
    config: str | None,
    env: Mapping[str, str],
    provider: str | None = None,
    read_dirs: Sequence[str] = (),
    write_dirs: Sequence[str] = (),
    shell_allow: Sequence[str] = (),
    tools: str | None = None,
    system_message: str | None = None,
    yolo: bool = False,
) -> LLMSettings:
    """Read ``--config`` (or the default file) and check it with the llm serve flags."""
    try:
        return load_llm_settings(
            config=config,
            env=env,
            provider=provider,
            read_dirs=read_dirs,
            write_dirs=write_dirs,
            shell_allow=shell_allow,
            tools=tools,
            system_message=system_message,
            yolo=yolo,
        )
    except LLMConfigError as exc:
        raise SettingsError(f"invalid LLM configuration: {exc}") from None


def check_limits(limits: HttpLimits) -> None:
    """Raise :class:`SettingsError` naming the flag of the first unusable limit."""
    for flag, value, low in (
        ("--max-connections", limits.max_connections, 1),
        ("--max-header-bytes", limits.max_header_bytes, 1024),
        ("--max-body-bytes", limits.max_body_bytes, 1024),
        ("--max-subscribers", limits.max_subscribers, 1),
    ):
        if value < low:
            raise SettingsError(f"invalid {flag} {value} (must be >= {low})")
    for flag, seconds in (
        ("--keep-alive-timeout", limits.keep_alive_timeout),
        ("--read-timeout", limits.body_timeout),
        ("--write-timeout", limits.write_timeout),
    ):
        if not math.isfinite(seconds) or seconds <= 0:
            raise SettingsError(f"invalid {flag} {seconds:g} (must be a number of seconds > 0)")
