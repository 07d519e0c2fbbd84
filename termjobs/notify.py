"""Completion webhooks: who to tell when a run ends, and how the message is signed.

A job may list ``notify`` targets (``url``, ``on``: statuses, optional ``secret``); the
server may set a default target (``--notify-url``) used by jobs without their own.
Messages follow the Standard Webhooks convention: ``webhook-id``, ``webhook-timestamp``
and, with a secret (``whsec_`` + base64), ``webhook-signature: v1,<base64 HMAC-SHA256
of "{id}.{timestamp}.{body}">``. Pure functions; delivery is
``termjobs.actors.notifier``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from termjobs.model import TERMINAL_STATUSES, ExitReason, JSONObject, JSONValue, Run, RunnerType, RunStatus

if TYPE_CHECKING:
    from termjobs.jobdef import Job

#: What a job's responses show instead of a secret (secrets are write-only).
MASK: Final = "***"
#: ``on`` when a target does not say: every final status but ``skipped``.
DEFAULT_ON: Final = frozenset(TERMINAL_STATUSES - {RunStatus.SKIPPED})
SECRET_PREFIX: Final = "whsec_"
EXCERPT_BYTES: Final = 2048
MAX_TARGETS: Final = 10


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """One webhook receiver."""

    url: str
    on: frozenset[RunStatus] = DEFAULT_ON
    secret: str | None = None

    def wants(self, status: RunStatus) -> bool:
        """Whether a run ending with ``status`` is reported here."""
        return status in self.on


def parse_notify(value: JSONValue) -> tuple[NotifyTarget, ...]:
    """Validate a job's ``notify`` list; ``ValueError`` says what to fix."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValueError('notify must be an array of targets such as [{"url": "https://..."}]')
    if len(value) > MAX_TARGETS:
        raise ValueError(f"notify has {len(value)} targets (at most {MAX_TARGETS})")
    return tuple(_target(item, f"notify[{i}]") for i, item in enumerate(value))


def _target(item: JSONValue, where: str) -> NotifyTarget:
    if not isinstance(item, dict):
        raise ValueError(f"{where} must be an object with a url")
    unknown = sorted(set(item) - {"url", "on", "secret"})
    if unknown:
        raise ValueError(f"{where} has an unknown field {unknown[0]!r} (url, on, secret)")
    url = item.get("url")
    if not isinstance(url, str) or not _http_url(url):
        raise ValueError(f"{where}.url must be an http:// or https:// URL")
    return NotifyTarget(
        url=url, on=_statuses(item.get("on"), where), secret=_secret(item.get("secret"), where)
    )


def _http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and url.isprintable()


def _statuses(value: JSONValue, where: str) -> frozenset[RunStatus]:
    if value is None:
        return DEFAULT_ON
    allowed = ", ".join(sorted(status.value for status in TERMINAL_STATUSES))
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}.on must be a non-empty array of final statuses ({allowed})")
    found: set[RunStatus] = set()
    for raw in value:
        try:
            status = RunStatus(raw) if isinstance(raw, str) else None
        except ValueError:
            status = None
        if status is None or not status.terminal:
            raise ValueError(f"{where}.on: {raw!r} is not a final status ({allowed})")
        found.add(status)
    return frozenset(found)


def _secret(value: JSONValue, where: str) -> str | None:
    if value is None or value == MASK:
        return None  # a masked secret with nothing stored behind it: none
    if not isinstance(value, str) or not value.startswith(SECRET_PREFIX):
        raise ValueError(f"{where}.secret must look like whsec_<base64> (Standard Webhooks)")
    try:
        key = base64.b64decode(value.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{where}.secret must be whsec_ followed by base64") from None
    if len(key) < 16:
        raise ValueError(f"{where}.secret is too short (at least 16 bytes of key)")
    return value


def masked(value: JSONValue) -> JSONValue:
    """``notify`` as responses show it: every secret replaced by ``***``."""
    if not isinstance(value, list):
        return value
    return [
        {**item, "secret": MASK} if isinstance(item, dict) and item.get("secret") is not None else item
        for item in value
    ]


def keep_secrets(new: JSONValue, old: JSONValue) -> JSONValue:
    """A PATCHed ``notify`` list in which ``***`` (a secret sent back as it was shown)
    keeps the stored secret of the target with the same URL."""
    if not isinstance(new, list) or not isinstance(old, list):
        return new
    stored = {item.get("url"): item.get("secret") for item in old if isinstance(item, dict)}
    kept: list[JSONValue] = []
    for item in new:
        if isinstance(item, dict) and item.get("secret") == MASK:
            item = {**item, "secret": stored.get(item.get("url"))}
            if item["secret"] is None:
                del item["secret"]
        kept.append(item)
    return kept


def targets_for(own: tuple[NotifyTarget, ...], default: tuple[NotifyTarget, ...]) -> tuple[NotifyTarget, ...]:
    """A job's own targets replace the server's default."""
    return own or default


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


NOTICE_EXCERPT_CHARS: Final = 240


def notice(job: Job, run: Run) -> JSONObject | None:
    """The completion notice of an llm job queued from a chat (SPEC 12): its
    ``origin`` (web session or Telegram chat, injected by the server at creation) and
    the text to show there, ``Queued job <id> (<agent>) <status>[: <excerpt>]``.
    ``None`` for every other job, and for a run that was skipped."""
    config = job.spec.runner_config
    if job.spec.runner_type is not RunnerType.LLM or not isinstance(config, dict):
        return None
    origin = config.get("notify_origin")
    if config.get("notify_when_done") is not True or not isinstance(origin, dict):
        return None
    if not run.status.terminal or run.status is RunStatus.SKIPPED:
        return None
    agent = config.get("agent_name")
    name = agent if isinstance(agent, str) and agent else "agent"
    text = f"Queued job {job.id} ({name}) {run.status.value}"
    said = _notice_excerpt(run)
    return {"origin": origin, "text": f"{text}: {said}" if said else text}


def _notice_excerpt(run: Run) -> str:
    """SPEC 12.1's excerpt: the first candidate left non-empty once blank lines and
    ``STATUS:`` lines are dropped and whitespace collapsed, cut to 240 characters."""
    output = run.output
    for text in (run.error, _reason(run), output.response, output.stdout, output.stderr, output.thinking):
        lines = [line.strip() for line in (text or "").splitlines()]
        kept = [line for line in lines if line and not line.lower().startswith("status:")]
        compact = " ".join(" ".join(kept).split())
        if compact:
            if len(compact) <= NOTICE_EXCERPT_CHARS:
                return compact
            return compact[: NOTICE_EXCERPT_CHARS - 1] + "…"
    return ""


def _reason(run: Run) -> str | None:
    reason = run.exit_reason
    return reason.value if reason is not None and reason is not ExitReason.NATURAL_COMPLETION else None


def excerpt(run: Run) -> str:
    """A short text saying what happened: the first non-empty of the error, an unusual
    exit reason, the response, stdout, stderr, thinking; at most 2 KiB of UTF-8."""
    output = run.output
    for text in (run.error, _reason(run), output.response, output.stdout, output.stderr, output.thinking):
        compact = " ".join((text or "").split())
        if compact:
            data = compact.encode()
            if len(data) <= EXCERPT_BYTES:
                return compact
            return data[: EXCERPT_BYTES - 3].decode("utf-8", "ignore") + "…"
    return ""
