"""`jsreplay show`: a cassette as a timeline, a JSON document or a Mermaid sequence diagram.

Also home of what the inspect commands (show, diff, textconv) share: loading a cassette into a decoded view
with progress on a terminal, and writing long output to a pipe that may close early.
"""

from __future__ import annotations

import codecs
import contextlib
import gc
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from jsreplay.cassette.format import CassetteReader
from jsreplay.cassette.model import group_calls
from jsreplay.cli.options import format_option
from jsreplay.cli.progress import StatusLine
from jsreplay.inspect.mermaid import render_mermaid
from jsreplay.inspect.show import ShowOptions, dump_json, render_text, select_calls, view_json_text
from jsreplay.inspect.view import CassetteView, build_view

_PROGRESS_EVERY = 4096  # events between progress updates while reading


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block.

    Decoding a big cassette allocates millions of small, acyclic objects (reference counting frees them); the
    collector's full passes over them cost a diff of two 10,000-call cassettes about a third of its time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_view(
    path: Path,
    *,
    decode: bool = True,
    tunnels: bool = True,
    frames: bool = True,
    counts: bool = True,
    status: StatusLine | None = None,
) -> CassetteView:
    """Read and decode a cassette, showing progress on a terminal. Cassette errors propagate (exit 2).

    `frames=False` drops router calls' raw frames, which frees most of the file's bytes; `counts=False` skips
    counting the frames of tunnel ends that hold no inner calls (see `build_view`)."""
    status = status or StatusLine()
    with CassetteReader(path) as reader:
        events = []
        for event in reader:
            events.append(event)
            if len(events) % _PROGRESS_EVERY == 0:
                status.show(f"{path.name}: read {len(events)} events")
        header, truncated_at = reader.header, reader.truncated_at
    calls = group_calls(events)

    def progress(stage: str, done: int, total: int) -> None:
        status.show(f"{path.name}: {stage} {done}/{total}")

    try:
        return build_view(
            header,
            calls,
            decode=decode,
            tunnels=tunnels,
            frames=frames,
            counts=counts,
            events=len(events),
            truncated_at=truncated_at,
            progress=progress if status.enabled else None,
        )
    finally:
        status.clear()


def write_output(chunks: Iterable[str], *, color: bool | None = None, sep: str = "\n", escapes: bool = True) -> None:
    """Write lines to stdout (or, with `sep=""`, pieces of one text, then a newline); a reader that goes away
    (`| head`) ends the command quietly. `escapes=False` promises the text holds no terminal escape sequences
    (JSON escapes every control character): then it goes to a UTF-8 stdout as it is, not through click.echo's
    scan for escape sequences to strip."""
    stream = None if escapes or not _utf8(sys.stdout) else sys.stdout

    def emit(text: str, nl: bool) -> None:
        if stream is None:
            click.echo(text, color=color, nl=nl)
        else:
            stream.write(text + "\n" if nl else text)

    try:
        buffer: list[str] = []
        size = 0
        for line in chunks:
            buffer.append(line)
            size += len(line)
            if size > 1 << 20:
                emit(sep.join(buffer), sep == "\n")
                buffer, size = [], 0
        if buffer or sep != "\n":
            emit(sep.join(buffer), True)
        if stream is not None:
            stream.flush()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit; point stdout at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(0) from None


def _utf8(stream: TextIO) -> bool:
    # What click.echo would write to as it is (it re-wraps a stream with an ASCII encoding).
    try:
        return codecs.lookup(getattr(stream, "encoding", None) or "ascii").name == "utf-8"
    except LookupError:
        return False


def write_json(document: Any) -> None:
    write_output([dump_json(document)], escapes=False)


@click.command("show")
@click.argument("cassette", type=click.Path(dir_okay=False, path_type=Path))
@format_option(
    "text",
    "json",
    "mermaid",
    "html",
    help="A timeline, one JSON document (for scripts and jq), a Mermaid sequence diagram, or one HTML page.",
)
@click.option(
    "--method",
    "methods",
    multiple=True,
    metavar="GLOB",
    help="Only calls whose method matches: full path or Service/Method, e.g. '*Lease' (repeatable).",
)
@click.option("--no-tunnel", is_flag=True, help="Don't decode router tunnels into their inner calls.")
@click.option("--raw", is_flag=True, help="Raw message bytes (hex) instead of decoded messages.")
@click.option(
    "--report",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --format html: a `jsreplay replay --report` file; its misses and faults are marked on the page.",
)
def show_command(
    cassette: Path, fmt: str, methods: tuple[str, ...], no_tunnel: bool, raw: bool, report: Path | None
) -> None:
    """Show a cassette: every call in time order with its messages, router tunnels with their inner calls.

    Unknown fields (a peer newer than the cassette's schema) appear by number, marked "unknown field".
    """
    if report is not None and fmt != "html":
        raise click.UsageError("--report goes with --format html")
    report_doc = None
    if report is not None:
        from jsreplay.inspect.html import load_report

        try:
            report_doc = load_report(report.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise click.UsageError(f"--report {report}: {err}") from None
    with gc_paused():
        # The diagram shows calls and outcomes, not message contents: skip decoding them.
        # Router frames are shown only as bytes (--raw) or when their tunnels are not decoded.
        view = load_view(cassette, decode=not raw and fmt != "mermaid", tunnels=not no_tunnel, frames=raw or no_tunnel)
        options = ShowOptions(methods=methods, raw=raw)
        if fmt == "html":
            from jsreplay.inspect.html import render_html

            view.calls = select_calls(view, methods)
            write_output(render_html(view, str(cassette), report_doc), sep="", escapes=False)
        elif fmt == "json":
            write_output(view_json_text(view, str(cassette), options), sep="", escapes=False)
        elif fmt == "mermaid":
            write_output(render_mermaid(select_calls(view, methods), view))
        else:
            write_output(render_text(view, str(cassette), options))
