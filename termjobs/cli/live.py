"""The live commands' output: a run's events until it ends (``--follow``) and every
event, or one job's, until interrupted (``jobs watch``), over the websocket client of
:mod:`termjobs.cli.follow`.
"""

from __future__ import annotations

import json
import signal

import asyncclick as click
import trio

from termjobs.cli import render
from termjobs.cli.base import Options, echo, job_ref
from termjobs.cli.client import ApiError, JobsClient, RunEvent, segment
from termjobs.cli.follow import TERMINAL, Cursor, follow, unwrapped


async def follow_run(opts: Options, run_id: str, *, since_id: int) -> None:
    """Print a run's events as they happen until it ends; exit 0 only if it succeeded."""
    cursor = Cursor(since_id=since_id)

    async def show(event: RunEvent) -> None:
        print_event(opts, event)

    query = {"since_id": since_id}
    await follow(
        opts.settings, f"/v2/runs/{segment(run_id)}/events/stream", query, cursor, show, until_terminal=True
    )
    status = cursor.last_type
    if status not in TERMINAL:
        async with JobsClient.connect(opts.settings) as api:
            status = (await api.get_run(run_id))["status"]
    if status != "succeeded":
        raise click.exceptions.Exit(1)


async def watch(opts: Options, ref: str | None, since_id: int | None) -> None:
    """Print every event (or the job ``ref``'s) live until interrupted (Ctrl-C: exit 0)."""
    names: dict[str, str] = {}
    query: dict[str, object] = {"since_id": since_id}
    async with JobsClient.connect(opts.settings) as api:
        if ref is not None:
            job = await api.resolve_job(job_ref(ref))
            query["job_id"], names[job["id"]] = job["id"], job["name"]

        async def show(event: RunEvent) -> None:
            prefix = ""
            if not opts.json:
                job_id = str(event.get("job_id", ""))
                if job_id not in names:
                    names[job_id] = await _job_name(api, job_id)
                prefix = f"{names[job_id]} {event['run_id']} "
            print_event(opts, event, prefix)

        # A refused token or a deleted job is reported like any other API error.
        with unwrapped(ApiError):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_interrupt, nursery.cancel_scope)  # Ctrl-C: exit 0
                cursor = Cursor(since_id or 0)
                await follow(opts.settings, "/v2/events/stream", query, cursor, show, until_terminal=False)
                nursery.cancel_scope.cancel()


def print_event(opts: Options, event: RunEvent, prefix: str = "") -> None:
    """One live event: a JSON line with --json, else its rendered lines after ``prefix``."""
    if opts.json:
        click.echo(json.dumps(event, separators=(",", ":")))
    else:
        echo(opts, "".join(prefix + line + "\n" for line in render.event_lines(event, opts.style)))


async def _stop_on_interrupt(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def _job_name(api: JobsClient, job_id: str) -> str:
    try:
        return (await api.get_job(job_id))["name"]
    except ApiError:
        return job_id  # deleted meanwhile
