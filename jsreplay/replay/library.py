"""Cassettes loaded for replay: scripts for controller calls, and the decoded tunnels behind each router token."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jsreplay.cassette.format import read_cassette
from jsreplay.cassette.model import Call, Cassette, Role, metadata_get
from jsreplay.protocol.registry import Registry
from jsreplay.replay.script import Script, script_from_call, script_from_inner
from jsreplay.tunnel.recorded import ROUTER_STREAM, TunnelSide, decode_router_call, tunnel_side


class Tunnel:
    """What a recorded router token led to: the client side's stream and, decoded on first use, its inner calls.

    Decoding every tunnel of a big cassette at start-up would dominate the replay server's start; most are never
    asked for, so only the side (a look at the first frames) is found up front.
    """

    def __init__(self, token: str, call: Call, side: TunnelSide, source: str, registry: Registry) -> None:
        self.token = token
        self.call = call
        self.side = side
        self.stream = script_from_call(call, source)
        self.registry = registry
        self._inner: list[Script] | None = None
        self.decode_error: str | None = None

    @property
    def carries_calls(self) -> bool:
        """The client side of a tunnel that spoke HTTP/2 (a readiness probe's did not)."""
        return self.side is TunnelSide.CLIENT

    @property
    def inner(self) -> list[Script]:
        if self._inner is None:
            decoded = decode_router_call(self.call, self.registry)
            self.decode_error = decoded.error
            self._inner = [script_from_inner(c, self.stream.key) for c in decoded.calls if c.method]
        return self._inner


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
            side = tunnel_side(call, registry)
            existing = library.tunnels.get(token)
            # Both peers' streams are recorded; the client's carries the inner calls we answer.
            if existing is not None and (side is not TunnelSide.CLIENT or existing.carries_calls):
                continue
            library.tunnels[token] = Tunnel(token, call, side, source, registry)
    return library
