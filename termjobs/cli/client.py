"""Typed HTTP client of the jobs API (httpx), used by every ``term-llm jobs`` command.

Every failure, whether the server refused the request or could not be reached, is
raised as one exception type, :class:`ApiError`, carrying the HTTP status (``None``
when no HTTP answer arrived) and a message ready to show to the user: it says what
went wrong and, where the fix is on the client side, which flag or variable to use.

The connection settings live in :class:`ClientSettings`, separately from the httpx
client, so that a websocket follower (``/v2/runs/{id}/events/stream``) can be built
from the same server, token and timeout.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, Required, TypedDict, TypeVar, cast
from urllib.parse import quote, urlsplit

from termjobs.retry import format_duration, parse_duration

if TYPE_CHECKING:
    # httpx is imported where requests are made: `--help`, `validate` and shell
    # completion scripts start faster without it.
    import httpx

DEFAULT_SERVER: Final = "http://127.0.0.1:8080"
DEFAULT_TIMEOUT_S: Final = 15.0
#: The server's largest page of jobs or runs.
PAGE_MAX: Final = 200
_FIND_HINT: Final = "--server URL or TERM_LLM_JOBS_SERVER points the CLI at another server"
TOKEN_HINT: Final = "pass --token or set TERM_LLM_JOBS_TOKEN (the token `term-llm serve` printed)"
_AMBIGUITY_SHOWN: Final = 5


class ApiError(Exception):
    """A request that failed: ``status`` is the HTTP status, or ``None`` when the
    server could not be reached or its answer could not be read."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Where the server is and how to talk to it (already validated)."""

    server: str  # "http(s)://host:port[/base]", no trailing slash
    token: str = ""  # empty: send no Authorization header
    timeout: float = DEFAULT_TIMEOUT_S  # seconds


class RunSummary(TypedDict, total=False):
    """A run without its output (``GET /v2/runs?summary=true``, ``last_run``)."""

    id: Required[str]
    job_id: Required[str]
    attempt: Required[int]
    trigger: Required[str]
    scheduled_for: Required[str]
    status: Required[str]
    worker_id: str
    started_at: str
    finished_at: str
    exit_code: int
    error: str
    exit_reason: str
    truncated: bool
    retry_of: str
    created_at: Required[str]
    updated_at: Required[str]


class Run(RunSummary, total=False):
    """A run with its captured output (an llm run's own fields: ``cli.llm.LlmRun``)."""

    stdout: str
    stderr: str


class Job(TypedDict, total=False):
    """A job as the API returns it (optional fields are absent when empty)."""

    id: Required[str]
    name: Required[str]
    enabled: Required[bool]
    runner_type: Required[str]
    runner_config: Any
    trigger_type: Required[str]
    trigger_config: Any
    schedule_timezone: str
    concurrency_policy: str
    max_concurrent_runs: int
    retry_policy: Any
    timeout_seconds: int
    misfire_policy: str
    misfire_grace_seconds: int
    labels: Any
    next_run_at: str
    last_run: RunSummary
    created_at: Required[str]
    updated_at: Required[str]


class RunEvent(TypedDict, total=False):
    """One entry of a run's timeline."""

    id: Required[int]
    run_id: Required[str]
    event_type: Required[str]
    message: str
    data: Any
    created_at: Required[str]


class Agent(TypedDict, total=False):
    """An agent the server knows (``GET /v2/agents``)."""

    name: Required[str]
    description: str
    tools: list[str]
    provider: str | None
    model: str | None
    source: str


class Deleted(TypedDict):
    """The answer to a delete."""

    id: str
    deleted: bool


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list and the number of all matching items."""

    items: list[T]
    total: int


Query = Sequence[tuple[str, str]]


def segment(value: str) -> str:
    """``value`` as one URL path segment: percent-escaped, so that a job name with
    ``?``, ``#``, ``%`` or spaces reaches the server intact."""
    escaped = quote(value, safe="")
    # "." and ".." would be removed from the path as dot segments.
    return escaped.replace(".", "%2E") if escaped in {".", ".."} else escaped


