"""`jsreplay redact IN OUT`: re-redact a cassette, and scrub values wherever they occur (see jsreplay/edit/)."""

from __future__ import annotations

from pathlib import Path

import click

from jsreplay.edit.redact import redact_cassette
from jsreplay.edit.scrub import MIN_SCRUB_BYTES


@click.command("redact")
@click.argument("source", metavar="IN", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("output", metavar="[OUT]", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--redact-field",
    "fields",
    multiple=True,
    metavar="PATH",
    help="Also redact this field, e.g. jumpstarter.v1.GetReportResponse.uuid (repeatable).",
)
@click.option(
    "--redact-metadata",
    "metadata_keys",
    multiple=True,
    metavar="KEY",
    help="Also redact this metadata key (repeatable).",
)
@click.option(
    "--scrub",
    "scrub",
    multiple=True,
    metavar="TEXT",
    help=f"Replace TEXT wherever it occurs: raw, hex or base64 (repeatable; at least {MIN_SCRUB_BYTES} bytes).",
)
@click.option("--in-place", is_flag=True, help="Replace IN (a new file renamed over it) instead of writing OUT.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
def redact_command(
    source: Path,
    output: Path | None,
    fields: tuple[str, ...],
    metadata_keys: tuple[str, ...],
    scrub: tuple[str, ...],
    in_place: bool,
    overwrite: bool,
) -> None:
    """Apply the redaction rules to an existing cassette, with a fresh key; the header records it.

    The default rules plus --redact-field/--redact-metadata, and --scrub values replaced by same-length
    fingerprints everywhere (messages, metadata, status details, upstreams). IN is not modified unless
    --in-place. The output is read back (and, with --scrub, searched again) before it is put in place.
    """
    if in_place == (output is not None):
        raise click.UsageError("give OUT, or --in-place (not both)")
    for path in fields:
        if path.count(".") < 2:
            raise click.UsageError(f"--redact-field {path!r}: expected package.Message.field")
    for value in scrub:
        if len(value.encode()) < MIN_SCRUB_BYTES:
            raise click.UsageError(
                f"--scrub: a value must be at least {MIN_SCRUB_BYTES} bytes (shorter ones match by chance)"
            )
    result = redact_cassette(
        source,
        output,
        metadata_keys=metadata_keys,
        fields=fields,
        scrub=scrub,
        overwrite=overwrite,
        in_place=in_place,
    )
    scrubbed = f", {result.replaced} scrubbed occurrence(s) replaced" if scrub else ""
    click.echo(f"jsreplay redact: wrote {result.output} ({result.events} events{scrubbed})", err=True)
