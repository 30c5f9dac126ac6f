"""What the inspect commands (show, diff, textconv) share: loading a cassette into a decoded view with progress
on a terminal, and writing long output to a pipe that may close early, control characters escaped."""

from __future__ import annotations

import codecs
import contextlib
import dataclasses
import gc
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from jsreplay.cassette.format import CassetteReader
from jsreplay.cassette.model import group_calls
from jsreplay.cli.progress import StatusLine
from jsreplay.inspect.show import dump_json
from jsreplay.inspect.values import printable
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
    schema: bytes | None = None,
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
    if schema is not None:  # --schema: decode with it instead of the embedded one (and compare it so in diff)
        header = dataclasses.replace(header, descriptor_set=schema)
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


def write_output(
    chunks: Iterable[str],
    *,
    color: bool | None = None,
    sep: str = "\n",
    escapes: bool = True,
    printable_text: bool = False,
) -> None:
    """Write lines to stdout (or, with `sep=""`, pieces of one text, then a newline); a reader that goes away
    (`| head`) ends the command quietly. `escapes=False` promises the text holds no terminal escape sequences
    (JSON escapes every control character): then it goes to a UTF-8 stdout as it is, not through click.echo's
    scan for escape sequences to strip. Otherwise control and bidi characters are escaped (`printable`), unless
    `printable_text` says the renderer did that itself (diff, whose colours are escape sequences)."""
    stream = None if escapes or not _utf8(sys.stdout) else sys.stdout
    if escapes and not printable_text:  # cassette text may hold terminal escapes: shown escaped, not acted on
        chunks = map(printable, chunks)

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
