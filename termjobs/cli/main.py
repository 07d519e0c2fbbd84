"""The ``term-llm`` root command (asyncclick, on trio)."""

from __future__ import annotations

import asyncclick as click

from termjobs.cli.completion import PROG_NAME, completion
from termjobs.cli.jobs import jobs
from termjobs.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="termjobs", prog_name=PROG_NAME)
def cli() -> None:
    """term-llm: run and drive the termjobs job runner."""


cli.add_command(serve)
cli.add_command(jobs)
cli.add_command(completion)


def main() -> None:
    """Console-script entry point."""
    # A fixed program name, so that usage lines and the completion variable
    # (_TERM_LLM_COMPLETE) are the same under `python -m termjobs`.
    cli(_anyio_backend="trio", prog_name=PROG_NAME)
