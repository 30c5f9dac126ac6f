"""`jsreplay textconv CASSETTE`: stable text for git (`*.msgpack diff=jsreplay`); see docs/inspect.md."""

from __future__ import annotations

from pathlib import Path

import click

from jsreplay.cli.inspecting import gc_paused, load_view, write_output
from jsreplay.inspect.textconv import render_textconv


@click.command("textconv")
@click.argument("cassette", type=click.Path(dir_okay=False, path_type=Path))
def textconv_command(cassette: Path) -> None:
    """Print a cassette as deterministic text with volatile values masked, for `git diff`.

    In .gitattributes: `*.msgpack diff=jsreplay`; in git config: `git config diff.jsreplay.textconv
    "jsreplay textconv"`.

    Exit codes: 0 printed; 2 an error (a bad flag, an unreadable or corrupt cassette).
    """
    with gc_paused():
        write_output(render_textconv(load_view(cassette, frames=False, counts=False)))
