"""``term-llm jobs``: drive a jobs server from the command line.

Each command reads its arguments, talks to the server through
:class:`~termjobs.cli.client.JobsClient` and prints with :mod:`termjobs.cli.render`;
the plumbing they share (options, exit statuses, payload input) is in
:mod:`termjobs.cli.base`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import asyncclick as click

from termjobs.cli import live, llm, render
from termjobs.cli.base import (
    CONTEXT,
    JobsGroup,
    Options,
    echo,
    echo_json,
    global_options,
    job_argument,
    job_ref,
    now,
    payload_options,
    read_payload,
    run_argument,
    run_ref,
)
from termjobs.cli.client import (
    PAGE_MAX,
    ApiError,
    ClientSettings,
    Job,
    JobsClient,
    RunSummary,
)
from termjobs.cli.completion import complete_job_ref
from termjobs.cli.payload import encode_payload

FOLLOW_HELP = "Keep printing events as they happen until the run ends (exit 1 unless it succeeded)."
RUNS_LIMIT_DEFAULT = 50
EVENTS_LIMIT_DEFAULT = 200
EVENTS_LIMIT_MAX = 500


@click.group(cls=JobsGroup, invoke_without_command=True, context_settings=CONTEXT)
@global_options
@click.pass_context
async def jobs(
    ctx: click.Context, server: str, token: str | None, http_timeout: float, as_json: bool
) -> None:
    """Manage jobs and runs on a jobs server. Without a command: `jobs list`.

    JOB is a job id, an exact job name, or a unique prefix of a job id (with or
    without `job_`). Exit status: 0 success, 1 error, 2 wrong usage.
    """
    style = render.Style(render.colour_enabled(sys.stdout))
    ctx.obj = Options(ClientSettings(server=server, token=token or "", timeout=http_timeout), as_json, style)
    if ctx.invoked_subcommand is None:
        await show_jobs(ctx.obj, show_all=False)


# --------------------------------------------------------------- jobs


@jobs.command("list", context_settings=CONTEXT)
@click.option("--all", "show_all", is_flag=True, help="Also show finished once-off and agent jobs.")
@click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="Only jobs with this label (repeatable)."
)
@click.option("--name", default=None, help="Only jobs whose name contains this (any case).")
@click.option("--enabled/--disabled", "enabled", default=None, help="Only enabled (or disabled) jobs.")
@click.option("--trigger-type", type=click.Choice(["manual", "once", "cron"]), default=None)
@click.option("--runner-type", type=click.Choice(["program", "llm"]), default=None)
@click.pass_obj
async def list_jobs(
    opts: Options,
    show_all: bool,
    labels: tuple[str, ...],
    name: str | None,
    enabled: bool | None,
    trigger_type: str | None,
    runner_type: str | None,
) -> None:
    """List jobs, newest first: status, last run and next run of each."""
    filters = [("label", label) for label in labels]
    for key, value in (("name", name), ("trigger_type", trigger_type), ("runner_type", runner_type)):
        if value:
            filters.append((key, value))
    if enabled is not None:
        filters.append(("enabled", str(enabled).lower()))
    await show_jobs(opts, show_all=show_all, filters=filters)


async def show_jobs(opts: Options, *, show_all: bool, filters: Sequence[tuple[str, str]] = ()) -> None:
    """``jobs list``, also run by ``jobs`` without a command."""
    async with JobsClient.connect(opts.settings) as api:
        found = await api.all_jobs(filters)
        if opts.json:
            echo_json(found)
            return
        lines = await job_lines(api, found)
    echo(opts, render.jobs_listing(lines, show_all=show_all, now=now(), style=opts.style))


async def job_lines(api: JobsClient, found: Sequence[Job]) -> list[render.JobLine]:
    """Each job with its newest active run and its newest finished run."""
    active: dict[str, RunSummary] = {}
    for run in await api.all_runs(statuses=render.ACTIVE_STATUSES):
        active.setdefault(run["job_id"], run)  # newest first: keep the first seen
    lines = []
    for job in found:
        last = job.get("last_run")
        if last is not None and last["status"] in render.ACTIVE_STATUSES:
            # Only a job whose newest run is still going needs one more request.
            last = await _newest_finished(api, job["id"])
        lines.append(render.JobLine(job, active.get(job["id"]), last))
    return lines


async def _newest_finished(api: JobsClient, job_id: str) -> RunSummary | None:
    page = await api.list_runs(job_id=job_id, statuses=render.FINISHED_STATUSES, summary=True, limit=1)
    return page.items[0] if page.items else None


@jobs.command("get", context_settings=CONTEXT)
@job_argument
@click.pass_obj
async def get_job(opts: Options, ref: str) -> None:
    """Show a job as JSON."""
    async with JobsClient.connect(opts.settings) as api:
        echo_json(await api.resolve_job(job_ref(ref)))


@jobs.command("create", context_settings=CONTEXT)
@payload_options
@click.option("--llm", "agent", metavar="AGENT", help="Shortcut: a manual llm job that runs AGENT.")
@click.option("--instructions", metavar="TEXT", help="With --llm: what the agent is asked to do.")
@click.option("--cwd", metavar="DIR", help="With --llm: the agent's working directory [default: here].")
@click.option("--name", metavar="NAME", help="With --llm: the job's name [default: agent-AGENT-TIME].")
@click.pass_obj
async def create_job(
    opts: Options,
    file: str | None,
    data: str | None,
    agent: str | None,
    instructions: str | None,
    cwd: str | None,
    name: str | None,
) -> None:
    """Create a job from a JSON or YAML definition (--file, --data or stdin), or an
    agent job: --llm AGENT --instructions TEXT [--cwd DIR] [--name NAME]."""
    if agent is not None or instructions is not None:
        payload = llm.shortcut_payload(
            agent=agent, instructions=instructions, cwd=cwd, name=name, file=file, data=data, now=now()
        )
    else:
        payload = encode_payload(await read_payload(file, data))
    async with JobsClient.connect(opts.settings) as api:
        echo_json(await api.create_job(payload))


@jobs.command("update", context_settings=CONTEXT)
@job_argument
@payload_options
@click.pass_obj
async def update_job(opts: Options, ref: str, file: str | None, data: str | None) -> None:
    """Change some fields of a job (the others keep their value; null resets one)."""
    payload = encode_payload(await read_payload(file, data))
    async with JobsClient.connect(opts.settings) as api:
        job = await api.resolve_job(job_ref(ref))
        echo_json(await api.update_job(job["id"], payload))


@jobs.command("delete", context_settings=CONTEXT)
@job_argument
@click.option("--cancel-active", is_flag=True, help="Cancel the job's active runs first.")
@click.pass_obj
async def delete_job(opts: Options, ref: str, cancel_active: bool) -> None:
    """Delete a job and its history."""
    async with JobsClient.connect(opts.settings) as api:
        job = await api.resolve_job(job_ref(ref))
        try:
            deleted = await api.delete_job(job["id"], cancel_active=cancel_active)
        except ApiError as exc:
            if exc.status == 409 and not cancel_active:
                hint = f"from the CLI: term-llm jobs delete {job['id']} --cancel-active"
                raise ApiError(f"{exc.message}; {hint}", exc.status) from None
            raise
    echo_json(deleted)


@jobs.command("trigger", context_settings=CONTEXT)
@job_argument
@click.option("--follow", "-f", is_flag=True, help=FOLLOW_HELP)
@click.option("--arg", "args", multiple=True, help="This run's arguments, replacing the job's (repeatable).")
@click.option(
    "--env", "env", multiple=True, metavar="KEY=VALUE", help="Added to this run's environment (repeatable)."
)
@click.option(
    "--run-timeout",
    type=click.IntRange(min=1),
    default=None,
    help="This run's timeout_seconds, instead of the job's.",
)
@click.pass_obj
async def trigger_job(
    opts: Options,
    ref: str,
    follow: bool,
    args: tuple[str, ...],
    env: tuple[str, ...],
    run_timeout: int | None,
) -> None:
    """Queue a run of a job now; prints the run (with --follow, its events)."""
    overrides = _overrides(args, env, run_timeout)
    async with JobsClient.connect(opts.settings) as api:
        job = await api.resolve_job(job_ref(ref))
        run = await api.trigger_job(job["id"], overrides=overrides)
    if not follow:
        echo_json(run)
        return
    if not opts.json:
        echo(opts, f"run {run['id']} of job {job['name']} queued; following its events\n")
    await live.follow_run(opts, run["id"], since_id=0)


@jobs.command("pause", context_settings=CONTEXT)
@job_argument
@click.pass_obj
async def pause_job(opts: Options, ref: str) -> None:
    """Disable a job: no scheduled or manual runs until it is resumed."""
    async with JobsClient.connect(opts.settings) as api:
        job = await api.resolve_job(job_ref(ref))
        echo_json(await api.pause_job(job["id"]))


@jobs.command("resume", context_settings=CONTEXT)
@job_argument
@click.pass_obj
async def resume_job(opts: Options, ref: str) -> None:
    """Enable a paused job."""
    async with JobsClient.connect(opts.settings) as api:
        job = await api.resolve_job(job_ref(ref))
        echo_json(await api.resume_job(job["id"]))


@jobs.command("validate", context_settings=CONTEXT)
@payload_options
@click.pass_obj
async def validate_job(opts: Options, file: str | None, data: str | None) -> None:
    """Check a job definition locally, with the server's own rules (no server needed)."""
    # Imported here: the validation rules pull in pydantic and croniter, which the
    # other commands do not need at start-up.
    from termjobs.errors import InvalidRequest
    from termjobs.jobspec import decode_body, definition_for_create
    from termjobs.model import format_ts
    from termjobs.schedule import initial_next_run

    payload = encode_payload(await read_payload(file, data))
    try:
        defn = definition_for_create(decode_body(payload))
    except InvalidRequest as exc:
        raise click.ClickException(f"invalid job definition: {render.one_line(exc.message)}") from None
    next_run = initial_next_run(defn.parsed.trigger, enabled=defn.enabled, now=now(), last_fire_at=None)
    next_text = format_ts(next_run) if next_run else None
    if opts.json:
        echo_json({"valid": True, "name": defn.name, "next_run_at": next_text})
        return
    when = f"next run {render.local_time(next_text)}" if next_text else "no scheduled run"
    click.echo(
        f'OK: job "{render.one_line(defn.name)}" is valid '
        f"({defn.runner_type.value} runner, {defn.trigger_type.value} trigger; {when})"
    )


