"""The listening side shared by `record` and `replay`: addresses, TLS as real Jumpstarter peers need it, bind.

Both servers listen on loopback unless told otherwise, present a certificate with IP SANs for the listen and
advertised hosts (the peers check host names even in insecure mode), send the CA along with the leaf, and
write that CA to a file the user can hand to `tls.ca` or ignore with `JUMPSTARTER_GRPC_INSECURE=1`.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from jsreplay.files import create_replacing
from jsreplay.protocol.registry import StreamKind
from jsreplay.tls import CertificateAuthority, ServerCertificate, server_credentials

DEFAULT_LISTEN = "127.0.0.1:0"
_WILDCARDS = {"0.0.0.0", "::", ""}


class AddressError(ValueError):
    """A HOST:PORT that cannot be used."""


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_wildcard(self) -> bool:
        return self.host in _WILDCARDS


def parse_hostport(text: str, *, what: str = "address") -> HostPort:
    """'127.0.0.1:8080', '[::1]:0', 'example.com:443' -> HostPort."""
    text = text.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise AddressError(f"{what} {text!r} is not [HOST]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise AddressError(f"{what} {text!r} has no port (expected HOST:PORT)")
    try:
        port = int(port_text)
    except ValueError:
        raise AddressError(f"{what} {text!r} has a port that is not a number") from None
    if not 0 <= port <= 65535:
        raise AddressError(f"{what} {text!r} has a port out of range")
    return HostPort(host, port)


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def is_loopback_host(host: str) -> bool:
    """A host name or address that only this machine can reach (a wildcard is not: it is every interface)."""
    host = host.strip("[]").lower().rstrip(".")
    if host in LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ListenTLS:
    """How the listening side speaks TLS. `certificate=None` and `plaintext=False` mean a throw-away CA."""

    certificate: ServerCertificate | None = None
    plaintext: bool = False
    ca_out: Path | None = None  # where to write the CA clients should trust; a temp file when None


@dataclass
class BoundServer:
    """What a caller needs after binding: the address peers should use and what they should trust."""

    listen: HostPort  # the actual bound address (port 0 resolved)
    advertise: HostPort  # what to hand to peers (router_endpoint rewriting)
    ca_pem: bytes | None  # None when plaintext
    ca_file: Path | None
    _temp_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def endpoint(self) -> str:
        return str(self.advertise)

    def cleanup(self) -> None:
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None


def bind(server: grpc.aio.Server, listen: str, tls: ListenTLS, *, advertise: str | None = None) -> BoundServer:
    """Add the listening port to `server` (before it starts) and prepare what peers need to trust it."""
    address = parse_hostport(listen, what="--listen")
    advertised = parse_hostport(advertise, what="--advertise") if advertise else None
    if advertised is None and address.is_wildcard:
        raise AddressError(f"--listen {listen} binds every interface; say which address peers use with --advertise")
    hosts = sorted({h for h in (address.host, advertised.host if advertised else "") if h and h not in _WILDCARDS})
    if tls.plaintext:
        port = server.add_insecure_port(str(address))
        ca_pem = None
    else:
        certificate = tls.certificate or CertificateAuthority.generate().issue(hosts)
        port = server.add_secure_port(str(address), server_credentials(certificate))
        ca_pem = certificate.ca_pem
    if port == 0:
        raise AddressError(f"cannot listen on {address}: address in use or not available")
    bound = HostPort(address.host, port)
    if advertised is None:
        advertised = bound
    elif advertised.port == 0:
        advertised = HostPort(advertised.host, port)
    ca_file: Path | None = None
    temp_dir = None
    if ca_pem is not None:
        if tls.ca_out is not None:
            ca_file = Path(tls.ca_out)
        else:
            temp_dir = tempfile.TemporaryDirectory(prefix="jsreplay-")
            ca_file = Path(temp_dir.name) / "ca.pem"
        fd = create_replacing(ca_file, 0o644)  # never writes through a symlink at --ca-out
        with os.fdopen(fd, "wb") as f:
            f.write(ca_pem)
    return BoundServer(listen=bound, advertise=advertised, ca_pem=ca_pem, ca_file=ca_file, _temp_dir=temp_dir)


class ServesEndpoint:
    """What every jsreplay server exposes once bound: the address peers use and the CA they should trust."""

    _bound: BoundServer | None = None
    _what = "server"

    @property
    def endpoint(self) -> str:
        """HOST:PORT for the peers' `endpoint` setting."""
        if self._bound is None:
            raise RuntimeError(f"the {self._what} is not started")
        return self._bound.endpoint

    @property
    def ca_pem(self) -> bytes | None:
        return self._bound.ca_pem if self._bound else None

    @property
    def ca_file(self) -> Path | None:
        return self._bound.ca_file if self._bound else None


def rpc_method_handler(
    kind: StreamKind, behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
) -> grpc.RpcMethodHandler:
    """A raw-bytes (identity-serialized) method handler of the given stream kind."""
    match kind:
        case StreamKind.UNARY:
            return grpc.unary_unary_rpc_method_handler(behaviour)
        case StreamKind.SERVER_STREAMING:
            return grpc.unary_stream_rpc_method_handler(behaviour)
        case StreamKind.CLIENT_STREAMING:
            return grpc.stream_unary_rpc_method_handler(behaviour)
        case _:
            return grpc.stream_stream_rpc_method_handler(behaviour)
