"""`jsreplay record`: run the recording proxy until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from jsreplay.cli.options import (
    elision_options,
    elision_threshold,
    listen_options,
    listen_tls_options,
    schema_option,
    upstream_options,
    upstream_trust,
)
from jsreplay.cli.progress import human_bytes
from jsreplay.cli.recording import run_until_stopped
from jsreplay.record import RecordConfig
from jsreplay.serving import parse_hostport


@click.command("record")
@click.option("--upstream", required=True, metavar="HOST:PORT", help="The real controller to forward to.")
@click.option(
    "--cassette",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cassette file to write.",
)
@listen_options("peers")
@upstream_options
@click.option("--no-redact", is_flag=True, help="Keep secrets in the cassette (the header says so).")
@click.option(
    "--redact-field",
    "redact_fields",
    multiple=True,
    metavar="PATH",
    help="Also redact this field, e.g. jumpstarter.v1.GetReportResponse.uuid (repeatable).",
)
@click.option(
    "--redact-metadata",
    "redact_metadata",
    multiple=True,
    metavar="KEY",
    help="Also redact this metadata key, e.g. x-my-secret (repeatable).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing cassette.")
@elision_options
@schema_option("The schema the peers speak, embedded in the cassette: union (default), v0.9.0, head, or a path.")
def record_command(
    upstream: str,
    cassette: Path,
    listen: str,
    advertise: str | None,
    upstream_ca: Path | None,
    upstream_insecure: bool,
    tls_cert: Path | None,
    tls_key: Path | None,
    ca_out: Path | None,
    plaintext: bool,
    no_redact: bool,
    redact_fields: tuple[str, ...],
    redact_metadata: tuple[str, ...],
    overwrite: bool,
    elide_above: str,
    keep_payloads: bool,
    schema: bytes | None,
) -> None:
    """Forward everything to a real controller/router and record it to a cassette.

    Point the client's or exporter's `endpoint` at the printed address, trusting the printed CA file (tls.ca)
    or with JUMPSTARTER_GRPC_INSECURE=1. Stop with Ctrl-C or SIGTERM.

    Exit codes: 0 stopped cleanly with the cassette written; 2 an error (a bad flag, a cassette that exists
    without --overwrite, an address that cannot be bound, a recording that failed).
    """
    parse_hostport(upstream, what="--upstream")
    threshold = elision_threshold(elide_above, keep_payloads)
    for path in redact_fields:
        if path.count(".") < 2:
            raise click.UsageError(f"--redact-field {path!r}: expected package.Message.field")
    config = RecordConfig(
        upstream=upstream,
        cassette=cassette,
        listen=listen,
        advertise=advertise,
        upstream_trust=upstream_trust(upstream_ca, upstream_insecure),
        tls=listen_tls_options(tls_cert, tls_key, ca_out, plaintext, listen=listen),
        redact=not no_redact,
        redact_fields=redact_fields,
        overwrite=overwrite,
        schema=schema,
        redact_metadata=tuple(key.lower() for key in redact_metadata),
        elide_above=threshold,
    )
    if no_redact:
        click.echo("jsreplay: warning: --no-redact: tokens and keys will be stored in the cassette", err=True)
    proxy = asyncio.run(run_until_stopped(config))
    stats = proxy.stats
    shared = f" ({human_bytes(stats.shared_bytes)} of tunnel data, seen at both ends, stored once)"
    click.echo(
        f"jsreplay record: {stats.calls} calls ({stats.failed_calls} failed), {stats.events} events, "
        f"{human_bytes(proxy.bytes_written)} written to {cassette}{shared if stats.shared_bytes else ''}",
        err=True,
    )
    elided = proxy.elided
    if elided is not None and elided[0]:
        click.echo(
            f"jsreplay record: {elided[0]} upload(s) above {human_bytes(threshold or 0)} kept as length and SHA-256 "
            f"({human_bytes(elided[1])} of HTTP/2 data not stored; --keep-payloads keeps them)",
            err=True,
        )
    unknown = proxy.unknown_fields
    if unknown:
        where = "; ".join(f"{name}: {', '.join(paths)}" for name, paths in unknown.items())
        click.echo(
            "jsreplay: warning: messages carried fields the schema does not know, which redaction by field name "
            f"cannot see (a secret there is stored in clear; record with --schema for the peers' version): {where}",
            err=True,
        )
    if proxy.error:
        click.echo(f"jsreplay: error: {proxy.error}", err=True)
        raise SystemExit(2)
