"""`jsreplay trim IN OUT`: keep or drop calls, with what replay needs for the rest (see jsreplay/edit/trim.py)."""

from __future__ import annotations

from pathlib import Path

import click

from jsreplay.edit.trim import Selection, trim_cassette


def _ids(values: tuple[str, ...], flag: str) -> frozenset[int]:
    ids: set[int] = set()
    for value in values:
        for part in value.split(","):
            low, sep, high = part.strip().partition("-")
            try:
                ids.update(range(int(low), int(high) + 1) if sep else [int(low)])
            except ValueError:
                raise click.BadParameter(f"{part!r}: expected a call id or a range like 4-9", param_hint=flag) from None
    return frozenset(ids)


@click.command("trim")
@click.argument("source", metavar="IN", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("output", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--method", "methods", multiple=True, metavar="GLOB", help="Keep calls whose method matches (repeatable)."
)
@click.option("--drop-method", "drop_methods", multiple=True, metavar="GLOB", help="Drop calls whose method matches.")
@click.option("--since", "since_s", type=float, metavar="SECONDS", help="Keep calls that started at or after this.")
@click.option("--until", "until_s", type=float, metavar="SECONDS", help="Keep calls that started before this.")
@click.option("--call", "call_ids", multiple=True, metavar="IDS", help="Keep these call ids: 7, 4-9, 3,5 (repeatable).")
@click.option("--drop-call", "drop_ids", multiple=True, metavar="IDS", help="Drop these call ids (repeatable).")
@click.option("--no-deps", is_flag=True, help="Keep only the selection, not the calls replay needs for it.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def trim_command(
    source: Path,
    output: Path,
    methods: tuple[str, ...],
    drop_methods: tuple[str, ...],
    since_s: float | None,
    until_s: float | None,
    call_ids: tuple[str, ...],
    drop_ids: tuple[str, ...],
    no_deps: bool,
    overwrite: bool,
) -> None:
    """Keep the calls selected (all criteria at once) minus the dropped ones, plus what replaying them needs:
    a tunnel's other end and the Dial/Listen that issued its token; every call naming a kept call's lease
    (CreateLease, GetLease, DeleteLease, Dial) and the client's GetExporter while it lived.

    Times are seconds since the recording started, as `jsreplay show` prints them. A tunnel is kept whole.
    """
    selection = Selection(
        methods=methods,
        drop_methods=drop_methods,
        since_s=since_s,
        until_s=until_s,
        calls=_ids(call_ids, "--call") if call_ids else None,
        drop_calls=_ids(drop_ids, "--drop-call"),
        dependencies=not no_deps,
    )
    try:
        result = trim_cassette(source, output, selection, overwrite=overwrite)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    added = (
        f", {len(result.added)} added for replay ({', '.join(f'#{i}' for i in result.added)})" if result.added else ""
    )
    click.echo(f"jsreplay trim: wrote {output}: kept {result.kept} of {result.total} calls{added}", err=True)
