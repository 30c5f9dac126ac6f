"""Options several commands share: the listening side (address, TLS), how to trust an upstream, --format and
--ignore."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

# The listening and upstream types load gRPC: imported where used, so show, diff and textconv load no server.
if TYPE_CHECKING:
    from jsreplay.record.upstream import UpstreamTrust
    from jsreplay.serving import ListenTLS

F = TypeVar("F", bound=Callable[..., Any])
_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


def listen_options(peers: str, *, singular: bool = False) -> Callable[[F], F]:
    """--listen, --advertise, --tls-cert, --tls-key, --ca-out, --plaintext; `peers` names who connects ("peers", or
    one peer with `singular`: "the exporter")."""
    from jsreplay.serving import DEFAULT_LISTEN

    use = "uses" if singular else "use"

    options = [
        click.option(
            "--listen", default=DEFAULT_LISTEN, show_default=True, metavar="HOST:PORT", help="Where to listen."
        ),
        click.option(
            "--advertise",
            metavar="HOST:PORT",
            help=f"The address {peers} {use} to reach this server (written into router endpoints); default: --listen.",
        ),
        click.option("--tls-cert", type=_FILE, help="Listening certificate (PEM, chain allowed)."),
        click.option("--tls-key", type=_FILE, help="Its private key."),
        click.option(
            "--ca-out",
            type=click.Path(dir_okay=False, path_type=Path),
            help=f"Write the CA {peers} should trust here (default: a temporary file, printed on start).",
        ),
        click.option("--plaintext", is_flag=True, help="No TLS on the listening side."),
    ]

    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _load_schema(ctx: click.Context, param: click.Parameter, value: str | None) -> bytes | None:
    from jsreplay.protocol.schemas import SchemaError, load_schema

    if value is None:
        return None
    try:
        return load_schema(value)
    except SchemaError as err:
        raise click.BadParameter(str(err), ctx=ctx, param=param) from None


def schema_option(help: str) -> Callable[[F], F]:
    """--schema NAME|PATH, as `schema` (bytes of a FileDescriptorSet, or None): a shipped schema (union, the
    default; v0.9.0; head), a .proto tree or a serialized FileDescriptorSet."""
    return click.option("--schema", "schema", metavar="NAME|PATH", callback=_load_schema, help=help)


def format_option(*formats: str, help: str) -> Callable[[F], F]:
    """--format, choosing among `formats` (the first is the default), as `fmt`."""
    return click.option("--format", "fmt", type=click.Choice(formats), default=formats[0], show_default=True, help=help)


def ignore_option(help: str) -> Callable[[F], F]:
    """--ignore FIELD_PATH (repeatable), as `ignores`: the path syntax of docs/inspect.md, "What is ignored"."""
    return click.option("--ignore", "ignores", multiple=True, metavar="FIELD_PATH", help=help)


def listen_tls_options(
    tls_cert: Path | None, tls_key: Path | None, ca_out: Path | None, plaintext: bool, *, listen: str | None = None
) -> ListenTLS:
    """Validate the listening-side TLS flags; warn when `--plaintext` listens beyond loopback."""
    from jsreplay.serving import ListenTLS
    from jsreplay.tls import load_server_certificate

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if plaintext and (tls_cert is not None or ca_out is not None):
        raise click.UsageError("--plaintext cannot be combined with --tls-cert/--tls-key/--ca-out")
    if plaintext and listen is not None:
        warn_if_plaintext_off_loopback(listen)
    certificate = None
    if tls_cert is not None and tls_key is not None:
        try:
            certificate = load_server_certificate(tls_cert, tls_key)
        except ValueError as err:
            raise click.UsageError(f"--tls-cert/--tls-key: {err}") from None
    return ListenTLS(certificate=certificate, plaintext=plaintext, ca_out=ca_out)


def warn_if_plaintext_off_loopback(listen: str) -> None:
    """One line on stderr when cleartext gRPC (tokens included) would be served beyond this machine."""
    from jsreplay.serving import AddressError, is_loopback_host, parse_hostport

    try:
        host = parse_hostport(listen, what="--listen").host
    except AddressError:
        return  # bind() reports it
    if not is_loopback_host(host):
        where = "every interface" if host in ("", "0.0.0.0", "::") else host
        click.echo(
            f"jsreplay: warning: --plaintext on {where} (--listen {listen}): calls and their tokens cross the "
            "network unencrypted",
            err=True,
        )


def upstream_options(function: F) -> F:
    """--upstream-ca, --upstream-insecure."""
    function = click.option(
        "--upstream-insecure", is_flag=True, help="Trust whatever certificate the upstream presents."
    )(function)
    return click.option("--upstream-ca", type=_FILE, help="CA to trust for the upstream (default: system roots).")(
        function
    )


def upstream_trust(upstream_ca: Path | None, upstream_insecure: bool) -> UpstreamTrust:
    from jsreplay.record.upstream import UpstreamTrust

    if upstream_ca is not None and upstream_insecure:
        raise click.UsageError("--upstream-ca and --upstream-insecure are alternatives")
    return UpstreamTrust(ca_pem=upstream_ca.read_bytes() if upstream_ca else None, insecure=upstream_insecure)


_SIZE_UNITS = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 1000, "mb": 1000**2, "gb": 1000**3}


def parse_size(text: str, *, what: str) -> int:
    """`16MiB`, `512KiB`, `1GiB`, `20MB` or plain bytes; click.BadParameter says what is wrong."""
    found = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    unit = found.group(2).lower() if found else ""
    if found is None or unit not in _SIZE_UNITS:
        raise click.BadParameter(f"{text!r} is not a size (examples: 16MiB, 512KiB, 1GiB, 20000000)", param_hint=what)
    return int(found.group(1)) * _SIZE_UNITS[unit]


def elision_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--elide-above / --keep-payloads: how big uploads are recorded (record, and replay --mode once/all)."""
    fn = click.option(
        "--keep-payloads",
        is_flag=True,
        help="Keep every byte of every upload in the cassette (no elision; verify can then send them all).",
    )(fn)
    return click.option(
        "--elide-above",
        default="16MiB",
        show_default=True,
        metavar="SIZE",
        help="Keep an upload (client-to-exporter byte stream) bigger than this as its length and SHA-256 only; "
        "replay still checks it, verify cannot send it.",
    )(fn)


def elision_threshold(elide_above: str, keep_payloads: bool) -> int | None:
    return None if keep_payloads else parse_size(elide_above, what="--elide-above")
