"""`jsreplay diff OLD NEW`: what changed in meaning between two cassettes. Exit 0 equivalent, 1 different."""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import click

from jsreplay.cli.inspecting import gc_paused, load_view, write_json, write_output
from jsreplay.cli.main import EXIT_DIFFERENT, EXIT_OK
from jsreplay.cli.options import format_option, ignore_option, schema_option
from jsreplay.cli.progress import StatusLine
from jsreplay.inspect.diff import (
    CanonicalUnits,
    DiffOptions,
    DroppedDataError,
    canonical_units,
    diff_views,
)
from jsreplay.inspect.diff_output import render_text, report_to_json
from jsreplay.inspect.view import CassetteView

# Cassettes at least this big (together) are loaded side by side, the new one in a forked process.
PARALLEL_LOAD_BYTES = 16 << 20


def _load_for_diff(
    path: Path, options: DiffOptions, schema: bytes | None = None
) -> tuple[CassetteView, CanonicalUnits] | None:
    """In the forked process: the view and its canonical units, with what the parent will not need dropped;
    None when loading fails (the parent then loads it itself and reports why)."""
    try:
        with gc_paused():
            view = load_view(path, frames=False, counts=False, status=StatusLine(stream=io.StringIO()), schema=schema)
            units = canonical_units(view, options)
    except Exception:
        return None
    drop_inner_messages(view)
    return view, units


def drop_inner_messages(view: CassetteView) -> None:
    """Less to send back: with the units built, diff reads an inner call's messages again only to name unknown
    fields with the other cassette's schema (kept), or to rebuild its unit for a renamed method (then
    `diff_views` raises DroppedDataError and the parent loads the cassette itself). Their decoded values are
    most of a view that carries byte streams, and the units hold them normalised already."""
    for call in view.calls:
        for inner in call.inner or ():
            for message in (*inner.requests, *inner.responses):
                if message.value is not None and not message.unknown_paths:
                    message.data, message.value = b"", None
    view.inner_data_dropped = True


def _load_both(
    old: Path, new: Path, options: DiffOptions, status: StatusLine, schema: bytes | None = None
) -> tuple[CassetteView, CanonicalUnits, CassetteView, CanonicalUnits | None]:
    """Both cassettes, decoded, the old one's canonical units and, when built alongside, the new one's.

    Big cassettes load in parallel: decoding is CPU-bound Python, and forking before anything is loaded keeps
    the child cheap. The child also builds the new cassette's units, as the parent does the old one's; only
    its result travels back, pickled."""
    try:
        big = old.stat().st_size + new.stat().st_size >= PARALLEL_LOAD_BYTES
    except OSError:
        big = False  # load_view reports the missing file
    if not big or (os.cpu_count() or 1) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        old_view = load_view(old, frames=False, counts=False, status=status, schema=schema)
        new_view = load_view(new, frames=False, counts=False, status=status, schema=schema)
        return old_view, canonical_units(old_view, options), new_view, None
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        pending = pool.submit(_load_for_diff, new, options, schema)
        old_view = load_view(old, frames=False, counts=False, status=status, schema=schema)
        old_units = canonical_units(old_view, options)
        status.show(f"{new.name}: decoding", force=True)
        loaded = pending.result()
    if loaded is None:
        return old_view, old_units, load_view(new, frames=False, counts=False, status=status, schema=schema), None
    return old_view, old_units, *loaded


@click.command("diff")
@click.argument("old", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
@format_option("text", "json", help="Readable lines (coloured on a terminal), or one JSON document (docs/inspect.md).")
@ignore_option("Leave this field out, e.g. 'ClientService/GetLease.response.selector' or just 'selector' (repeatable).")
@click.option("--no-default-ignores", is_flag=True, help="Compare volatile values too (UUIDs, tokens, times...).")
@click.option(
    "--timing-threshold",
    type=click.FloatRange(min=0),
    metavar="PERCENT",
    help="Also report calls whose duration changed by more than PERCENT.",
)
@schema_option("Decode both with this schema (union, v0.9.0, head, or a path); then no schema difference is shown.")
@click.option(
    "--show-ignored",
    is_flag=True,
    help="Also list what was treated as the same (masked values, races, re-chunked streams) and why.",
)
def diff_command(
    old: Path,
    new: Path,
    fmt: str,
    ignores: tuple[str, ...],
    no_default_ignores: bool,
    timing_threshold: float | None,
    schema: bytes | None,
    show_ignored: bool,
) -> None:
    """Compare two cassettes call by call, field by field, and their embedded schemas.

    Volatile values (UUIDs, tokens, lease names, server-computed times, the cluster's addresses, temporary paths
    and times in texts) are ignored by default; how the router chunked a tunnel or a driver its streamed output,
    the order of calls that raced, and how many times a poll repeated are not differences.
    Exit status: 0 equivalent, 1 different, 2 error.
    """
    status = StatusLine()
    options = DiffOptions(
        ignores=ignores,
        defaults=not no_default_ignores,
        timing_threshold=timing_threshold,
        show_ignored=show_ignored,
    )
    with gc_paused():
        old_view, old_units, new_view, new_units = _load_both(old, new, options, status, schema)
        status.show("comparing", force=True)
        try:
            try:
                report = diff_views(old_view, new_view, options, old_units=old_units, new_units=new_units)
            except DroppedDataError:
                new_view = load_view(new, frames=False, counts=False, status=status, schema=schema)
                report = diff_views(old_view, new_view, options)
        finally:
            status.clear()
    if fmt == "json":
        write_json(report_to_json(report, str(old), str(new)))
    else:
        write_output(render_text(report, str(old), str(new), style=click.style), color=None, printable_text=True)
    sys.exit(EXIT_OK if report.equivalent else EXIT_DIFFERENT)
