"""The command group, exit codes, and turning known errors into one clear line instead of a traceback."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import click

from jsreplay import __version__
from jsreplay.cassette.errors import CassetteError, TruncatedCassetteWarning
from jsreplay.protocol.registry import ProtocolError
from jsreplay.serving import AddressError

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_ERROR = 2

# Errors whose message is complete on its own: printed as one line, exit 2.
KNOWN_ERRORS: tuple[type[BaseException], ...] = (CassetteError, ProtocolError, AddressError, OSError)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    if issubclass(category, TruncatedCassetteWarning):
        click.echo(f"jsreplay: warning: {message}", err=True)
    else:
        click.echo(f"jsreplay: warning: {category.__name__}: {message}", err=True)


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KNOWN_ERRORS as err:
            click.echo(f"jsreplay: error: {err}", err=True)
            ctx.exit(EXIT_ERROR)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jsreplay")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Record, replay, inspect and diff Jumpstarter gRPC sessions.

    Exit codes: 0 success, 1 a reported difference or replay miss, 2 an error.
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="jsreplay: %(levelname)s: %(name)s: %(message)s", stream=sys.stderr)
    warnings.showwarning = _show_warning


def _register_commands() -> None:
    from jsreplay.cli import record, replay

    cli.add_command(record.record_command)
    cli.add_command(replay.replay_command)
    cli.add_command(__import__("jsreplay.cli.verify", fromlist=["verify_command"]).verify_command)
    __import__("jsreplay.cli.show", fromlist=["register"]).register(cli)  # show, diff, textconv


_register_commands()


def main() -> None:
    cli(prog_name="jsreplay")
