"""Shell completion: ``term-llm completion bash|zsh|fish``, and completion of job
references and run ids from the server.

click provides the mechanism: the shell script it generates calls ``term-llm`` with
``_TERM_LLM_COMPLETE`` set, and click answers with the candidates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import asyncclick as click

if TYPE_CHECKING:
    from asyncclick.shell_completion import CompletionItem

from termjobs.cli.client import DEFAULT_SERVER, ClientSettings, check_server

PROG_NAME: Final = "term-llm"
COMPLETE_VAR: Final = "_TERM_LLM_COMPLETE"
SHELLS: Final = ("bash", "zsh", "fish")
#: A completion that waits longer than this feels broken; offer nothing instead.
LOOKUP_TIMEOUT_S: Final = 0.5


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL (bash, zsh or fish).

    \b
    bash:  eval "$(term-llm completion bash)"     (e.g. in ~/.bashrc)
    zsh:   eval "$(term-llm completion zsh)"      (e.g. in ~/.zshrc)
    fish:  term-llm completion fish > ~/.config/fish/completions/term-llm.fish
    """
    from asyncclick.shell_completion import get_completion_class

    root = ctx.find_root()
    complete_class = get_completion_class(shell)
    assert complete_class is not None  # SHELLS are all built into click
    prog_name = root.info_name or PROG_NAME
    script = complete_class(root.command, {}, prog_name, COMPLETE_VAR).source()
    click.echo(script.rstrip("\n"))  # exactly what `_TERM_LLM_COMPLETE=bash_source term-llm` prints


def complete_job_ref(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Job names and ids starting with ``incomplete``."""
    from asyncclick.shell_completion import CompletionItem

    body = _lookup(ctx, "/v2/jobs", {"limit": "200"})
    items: list[CompletionItem] = []
    for job in _data(body):
        name, job_id = str(job.get("name", "")), str(job.get("id", ""))
        if name.startswith(incomplete):
            items.append(CompletionItem(name, help=job_id))
        elif job_id.startswith(incomplete):
            items.append(CompletionItem(job_id, help=name))
    return items


def complete_run_id(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Ids of the newest runs starting with ``incomplete``."""
    from asyncclick.shell_completion import CompletionItem

    body = _lookup(ctx, "/v2/runs", {"limit": "50", "summary": "true"})
    return [
        CompletionItem(str(run["id"]), help=f"{run.get('status', '')} {run.get('job_id', '')}")
        for run in _data(body)
        if str(run.get("id", "")).startswith(incomplete)
    ]


def _lookup(ctx: click.Context, path: str, query: dict[str, str]) -> Any:
    """GET ``path`` within :data:`LOOKUP_TIMEOUT_S`; ``None`` on any failure.

    Synchronous on purpose: click asks for completions synchronously, and this
    process does nothing else while the shell waits. httpx is imported here, not
    at start-up: it is only needed once a completion is asked for.
    """
    import httpx

    settings = _settings(ctx)
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    try:
        response = httpx.get(settings.server + path, params=query, headers=headers, timeout=LOOKUP_TIMEOUT_S)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError):
        return None


def _settings(ctx: click.Context) -> ClientSettings:
    """``--server`` and ``--token`` as parsed so far on the command line being completed
    (the ``jobs`` group's options; their callbacks have already applied the env vars)."""
    current: click.Context | None = ctx
    while current is not None:
        if "server" in current.params:
            server = current.params.get("server") or DEFAULT_SERVER
            token = current.params.get("token") or ""
            try:
                return ClientSettings(server=check_server(server), token=token)
            except ValueError:
                break
        current = current.parent
    return ClientSettings(server=DEFAULT_SERVER)


def _data(body: Any) -> list[dict[str, Any]]:
    data = body.get("data") if isinstance(body, dict) else None
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
