"""`jsreplay record`: run the recording proxy until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from jsreplay.cli.progress import StatusLine, human_bytes
from jsreplay.record import RecordConfig, RecordingProxy, UpstreamTrust
from jsreplay.serving import ListenTLS, parse_hostport
from jsreplay.tls import load_server_certificate

REACHABILITY_TIMEOUT_S = 3.0


def listen_tls_options(tls_cert: Path | None, tls_key: Path | None, ca_out: Path | None, plaintext: bool) -> ListenTLS:
    """Validate the listening-side TLS flags shared by record and replay."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if plaintext and (tls_cert is not None or ca_out is not None):
        raise click.UsageError("--plaintext cannot be combined with --tls-cert/--tls-key/--ca-out")
    certificate = None
    if tls_cert is not None and tls_key is not None:
        try:
            certificate = load_server_certificate(tls_cert, tls_key)
        except ValueError as err:
            raise click.UsageError(f"--tls-cert/--tls-key: {err}") from None
    return ListenTLS(certificate=certificate, plaintext=plaintext, ca_out=ca_out)


async def _warn_if_unreachable(upstream: str) -> None:
    address = parse_hostport(upstream, what="--upstream")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address.host, address.port), REACHABILITY_TIMEOUT_S)
        writer.close()
    except (OSError, TimeoutError) as err:
        click.echo(
            f"jsreplay: warning: upstream {upstream} is not reachable now ({err or 'timed out'}); "
            "calls will fail with UNAVAILABLE until it is",
            err=True,
        )


async def run_until_stopped(config: RecordConfig) -> RecordingProxy:
    proxy = RecordingProxy(config)
    await proxy.start()
    trust = "plaintext" if config.tls.plaintext else f"CA file {proxy.ca_file}"
    click.echo(f"jsreplay record: listening on {proxy.endpoint} ({trust}), recording to {config.cassette}")
    sys.stdout.flush()
    await _warn_if_unreachable(config.upstream)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    status = StatusLine()
    try:
        while not stop.is_set():
            stats = proxy.stats
            status.show(
                f"{stats.calls} calls, {stats.open_streams} open streams, {stats.events} events, "
                f"{human_bytes(proxy.bytes_written)} written"
            )
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
    finally:
        status.clear()
        await proxy.stop()
    return proxy


@click.command("record")
@click.option("--upstream", required=True, metavar="HOST:PORT", help="The real controller to forward to.")
@click.option(
    "--cassette",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Cassette file to write.",
)
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT", help="Where to listen.")
@click.option(
    "--advertise",
    metavar="HOST:PORT",
    help="Address peers use to reach the proxy (written into router endpoints); default: the listen address.",
)
@click.option("--upstream-ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="CA to trust.")
@click.option("--upstream-insecure", is_flag=True, help="Trust whatever certificate the upstream presents.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Listening cert.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Its private key.")
@click.option(
    "--ca-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the CA peers should trust here (default: a temporary file, printed on start).",
)
@click.option("--plaintext", is_flag=True, help="No TLS on the listening side.")
@click.option("--no-redact", is_flag=True, help="Keep secrets in the cassette (the header says so).")
@click.option(
    "--redact-field",
    "redact_fields",
    multiple=True,
    metavar="PATH",
    help="Also redact this field, e.g. jumpstarter.v1.GetReportResponse.uuid (repeatable).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing cassette.")
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
    overwrite: bool,
) -> None:
    """Forward everything to a real controller/router and record it to a cassette.

    Point the client's or exporter's `endpoint` at the printed address, trusting the printed CA file (tls.ca)
    or with JUMPSTARTER_GRPC_INSECURE=1. Stop with Ctrl-C or SIGTERM.
    """
    if upstream_ca is not None and upstream_insecure:
        raise click.UsageError("--upstream-ca and --upstream-insecure are alternatives")
    parse_hostport(upstream, what="--upstream")
    for path in redact_fields:
        if path.count(".") < 2:
            raise click.UsageError(f"--redact-field {path!r}: expected package.Message.field")
    config = RecordConfig(
        upstream=upstream,
        cassette=cassette,
        listen=listen,
        advertise=advertise,
        upstream_trust=UpstreamTrust(
            ca_pem=upstream_ca.read_bytes() if upstream_ca else None, insecure=upstream_insecure
        ),
        tls=listen_tls_options(tls_cert, tls_key, ca_out, plaintext),
        redact=not no_redact,
        redact_fields=redact_fields,
        overwrite=overwrite,
    )
    if no_redact:
        click.echo("jsreplay: warning: --no-redact: tokens and keys will be stored in the cassette", err=True)
    proxy = asyncio.run(run_until_stopped(config))
    stats = proxy.stats
    click.echo(
        f"jsreplay record: {stats.calls} calls ({stats.failed_calls} failed), {stats.events} events, "
        f"{human_bytes(proxy.bytes_written)} written to {cassette}",
        err=True,
    )
    if proxy.error:
        click.echo(f"jsreplay: error: {proxy.error}", err=True)
        raise SystemExit(2)