# --------------------------------------------------------------- runs


def _overrides(args: tuple[str, ...], env: tuple[str, ...], run_timeout: int | None) -> bytes | None:
    overrides: dict[str, object] = {}
    if args:
        overrides["args"] = list(args)
    if env:
        pairs = [item.partition("=") for item in env]
        bad = [key for key, sep, _ in pairs if not sep or not key]
        if bad:
            raise click.UsageError(f"--env takes KEY=VALUE (got {bad[0]!r})")
        overrides["env"] = {key: value for key, _, value in pairs}
    if run_timeout is not None:
        overrides["timeout_seconds"] = run_timeout
    return json.dumps(overrides).encode() if overrides else None


@jobs.command("runs", context_settings=CONTEXT)
@click.argument("ref", metavar="[JOB]", required=False, shell_complete=complete_job_ref)
@click.option(
    "--limit",
    type=click.IntRange(1, PAGE_MAX),
    default=RUNS_LIMIT_DEFAULT,
    show_default=True,
    help="Most runs to show.",
)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Runs to skip.")
@click.option("--status", "statuses", multiple=True, help="Only runs with this status (repeatable or a,b).")
@click.option("--trigger", type=click.Choice(["manual", "schedule", "retry"]), default=None)
@click.pass_obj
async def list_runs(
    opts: Options, ref: str | None, limit: int, offset: int, statuses: tuple[str, ...], trigger: str | None
) -> None:
    """List runs, newest first (of one job when JOB is given)."""
    filters = [("status", status) for status in statuses] + ([("trigger", trigger)] if trigger else [])
    async with JobsClient.connect(opts.settings) as api:
        job_id = (await api.resolve_job(job_ref(ref)))["id"] if ref is not None else None
        # Tables never show output, so they ask for summaries; --json gets everything.
        page = await api.list_runs(
            job_id=job_id, summary=not opts.json, limit=limit, offset=offset, filters=filters
        )
    if opts.json:
        echo_json(page.items)
        return
    echo(opts, render.runs_table(page.items, opts.style))
    if page.items and page.total > offset + len(page.items):
        click.echo(f"\nShowing {len(page.items)} of {page.total} runs; --offset {offset + limit} for more.")


