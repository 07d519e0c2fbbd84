"""The ``term-llm`` root command (asyncclick, on trio)."""

from __future__ import annotations

import asyncclick as click

from termjobs.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="termjobs", prog_name="term-llm")
def cli() -> None:
    """term-llm: run and drive the termjobs job runner."""


cli.add_command(serve)


def main() -> None:
    """Console-script entry point."""
    cli(_anyio_backend="trio")
