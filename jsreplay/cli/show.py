"""`jsreplay show`: a cassette as a timeline, a JSON document or a Mermaid sequence diagram."""

from __future__ import annotations

from pathlib import Path

import click

from jsreplay.cli.inspecting import gc_paused, load_view, write_output
from jsreplay.cli.options import format_option
from jsreplay.inspect.mermaid import render_mermaid
from jsreplay.inspect.show import ShowOptions, render_text, select_calls, view_json_text


@click.command("show")
@click.argument("cassette", type=click.Path(dir_okay=False, path_type=Path))
@format_option(
    "text", "json", "mermaid", help="A timeline, one JSON document (for scripts and jq), or a Mermaid sequence diagram."
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
def show_command(cassette: Path, fmt: str, methods: tuple[str, ...], no_tunnel: bool, raw: bool) -> None:
    """Show a cassette: every call in time order with its messages, router tunnels with their inner calls.

    Unknown fields (a peer newer than the cassette's schema) appear by number, marked "unknown field".

    Exit codes: 0 shown; 2 an error (a bad flag, an unreadable or corrupt cassette).
    """
    with gc_paused():
        # The diagram shows calls and outcomes, not message contents: skip decoding them.
        # Router frames are shown only as bytes (--raw) or when their tunnels are not decoded.
        view = load_view(cassette, decode=not raw and fmt != "mermaid", tunnels=not no_tunnel, frames=raw or no_tunnel)
        options = ShowOptions(methods=methods, raw=raw)
        if fmt == "json":
            write_output(view_json_text(view, str(cassette), options), sep="", escapes=False)
        elif fmt == "mermaid":
            write_output(render_mermaid(select_calls(view, methods), view))
        else:
            write_output(render_text(view, str(cassette), options))