@jobs.command("active", context_settings=CONTEXT)
@click.pass_obj
async def list_active(opts: Options) -> None:
    """List runs that are queued, starting, running or being cancelled."""
    async with JobsClient.connect(opts.settings) as api:
        runs = await api.all_runs(statuses=render.ACTIVE_STATUSES)
        names = {job["id"]: job["name"] for job in await api.all_jobs()} if runs else {}
    entries = render.active_entries(runs, names)
    if opts.json:
        echo_json(entries)
        return
    echo(opts, render.active_table(entries, opts.style))


@jobs.group("run", cls=JobsGroup, invoke_without_command=True, context_settings=CONTEXT)
@click.pass_context
async def run_group(ctx: click.Context) -> None:
    """Look at or cancel one run."""
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


@run_group.command("get", context_settings=CONTEXT)
@run_argument
@click.pass_obj
async def get_run(opts: Options, run_id: str) -> None:
    """Show a run, with its output, as JSON; an LLM run (turns, response, thinking) is
    shown readably unless --json is given."""
    async with JobsClient.connect(opts.settings) as api:
        run = await api.get_run(run_ref(run_id))
    if opts.json or not llm.is_llm_run(run):
        echo_json(run)
        return
    echo(opts, llm.run_view(run, opts.style))


@run_group.command("cancel", context_settings=CONTEXT)
@run_argument
@click.pass_obj
async def cancel_run(opts: Options, run_id: str) -> None:
    """Cancel a run (a finished run is left as it is); prints the run."""
    async with JobsClient.connect(opts.settings) as api:
        echo_json(await api.cancel_run(run_ref(run_id)))


