"""Channels to the real controller and routers, and how the proxy trusts their TLS."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from jsreplay.grpc_options import CHANNEL_OPTIONS
from jsreplay.serving import parse_hostport

FETCH_CHAIN_TIMEOUT_S = 10.0


class UpstreamError(Exception):
    """The upstream cannot be reached or trusted."""


@dataclass(frozen=True)
class UpstreamTrust:
    """How to trust an upstream's certificate.

    `ca_pem`: trust this CA. `insecure`: trust whatever chain the server presents (fetched once per target,
    as the Jumpstarter client does in insecure mode; host names are still checked). Neither: system roots.
    `plaintext`: no TLS at all (for upstreams that speak cleartext gRPC, e.g. in tests).
    """

    ca_pem: bytes | None = None
    insecure: bool = False
    plaintext: bool = False

    @classmethod
    def from_ca_file(cls, path: Path) -> UpstreamTrust:
        return cls(ca_pem=Path(path).read_bytes())


async def fetch_certificate_chain(target: str, timeout: float = FETCH_CHAIN_TIMEOUT_S) -> bytes:
    """The PEM chain a TLS server presents, unverified."""
    address = parse_hostport(target, what="upstream")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(address.host, address.port, ssl=context, server_hostname=address.host),
            timeout,
        )
    except (OSError, TimeoutError, ssl.SSLError) as err:
        raise UpstreamError(f"cannot fetch the TLS certificate of {target}: {err or type(err).__name__}") from None
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        chain = ssl_object._sslobj.get_unverified_chain()  # public only from Python 3.13
        return "".join(cert.public_bytes() for cert in chain).encode()
    finally:
        writer.close()


class UpstreamChannels:
    """One channel per upstream target, created on first use, with credentials per `UpstreamTrust`."""

    def __init__(self, trust: UpstreamTrust) -> None:
        self._trust = trust
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    async def get(self, target: str, ca_pem: bytes | None = None) -> grpc.aio.Channel:
        """The channel to `target`; `ca_pem`: a CA the upstream itself named for it (a telemetry endpoint's)."""
        channel = self._channels.get(target)
        if channel is not None:
            return channel
        async with self._lock:
            if self._closed:
                raise UpstreamError("the proxy is stopping")
            channel = self._channels.get(target)
            if channel is None:
                channel = await self._open(target, ca_pem)
                if self._closed:  # closed while this one was being opened
                    await channel.close(grace=None)
                    raise UpstreamError("the proxy is stopping")
                self._channels[target] = channel
            return channel

    async def _open(self, target: str, ca_pem: bytes | None = None) -> grpc.aio.Channel:
        if ca_pem is not None:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem)
            return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        if self._trust.plaintext:
            return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        root = self._trust.ca_pem
        if self._trust.insecure:
            root = await fetch_certificate_chain(target)
        credentials = grpc.ssl_channel_credentials(root_certificates=root)
        return grpc.aio.secure_channel(target, credentials, options=CHANNEL_OPTIONS)

    async def close(self) -> None:
        self._closed = True
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)
