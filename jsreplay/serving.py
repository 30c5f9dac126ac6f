"""The listening side shared by `record` and `replay`: addresses, TLS as real Jumpstarter peers need it, bind.

Both servers listen on loopback unless told otherwise, present a certificate with IP SANs for the listen and
advertised hosts (the peers check host names even in insecure mode), send the CA along with the leaf, and
write that CA to a file the user can hand to `tls.ca` or ignore with `JUMPSTARTER_GRPC_INSECURE=1`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
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


def target_hostports(target: str) -> list[HostPort]:
    """The HOST:PORTs a gRPC target names: `h:p`, `dns:h:p`, `dns:///h:p`, `dns://server/h:p`, `ipv4:a:p,b:p`,
    `ipv6:[a]:p`. Targets of other schemes (unix:...) and unparsable ones name none."""
    scheme, sep, rest = target.strip().partition(":")
    items = [target]
    if sep and scheme.lower() == "dns":
        if rest.startswith("//"):  # dns://[authority]/host:port
            rest = rest[2:].partition("/")[2]
        items = [rest]
    elif sep and scheme.lower() in ("ipv4", "ipv6"):
        items = rest.split(",")
    found = []
    for item in items:
        try:
            found.append(parse_hostport(item))
        except AddressError:
            continue
    return found


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLVE_TIMEOUT_S = 2.0
_LOOPBACK_IPS = frozenset({ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")})


def _normalized(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _is_local_ip(ip: IPAddress) -> bool:
    """Whether connecting to `ip` reaches this machine: loopback, unspecified, or an address of an interface."""
    if ip.is_loopback or ip.is_unspecified:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))  # succeeds only for a local address
        except OSError:
            return False
    return True


async def resolve_host(host: str) -> frozenset[IPAddress]:
    """The addresses `host` stands for; empty when it does not resolve (in time)."""
    host = host.strip("[]")
    try:
        return frozenset({_normalized(ipaddress.ip_address(host))})
    except ValueError:
        pass
    if is_loopback_host(host):
        return _LOOPBACK_IPS
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
    except (OSError, TimeoutError, UnicodeError):
        return frozenset()
    found: set[IPAddress] = set()
    for info in infos:
        try:
            found.add(_normalized(ipaddress.ip_address(str(info[4][0]).partition("%")[0])))
        except ValueError:
            continue
    return frozenset(found)


class OwnAddresses:
    """Every address at which a server can be reached, so that it never forwards a call to itself.

    That is its listen and advertised addresses, and at their ports: any loopback name or address when either
    is a loopback one (localhost, 127.0.0.1 and [::1] are aliases), any local address when it listens on a
    wildcard, and any name that resolves to one of those. Answers are cached per target.
    """

    def __init__(self, *endpoints: HostPort | str) -> None:
        self.endpoints = tuple(e if isinstance(e, HostPort) else parse_hostport(e) for e in endpoints)
        self._cache: dict[str, bool] = {}

    async def includes(self, target: str) -> bool:
        """Whether the gRPC target `target` reaches this server."""
        cached = self._cache.get(target)
        if cached is None:
            cached = False
            for address in target_hostports(target):
                if await self._is_own(address):
                    cached = True
                    break
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[target] = cached
        return cached

    async def _is_own(self, address: HostPort) -> bool:
        mine = [e for e in self.endpoints if e.port == address.port]
        if not mine:
            return False  # the usual case, and no name is resolved for it
        host = address.host.lower().rstrip(".")
        if any(host == e.host.lower().rstrip(".") for e in mine):
            return True
        ips = await resolve_host(host)
        for endpoint in mine:
            if endpoint.is_wildcard:
                if any(_is_local_ip(ip) for ip in ips):
                    return True
                continue
            ours = await resolve_host(endpoint.host)
            for ip in ips:
                if ip in ours:
                    return True
                if ip.is_loopback and any(o.is_loopback for o in ours):
                    return True
                if ip.is_unspecified and any(_is_local_ip(o) for o in ours):  # 0.0.0.0 connects to this host
                    return True
        return False


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

    def own_addresses(self) -> OwnAddresses:
        """Where this server can be reached: what it must never forward to."""
        return OwnAddresses(self.listen, self.advertise)

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
