"""`jsreplay diff OLD NEW`: what changed in meaning between two cassettes. Exit 0 equivalent, 1 different."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from jsreplay.cli.main import EXIT_DIFFERENT, EXIT_OK
from jsreplay.cli.progress import StatusLine
from jsreplay.cli.show import gc_paused, load_view, write_json, write_output
from jsreplay.inspect.diff import DiffOptions, diff_views, render_text, report_to_json


@click.command("diff")
@click.argument("old", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Readable lines (coloured on a terminal), or one JSON document (docs/inspect.md).",
)
@click.option(
    "--ignore",
    "ignores",
    multiple=True,
    metavar="FIELD_PATH",
    help="Leave this field out, e.g. 'ClientService/GetLease.response.selector' or just 'selector' (repeatable).",
)
@click.option("--no-default-ignores", is_flag=True, help="Compare volatile values too (UUIDs, tokens, times...).")
@click.option(
    "--timing-threshold",
    type=click.FloatRange(min=0),
    metavar="PERCENT",
    help="Also report calls whose duration changed by more than PERCENT.",
)
def diff_command(
    old: Path,
    new: Path,
    fmt: str,
    ignores: tuple[str, ...],
    no_default_ignores: bool,
    timing_threshold: float | None,
) -> None:
    """Compare two cassettes call by call, field by field, and their embedded schemas.

    Volatile values (UUIDs, tokens, lease names, server-computed times) are ignored by default; how the router
    chunked a tunnel, the order of calls that raced, and how many times a poll repeated are not differences.
    Exit status: 0 equivalent, 1 different, 2 error.
    """
    status = StatusLine()
    options = DiffOptions(ignores=ignores, defaults=not no_default_ignores, timing_threshold=timing_threshold)
    with gc_paused():
        old_view = load_view(old, status=status)
        new_view = load_view(new, status=status)
        status.show("comparing", force=True)
        try:
            report = diff_views(old_view, new_view, options)
        finally:
            status.clear()
    if fmt == "json":
        write_json(report_to_json(report, str(old), str(new)))
    else:
        write_output(render_text(report, str(old), str(new), style=click.style), color=None)
    sys.exit(EXIT_OK if report.equivalent else EXIT_DIFFERENT)