class JobsClient:
    """The jobs API, one method per route; open it with :meth:`connect`."""

    def __init__(self, http: httpx.AsyncClient, settings: ClientSettings) -> None:
        self._http = http
        self.settings = settings

    @classmethod
    @asynccontextmanager
    async def connect(cls, settings: ClientSettings) -> AsyncIterator[JobsClient]:
        """A client for ``settings`` whose connections are closed on exit."""
        import httpx

        headers = {"Accept": "application/json", "User-Agent": "term-llm-jobs"}
        if settings.token:
            headers["Authorization"] = f"Bearer {settings.token}"
        async with httpx.AsyncClient(
            base_url=settings.server, headers=headers, timeout=settings.timeout
        ) as http:
            yield cls(http, settings)

    # ------------------------------------------------------------------ jobs

    async def list_jobs(
        self,
        *,
        limit: int = PAGE_MAX,
        offset: int = 0,
        id_prefix: str | None = None,
        filters: Query = (),
    ) -> Page[Job]:
        """One page of jobs, newest first (``id_prefix``: ids starting with it;
        ``filters``: more query parameters, such as ``("label", "team=data")``)."""
        query = [("limit", str(limit)), ("offset", str(offset)), *filters]
        if id_prefix is not None:
            query.append(("id_prefix", id_prefix))
        return _page(await self._request("GET", "/v2/jobs", query=query))

    async def all_jobs(self, filters: Query = ()) -> list[Job]:
        """Every job (matching ``filters``), newest first, fetched page by page."""
        return await _collect(lambda offset: self.list_jobs(offset=offset, filters=filters))

    async def get_job(self, ref: str) -> Job:
        """The job whose id or exact name is ``ref``."""
        return cast(Job, await self._request("GET", f"/v2/jobs/{segment(ref)}"))

    async def create_job(self, payload: bytes) -> Job:
        """Create a job from a JSON object (with an Idempotency-Key: safe to retry)."""
        return cast(Job, await self._request("POST", "/v2/jobs", body=payload, idempotent=True))

    async def update_job(self, ref: str, payload: bytes) -> Job:
        """Change the fields of a job named in a JSON object."""
        return cast(Job, await self._request("PATCH", f"/v2/jobs/{segment(ref)}", body=payload))

    async def delete_job(self, ref: str, *, cancel_active: bool = False) -> Deleted:
        """Delete a job and its history (``cancel_active``: cancel its runs first)."""
        query = [("cancel_active", "true")] if cancel_active else []
        return cast(Deleted, await self._request("DELETE", f"/v2/jobs/{segment(ref)}", query=query))

    async def trigger_job(self, ref: str, *, overrides: bytes | None = None) -> Run:
        """Queue a manual run (``overrides``: a JSON object changing this run only)."""
        path = f"/v2/jobs/{segment(ref)}/trigger"
        return cast(Run, await self._request("POST", path, body=overrides, idempotent=True))

    async def pause_job(self, ref: str) -> Job:
        """Disable a job."""
        return cast(Job, await self._request("POST", f"/v2/jobs/{segment(ref)}/pause"))

    async def resume_job(self, ref: str) -> Job:
        """Enable a job."""
        return cast(Job, await self._request("POST", f"/v2/jobs/{segment(ref)}/resume"))

    async def resolve_job(self, ref: str) -> Job:
        """The job ``ref`` designates: its id or exact name (asked to the server
        directly), else the single job whose id starts with ``ref`` (or with
        ``job_`` + ``ref``)."""
        try:
            return await self.get_job(ref)
        except ApiError as exc:
            if exc.status != 404:
                raise
        prefix = ref if ref.startswith("job_") else f"job_{ref}"
        page = await self.list_jobs(limit=_AMBIGUITY_SHOWN, id_prefix=prefix)
        if page.total == 1 and page.items:
            return page.items[0]
        if page.total == 0:
            raise ApiError(f'job "{ref}" not found', 404)
        raise ApiError(_ambiguous(ref, page))

    # ------------------------------------------------------------------ runs

    async def list_runs(
        self,
        *,
        job_id: str | None = None,
        statuses: Iterable[str] = (),
        summary: bool = False,
        limit: int = PAGE_MAX,
        offset: int = 0,
        filters: Query = (),
    ) -> Page[Run]:
        """One page of runs, newest first; ``summary`` leaves out their output."""
        query = [("limit", str(limit)), ("offset", str(offset)), *filters]
        if summary:
            query.append(("summary", "true"))
        if job_id is not None:
            query.append(("job_id", job_id))
        wanted = ",".join(statuses)
        if wanted:
            query.append(("status", wanted))
        return _page(await self._request("GET", "/v2/runs", query=query))

    async def all_runs(self, *, statuses: Iterable[str], summary: bool = True) -> list[Run]:
        """Every run in one of ``statuses``, newest first, fetched page by page."""
        wanted = tuple(statuses)
        return await _collect(lambda offset: self.list_runs(statuses=wanted, summary=summary, offset=offset))

    async def get_run(self, run_id: str) -> Run:
        """One run with its output."""
        return cast(Run, await self._request("GET", f"/v2/runs/{segment(run_id)}"))

    async def cancel_run(self, run_id: str) -> Run:
        """Cancel a run; a finished run is returned unchanged."""
        return cast(Run, await self._request("POST", f"/v2/runs/{segment(run_id)}/cancel"))

    async def list_events(
        self, run_id: str, *, limit: int = 200, offset: int = 0, since_id: int = 0
    ) -> Page[RunEvent]:
        """A run's events in order (``since_id``: only those after that event id)."""
        query = [("limit", str(limit)), ("offset", str(offset))]
        if since_id:
            query.append(("since_id", str(since_id)))
        return _page(await self._request("GET", f"/v2/runs/{segment(run_id)}/events", query=query))

    # ---------------------------------------------------------------- agents

    async def list_agents(self) -> list[Agent]:
        """Every agent the server knows, by name."""
        return cast(list[Agent], _page(await self._request("GET", "/v2/agents")).items)

    async def cluster(self) -> dict[str, Any]:
        """The servers on the server's database (``GET /v2/cluster``)."""
        return cast(dict[str, Any], await self._request("GET", "/v2/cluster"))

    # ------------------------------------------------------------- transport

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Query = (),
        body: bytes | None = None,
        idempotent: bool = False,
    ) -> Any:
        """Send one request; the decoded JSON answer, or :class:`ApiError`. An
        ``idempotent`` request carries an Idempotency-Key and is sent once more, with
        the same key, if the connection fails before an answer arrives."""
        import httpx

        # Content-Type only accompanies a body, as in the reference client.
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if idempotent:
            headers["Idempotency-Key"] = secrets.token_urlsafe(18)
        for attempt in (1, 2):
            try:
                response = await self._http.request(
                    method, path, params=list(query), content=body, headers=headers
                )
                break
            except httpx.TimeoutException:
                raise ApiError(timeout_message(self.settings)) from None
            except httpx.TransportError as exc:
                if not idempotent or attempt == 2 or isinstance(exc, httpx.ConnectError):
                    raise ApiError(transport_message(self.settings, exc)) from None
            except httpx.HTTPError as exc:
                raise ApiError(transport_message(self.settings, exc)) from None
        if response.status_code >= 400:
            raise ApiError(error_message(response, self.settings), response.status_code)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(f"decode response: {exc}", response.status_code) from None


