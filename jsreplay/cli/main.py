"""The command group, exit codes, and turning known errors into one clear line instead of a traceback."""

from __future__ import annotations

import importlib
import logging
import sys
import warnings
from typing import Any

import click

from jsreplay import __version__
from jsreplay.cassette.errors import CassetteError, TruncatedCassetteWarning
from jsreplay.inspect.values import printable
from jsreplay.protocol.registry import ProtocolError

EXIT_OK = 0
EXIT_DIFFERENT = 1
EXIT_ERROR = 2

# Each command is imported when it runs, so `show` and `diff` do not pay for loading gRPC servers.
COMMANDS: dict[str, tuple[str, str]] = {
    "record": ("jsreplay.cli.record", "record_command"),
    "replay": ("jsreplay.cli.replay", "replay_command"),
    "verify": ("jsreplay.cli.verify", "verify_command"),
    "show": ("jsreplay.cli.show", "show_command"),
    "diff": ("jsreplay.cli.diff", "diff_command"),
    "textconv": ("jsreplay.cli.textconv", "textconv_command"),
    "redact": ("jsreplay.cli.redact", "redact_command"),
    "trim": ("jsreplay.cli.trim", "trim_command"),
    "cat": ("jsreplay.cli.cat", "cat_command"),
}


def known_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is complete on its own: printed as one line, exit 2."""
    errors: list[type[BaseException]] = [CassetteError, ProtocolError, OSError]
    serving = sys.modules.get("jsreplay.serving")  # only commands that listen can raise its AddressError
    if serving is not None:
        errors.append(serving.AddressError)
    return tuple(errors)


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    if issubclass(category, TruncatedCassetteWarning):
        click.echo(f"jsreplay: warning: {message}", err=True)
    else:
        click.echo(f"jsreplay: warning: {category.__name__}: {message}", err=True)


class Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = COMMANDS.get(cmd_name)
        if found is None:
            return None
        module, attribute = found
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as err:
            if not isinstance(err, known_errors()):
                raise
            click.echo(f"jsreplay: error: {printable(str(err))}", err=True)
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


def main() -> None:
    cli(prog_name="jsreplay")
