"""Helpers for the inspect tests: load cassettes, edit them event by event, run the CLI, find the JSON schemas."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from jsreplay.cassette.format import read_cassette, write_cassette
from jsreplay.cassette.model import AnyEvent, CallStart, Cassette
from jsreplay.cli import cli
from jsreplay.inspect.view import CassetteView, build_view


def load(path: Path) -> CassetteView:
    cassette = read_cassette(path)
    return build_view(cassette.header, cassette.calls(), events=len(cassette.events))


def edit(src: Path, dst: Path, change: Callable[[Cassette], Cassette]) -> Path:
    """Write `change(cassette)` to `dst`, renumbering event seqs (edits may add or drop events)."""
    cassette = change(read_cassette(src))
    events: list[AnyEvent] = [dataclasses.replace(e, seq=i) for i, e in enumerate(cassette.events)]
    write_cassette(dst, dataclasses.replace(cassette, events=tuple(events)), redactor=None, overwrite=True)
    return dst


def call_ids(cassette: Cassette, method_suffix: str) -> list[int]:
    """Call ids of the calls whose method ends with `method_suffix`, in start order."""
    return [e.call_id for e in cassette.events if isinstance(e, CallStart) and e.method.endswith(method_suffix)]


@dataclass(frozen=True)
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str | Path) -> CliResult:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def json_schema(name: str) -> Any:
    return json.loads(resources.files("jsreplay").joinpath("schemas", name).read_text())


def replace_events(cassette: Cassette, change: Callable[[AnyEvent], AnyEvent | None]) -> Cassette:
    """The cassette with each event replaced by `change(event)` (None drops it)."""
    events = tuple(e2 for e in cassette.events if (e2 := change(e)) is not None)
    return dataclasses.replace(cassette, events=events)
