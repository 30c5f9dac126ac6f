"""Cassettes loaded for replay: scripts for controller calls, and the decoded tunnels behind each router token."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jsreplay.cassette.format import read_cassette
from jsreplay.cassette.model import Cassette, Role, metadata_get
from jsreplay.protocol.registry import Registry
from jsreplay.replay.script import Script, script_from_call, script_from_inner
from jsreplay.tunnel.recorded import ROUTER_STREAM, TunnelSide, decode_router_call


@dataclass
class Tunnel:
    """What a recorded router token led to: the client side's stream and the inner calls it carried."""

    token: str  # as presented: the recorded (redacted) bearer value, e.g. "redacted:1a2b…"
    stream: Script
    inner: list[Script]
    registry: Registry
    decode_error: str | None = None


@dataclass
class Library:
    cassettes: list[tuple[Path, Cassette]] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)  # outer calls other than router streams
    tunnels: dict[str, Tunnel] = field(default_factory=dict)
    registries: dict[str, Registry] = field(default_factory=dict)  # script key prefix (source) -> registry
    created_unix_ns: int = 0  # the earliest recording's start, for timestamp shifting

    def registry_for(self, script: Script) -> Registry:
        source = script.key.split("#", 1)[0]
        return self.registries.get(source) or Registry.default()


def _bearer(value: object) -> str:
    if not isinstance(value, str):
        return ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def load_library(paths: list[Path]) -> Library:
    library = Library()
    for path in paths:
        cassette = read_cassette(path)
        source = path.name
        registry = Registry.for_descriptor_set(cassette.header.descriptor_set)
        library.cassettes.append((path, cassette))
        library.registries[source] = registry
        if not library.created_unix_ns or cassette.header.created_unix_ns < library.created_unix_ns:
            library.created_unix_ns = cassette.header.created_unix_ns
        for call in cassette.calls():
            if call.method != ROUTER_STREAM or call.role is not Role.ROUTER:
                library.scripts.append(script_from_call(call, source))
                continue
            token = _bearer(metadata_get(call.start.metadata, "authorization"))
            tunnel = decode_router_call(call, registry)
            existing = library.tunnels.get(token)
            # Both peers' streams are recorded; the client's carries the inner calls we answer.
            if existing is not None and (tunnel.side is not TunnelSide.CLIENT or existing.inner):
                continue
            stream_script = script_from_call(call, source)
            library.tunnels[token] = Tunnel(
                token=token,
                stream=stream_script,
                inner=[script_from_inner(c, stream_script.key) for c in tunnel.calls if c.method],
                registry=registry,
                decode_error=tunnel.error,
            )
    return library
