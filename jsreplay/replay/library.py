"""Cassettes loaded for replay: scripts for controller calls, and the decoded tunnels behind each router token.

Loading streams each cassette once. Controller calls are small and kept (matching needs their messages); router
streams (the tunnels) hold almost all of a cassette's bytes, so only their start, their small events and the
byte offsets of the rest are kept, and a tunnel's frames are read back from the file when it is first used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from jsreplay.cassette.format import CassetteReader, read_cassette, read_events_at
from jsreplay.cassette.model import (
    AnyEvent,
    Call,
    CallStart,
    Cassette,
    ClientMessage,
    Header,
    Role,
    ServerMessage,
    metadata_get,
)
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.replay.script import Script, script_from_call, script_from_inner
from jsreplay.tunnel.recorded import (
    ROUTER_STREAM,
    SideFinder,
    TunnelSide,
    decode_router_call,
    event_frame,
)

# How much of a router stream's first frames is kept to tell its side, at most (the HTTP/2 preface is 24 bytes).
SIDE_PREFIX_BYTES = 64 << 10


class Tunnel:
    """What a recorded router token led to: the client side's stream and, decoded on first use, its inner calls.

    Decoding every tunnel of a big cassette at start-up would dominate the replay server's start, and holding its
    frames would cost as much memory as the file: most are never asked for, so only the side (a look at the first
    frames) is found up front and `load` reads the stream's events back from the cassette when `inner` is needed.
    """

    def __init__(
        self,
        token: str,
        call: Call,
        side: TunnelSide,
        source: str,
        registry: Registry,
        load: Callable[[], Call] | None = None,
    ) -> None:
        self.token = token
        self.side = side
        self.stream = script_from_call(call, source)
        self.registry = registry
        self._call: Call | None = call if load is None else None
        self._load = load
        self._inner: list[Script] | None = None
        self.decode_error: str | None = None

    @property
    def call(self) -> Call:
        """The whole recorded Stream call (read from the cassette again when the tunnel was loaded lazily)."""
        if self._call is not None:
            return self._call
        assert self._load is not None
        return self._load()

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


@dataclass(frozen=True)
class LoadedCassette:
    """What the library keeps of a cassette: its header and the events it holds in memory (no router frames)."""

    header: Header
    events: tuple[AnyEvent, ...]
    truncated_at: int | None = None


@dataclass
class Library:
    cassettes: list[tuple[Path, LoadedCassette]] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)  # outer calls other than router streams
    tunnels: dict[str, Tunnel] = field(default_factory=dict)
    registries: dict[str, Registry] = field(default_factory=dict)  # script key prefix (source) -> registry
    created_unix_ns: int = 0  # the earliest recording's start, for timestamp shifting

    def registry_for(self, script: Script) -> Registry:
        source = script.key.split("#", 1)[0]
        return self.registries.get(source) or Registry.default()


def whole_cassette(path: Path) -> Cassette:
    """A cassette with every event in memory, for tools that walk all of a small one's calls (verify's plan)."""
    return read_cassette(path)


def _bearer(value: object) -> str:
    if not isinstance(value, str):
        return ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class _RouterStream:
    """A router Stream call while its cassette is scanned: the start, small events, offsets of everything."""

    def __init__(self, start: CallStart) -> None:
        self.start = start
        self.kept: list[AnyEvent] = []  # events other than messages (headers, half-close, status, cancel)
        self.offsets: list[int] = []  # every event after the start, in file order
        self.finder = SideFinder()  # fed the first frames, until the side is known
        self.prefix_bytes = 0
        self.side: TunnelSide | None = None

    def add(self, offset: int, event: AnyEvent, registry: Registry) -> None:
        self.offsets.append(offset)
        if not isinstance(event, ClientMessage | ServerMessage):
            self.kept.append(event)
            return
        if self.side is not None:
            return
        try:
            self.finder.add(*event_frame(registry, event))
        except ProtocolError:
            self.side = TunnelSide.UNKNOWN  # as tunnel_side decides for a frame that does not decode
            return
        self.prefix_bytes += len(event.data)
        if self.prefix_bytes >= SIDE_PREFIX_BYTES or self.finder.settled:
            self.settle()

    def settle(self) -> TunnelSide:
        if self.side is None:
            self.side = self.finder.side
        return self.side


def _loader(path: Path, start: CallStart, offsets: list[int]) -> Callable[[], Call]:
    frozen = tuple(offsets)

    def load() -> Call:
        return Call(start=start, events=tuple(read_events_at(path, frozen)))

    return load


def load_library(paths: list[Path]) -> Library:
    library = Library()
    for path in paths:
        source = path.name
        with CassetteReader(path) as reader:
            header = reader.header
            registry = Registry.for_descriptor_set(header.descriptor_set)
            # Calls in the order they started, as `Cassette.calls()` groups them.
            order: dict[int, CallStart] = {}  # a repeated call id keeps its place, as group_calls does
            outer: dict[int, list[AnyEvent]] = {}
            router: dict[int, _RouterStream] = {}
            for offset, event in reader.iter_with_offsets():
                if isinstance(event, CallStart):
                    order[event.call_id] = event
                    if event.method == ROUTER_STREAM and event.role is Role.ROUTER:
                        router[event.call_id] = _RouterStream(event)
                        outer.pop(event.call_id, None)
                    else:
                        outer[event.call_id] = []
                        router.pop(event.call_id, None)
                elif (stream := router.get(event.call_id)) is not None:
                    stream.add(offset, event, registry)
                elif (events := outer.get(event.call_id)) is not None:
                    events.append(event)
            truncated_at = reader.truncated_at
        held: list[AnyEvent] = []
        library.registries[source] = registry
        if not library.created_unix_ns or header.created_unix_ns < library.created_unix_ns:
            library.created_unix_ns = header.created_unix_ns
        for start in order.values():
            if start.call_id in outer:
                call = Call(start=start, events=tuple(outer[start.call_id]))
                held.append(start)
                held.extend(call.events)
                library.scripts.append(script_from_call(call, source))
                continue
            stream = router[start.call_id]
            held.append(start)
            held.extend(stream.kept)
            token = _bearer(metadata_get(start.metadata, "authorization"))
            side = stream.settle()
            existing = library.tunnels.get(token)
            # Both peers' streams are recorded; the client's carries the inner calls we answer.
            if existing is not None and (side is not TunnelSide.CLIENT or existing.carries_calls):
                continue
            library.tunnels[token] = Tunnel(
                token,
                Call(start=start, events=tuple(stream.kept)),
                side,
                source,
                registry,
                load=_loader(path, start, stream.offsets),
            )
        library.cassettes.append((path, LoadedCassette(header=header, events=tuple(held), truncated_at=truncated_at)))
    return library
