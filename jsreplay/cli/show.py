"""`jsreplay show`: a cassette as a timeline, a JSON document or a Mermaid sequence diagram."""

from __future__ import annotations

from pathlib import Path

import click

from jsreplay.cli.inspecting import gc_paused, load_view, write_output
from jsreplay.cli.options import format_option, schema_option
from jsreplay.inspect.mermaid import render_mermaid
from jsreplay.inspect.show import ShowOptions, render_text, select_calls, view_json_text


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
@schema_option("Decode with this schema instead of the one the cassette embeds: union, v0.9.0, head, or a path.")
def show_command(
    cassette: Path,
    fmt: str,
    methods: tuple[str, ...],
    no_tunnel: bool,
    raw: bool,
    report: Path | None,
    schema: bytes | None,
) -> None:
    """Show a cassette: every call in time order with its messages, router tunnels with their inner calls.

    Unknown fields (a peer newer than the cassette's schema) appear by number, marked "unknown field".

    Exit codes: 0 shown; 2 an error (a bad flag, an unreadable or corrupt cassette).
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
        view = load_view(
            cassette, decode=not raw and fmt != "mermaid", tunnels=not no_tunnel, frames=raw or no_tunnel, schema=schema
        )
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