@run_group.command("events", context_settings=CONTEXT)
@run_argument
@click.option(
    "--limit",
    type=click.IntRange(1, EVENTS_LIMIT_MAX),
    default=EVENTS_LIMIT_DEFAULT,
    show_default=True,
    help="Most events to show.",
)
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True, help="Events to skip.")
@click.option("--since-id", type=click.IntRange(min=0), default=0, help="Only events after this event id.")
@click.option("--follow", "-f", is_flag=True, help=FOLLOW_HELP)
@click.pass_obj
async def run_events(
    opts: Options, run_id: str, limit: int, offset: int, since_id: int, follow: bool
) -> None:
    """Show a run's timeline: one line per event, oldest first."""
    if follow:
        await live.follow_run(opts, run_ref(run_id), since_id=since_id)
        return
    async with JobsClient.connect(opts.settings) as api:
        page = await api.list_events(run_ref(run_id), limit=limit, offset=offset, since_id=since_id)
    if opts.json:
        echo_json(page.items)
        return
    echo(opts, render.events_text(page.items, opts.style))


@jobs.command("cluster", context_settings=CONTEXT)
@click.pass_obj
async def show_cluster(opts: Options) -> None:
    """List the servers sharing the server's database: alive or not, the leader,
    how many jobs each owns and runs it executes."""
    async with JobsClient.connect(opts.settings) as api:
        cluster = await api.cluster()
    if opts.json:
        echo_json(cluster)
        return
    echo(opts, render.cluster_table(cluster, opts.style))


@jobs.command("agents", context_settings=CONTEXT)
@click.pass_obj
async def list_agents(opts: Options) -> None:
    """List the agents the server knows (for llm jobs' agent_name)."""
    async with JobsClient.connect(opts.settings) as api:
        agents = await api.list_agents()
    if opts.json:
        echo_json(llm.agents_json(agents))
        return
    echo(opts, llm.agents_table(agents, opts.style))


@jobs.command("watch", context_settings=CONTEXT)
@click.argument("ref", required=False, shell_complete=complete_job_ref)
@click.option(
    "--since-id", type=click.IntRange(min=0), default=None, help="Replay events after this id first."
)
@click.pass_obj
async def watch(opts: Options, ref: str | None, since_id: int | None) -> None:
    """Show every event (or one job's) live until interrupted (Ctrl-C).

    Reconnects by itself after a dropped connection or a server restart, without
    losing or repeating events.
    """
    await live.watch(opts, ref, since_id)
