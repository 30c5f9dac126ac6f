"""`jsreplay cat A B ... OUT`: join recordings into one cassette (see jsreplay/edit/join.py)."""

from __future__ import annotations

from pathlib import Path

import click

from jsreplay.edit.join import join_cassettes


@click.command("cat")
@click.argument("paths", metavar="IN... OUT", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def cat_command(paths: tuple[Path, ...], overwrite: bool) -> None:
    """Join cassettes, one after another: call ids and sequence numbers renumbered, times (and the timestamps
    in controller responses) shifted, upstreams and redaction rules of all carried. The schemas must be
    compatible (each input's a subset of one of them); inputs that share a router token are refused."""
    if len(paths) < 3:
        raise click.UsageError("give at least two cassettes to join and the output")
    *sources, output = paths
    result = join_cassettes(sources, output, overwrite=overwrite)
    click.echo(f"jsreplay cat: wrote {output}: {len(sources)} cassettes, {result.calls} calls", err=True)