def _page(body: Any) -> Page[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ApiError("decode response: expected a list envelope with a data array")
    items: list[Any] = body["data"]
    total = body.get("total")
    return Page(items=items, total=total if isinstance(total, int) else len(items))


async def _collect(fetch: Callable[[int], Awaitable[Page[T]]]) -> list[T]:
    """Every item of a paged list (``fetch(offset)`` returns the page at ``offset``)."""
    items: list[T] = []
    while True:
        page = await fetch(len(items))
        items.extend(page.items)
        # An empty page ends the loop even if rows vanished while paging.
        if not page.items or len(items) >= page.total:
            return items


def _ambiguous(ref: str, page: Page[Job]) -> str:
    shown = ", ".join(f"{job['id']} ({job['name']})" for job in page.items)
    more = page.total - len(page.items)
    extra = f" and {more} more" if more > 0 else ""
    return (
        f'job reference "{ref}" is ambiguous: it matches {shown}{extra}; '
        "give more of the id, or the exact name"
    )


# ---------------------------------------------------------------- messages


def error_message(response: httpx.Response, settings: ClientSettings) -> str:
    """The user-facing text of an HTTP error answer."""
    message = _envelope_message(response)
    if response.status_code == 401:
        if not settings.token:
            return f"the server at {settings.server} requires a token: {TOKEN_HINT}"
        return f"{message or 'invalid authentication credentials'}: {TOKEN_HINT}"
    if message:
        return message
    text = response.text.strip()
    if len(text) > 300:
        text = text[:300] + "..."
    return f"request failed ({response.status_code}): {text or response.reason_phrase}"


def _envelope_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message.strip() if isinstance(message, str) else ""


def transport_message(settings: ClientSettings, exc: httpx.HTTPError) -> str:
    """The user-facing text of a request that got no HTTP answer."""
    import httpx

    causes = _os_errors(exc)
    if isinstance(exc, httpx.ConnectError):
        if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
            return (
                f"cannot connect to the jobs server at {settings.server}: connection refused. "
                f"Is `term-llm serve jobs` running there? ({_FIND_HINT})"
            )
        reason = _reason(causes, exc)
        return f"cannot connect to the jobs server at {settings.server}: {reason} ({_FIND_HINT})"
    return f"request to {settings.server} failed: {_reason(causes, exc)}"


def _os_errors(exc: BaseException) -> list[OSError]:
    """The operating-system errors behind ``exc``: httpx wraps them in its own errors,
    and trio groups the failures of each address it tried."""
    found: list[OSError] = []
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif isinstance(current, OSError) and current.errno is not None:
            found.append(current)
        pending.extend(link for link in (current.__cause__, current.__context__) if link is not None)
    return found


def _reason(causes: Sequence[OSError], exc: BaseException) -> str:
    if causes and causes[0].strerror:
        return causes[0].strerror
    return str(exc) or type(exc).__name__


def timeout_message(settings: ClientSettings) -> str:
    """The user-facing text of a request that timed out."""
    limit = _go_duration(settings.timeout)
    return (
        f"the jobs server at {settings.server} did not answer within {limit}; "
        "give it longer with --timeout (e.g. --timeout 1m)"
    )


def _go_duration(seconds: float) -> str:
    """``15s``, ``1m0s``, ``500ms`` (Go style, as the flag is written)."""
    return format_duration(dt.timedelta(seconds=seconds))


# ------------------------------------------------------------- flag values


def check_server(raw: str) -> str:
    """A ``--server`` value, trimmed and without a trailing ``/``; ``ValueError`` with
    the message to show when it is not an http(s) URL."""
    text = raw.strip() or DEFAULT_SERVER
    if not text.lower().startswith(("http://", "https://")):
        raise ValueError(f'invalid --server "{raw}": must start with http:// or https://')
    text = text.rstrip("/")
    try:
        parts = urlsplit(text)
        host, _ = parts.hostname, parts.port  # .port checks the port
    except ValueError as exc:
        raise ValueError(f'invalid --server "{raw}": {exc}') from None
    if not host:
        raise ValueError(f'invalid --server "{raw}": no host name')
    return text


def parse_timeout(raw: str) -> float:
    """A ``--timeout`` Go duration (``15s``, ``1m30s``, ``500ms``) in seconds; zero or
    negative means the default, as in the reference client."""
    text = raw.strip()
    magnitude = text.lstrip("+-")
    try:
        seconds = 0.0 if magnitude == "0" else parse_duration(magnitude).total_seconds()
    except ValueError:
        raise ValueError(f'invalid --timeout "{raw}": use a duration such as 15s, 1m30s or 500ms') from None
    if text.startswith("-") or seconds <= 0:
        return DEFAULT_TIMEOUT_S
    return seconds
