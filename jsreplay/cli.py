"""The `jsreplay` command line."""

from __future__ import annotations

import click

from jsreplay import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jsreplay")
def cli() -> None:
    """Record, replay, inspect and diff Jumpstarter gRPC sessions."""


def main() -> None:
    cli()
