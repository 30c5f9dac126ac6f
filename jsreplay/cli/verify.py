"""`jsreplay verify CASSETTE`: does a real exporter still answer the recorded client as it did?"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import click

from jsreplay.cli.main import EXIT_ERROR
from jsreplay.cli.options import format_option, ignore_option, listen_options, listen_tls_options, schema_option
from jsreplay.verify import DEFAULT_TIMEOUT_S, Verifier, VerifyConfig, VerifyError, VerifyReport


async def _run(config: VerifyConfig) -> VerifyReport:
    verifier = Verifier(config)
    await verifier.start()
    try:
        trust = "plaintext" if config.tls.plaintext else f"CA file {verifier.ca_file}"
        # The banner goes to stderr: stdout carries only the report (JSON with --format json).
        click.echo(f"jsreplay verify: listening on {verifier.endpoint} ({trust})", err=True)
        click.echo(
            f"jsreplay verify: start the exporter with endpoint {verifier.endpoint}; "
            f"waiting up to {config.timeout:g}s for it",
            err=True,
        )
        sys.stderr.flush()
        waiting = asyncio.create_task(verifier.wait())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, waiting.cancel)
        try:
            return await waiting
        except asyncio.CancelledError:
            raise VerifyError("interrupted before the verification finished") from None
    finally:
        await verifier.stop()


@click.command("verify")
@click.argument("cassette", type=click.Path(dir_okay=False, path_type=Path))
@listen_options("the exporter", singular=True)
@format_option("text", "json", help="Readable lines, or one JSON document (docs/verify.md).")
@ignore_option("Do not compare this field, e.g. 'ExporterService/GetStatus.response.message' (repeatable).")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for the exporter to connect, and for each later step before giving up on it.",
)
@schema_option("Decode the cassette with this schema (union, v0.9.0, head, or a path) instead of its own.")
def verify_command(
    cassette: Path,
    listen: str,
    advertise: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    ca_out: Path | None,
    plaintext: bool,
    fmt: str,
    ignores: tuple[str, ...],
    timeout: float,
    schema: bytes | None,
) -> None:
    """Play the controller and the recorded client for a real exporter, and compare its answers.

    Start the exporter with its config's `endpoint` set to the printed address, trusting the printed CA file
    (tls.ca) or with JUMPSTARTER_GRPC_INSECURE=1; any token works. Exit status: 0 the exporter answered as
    recorded, 1 something differs (the report says what), 2 an error (e.g. no exporter connected in time).
    """
    config = VerifyConfig(
        cassette=cassette,
        listen=listen,
        advertise=advertise,
        tls=listen_tls_options(tls_cert, tls_key, ca_out, plaintext, listen=listen),
        ignores=ignores,
        timeout=timeout,
        schema=schema,
    )
    try:
        report = asyncio.run(_run(config))
    except VerifyError as err:
        click.echo(f"jsreplay: error: {err}", err=True)
        sys.exit(EXIT_ERROR)
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(report.render_text(style=click.style), color=None, nl=False)
    sys.exit(report.exit_code)
