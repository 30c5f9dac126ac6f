"""The cassette data model: a header and a stream of events, each pointing back at its call.

Events are frozen, keyword-only dataclasses. Message payloads are the raw bytes seen on the wire; decoding
them is the protocol registry's job, never the model's.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

MetadataValue: TypeAlias = str | bytes
Metadata: TypeAlias = tuple[tuple[str, MetadataValue], ...]


class Role(enum.Enum):
    """Which hop of a Jumpstarter session a call belongs to."""

    CONTROLLER = "controller"  # ControllerService and ClientService, on the controller endpoint
    ROUTER = "router"  # RouterService.Stream tunnels
    TUNNEL = "tunnel"  # inner ExporterService calls, when recorded as calls of their own


class EventKind(enum.IntEnum):
    """Record kinds on disk; the number is the first element of each record."""

    CALL_START = 1
    CLIENT_MESSAGE = 2
    SERVER_HEADERS = 3
    SERVER_MESSAGE = 4
    CLIENT_HALF_CLOSE = 5
    STATUS = 6
    CANCEL = 7


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """What every event carries: its call, its place in the cassette, and when it happened."""

    call_id: int
    seq: int
    t_ns: int  # monotonic nanoseconds since the recording started

    kind = EventKind.CALL_START  # overridden by each subclass; a class attribute, not a field


@dataclass(frozen=True, kw_only=True, slots=True)
class CallStart(Event):
    method: str  # full method name, "/package.Service/Method"
    role: Role
    metadata: Metadata = ()
    peer: str = ""  # who called (as the proxy saw it)
    target: str = ""  # where the call was forwarded to
    timeout_ns: int | None = None  # the deadline the caller set, as time remaining when the call started

    kind = EventKind.CALL_START


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientMessage(Event):
    data: bytes

    kind = EventKind.CLIENT_MESSAGE


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerHeaders(Event):
    metadata: Metadata = ()

    kind = EventKind.SERVER_HEADERS


@dataclass(frozen=True, kw_only=True, slots=True)
class ServerMessage(Event):
    data: bytes  # as the upstream sent it
    forwarded: bytes | None = None  # what the proxy sent on instead, when it rewrote the message

    kind = EventKind.SERVER_MESSAGE


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientHalfClose(Event):
    kind = EventKind.CLIENT_HALF_CLOSE


@dataclass(frozen=True, kw_only=True, slots=True)
class Status(Event):
    code: int  # grpc.StatusCode value[0]
    details: str = ""
    trailing_metadata: Metadata = ()

    kind = EventKind.STATUS


class CancelSource(enum.Enum):
    CLIENT = "client"
    UPSTREAM = "upstream"
    PROXY = "proxy"


@dataclass(frozen=True, kw_only=True, slots=True)
class Cancel(Event):
    by: CancelSource
    reason: str = ""

    kind = EventKind.CANCEL


AnyEvent: TypeAlias = CallStart | ClientMessage | ServerHeaders | ServerMessage | ClientHalfClose | Status | Cancel

EVENT_TYPES: Mapping[EventKind, type[AnyEvent]] = {
    EventKind.CALL_START: CallStart,
    EventKind.CLIENT_MESSAGE: ClientMessage,
    EventKind.SERVER_HEADERS: ServerHeaders,
    EventKind.SERVER_MESSAGE: ServerMessage,
    EventKind.CLIENT_HALF_CLOSE: ClientHalfClose,
    EventKind.STATUS: Status,
    EventKind.CANCEL: Cancel,
}


@dataclass(frozen=True, kw_only=True)
class Redaction:
    """Which redactions were applied when the cassette was written."""

    enabled: bool = True
    metadata_keys: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()  # full field paths, "package.Message.field"
    field_names: tuple[str, ...] = ()  # field-name patterns, applied to every message


@dataclass(frozen=True, kw_only=True)
class Header:
    format_version: int
    jsreplay_version: str
    created_unix_ns: int  # wall clock when the recording started
    upstreams: tuple[str, ...] = ()
    descriptor_set: bytes = b""  # serialized FileDescriptorSet used at record time
    redaction: Redaction = field(default_factory=Redaction)
    extra: Mapping[str, object] = field(default_factory=dict)  # keys this version does not know, kept as read


@dataclass(frozen=True, kw_only=True)
class Call:
    """All events of one call, in order; built from a cassette's event stream."""

    start: CallStart
    events: tuple[AnyEvent, ...]  # everything after the start

    @property
    def call_id(self) -> int:
        return self.start.call_id

    @property
    def method(self) -> str:
        return self.start.method

    @property
    def role(self) -> Role:
        return self.start.role

    @property
    def requests(self) -> list[bytes]:
        return [e.data for e in self.events if isinstance(e, ClientMessage)]

    @property
    def responses(self) -> list[bytes]:
        return [e.data for e in self.events if isinstance(e, ServerMessage)]

    @property
    def initial_metadata(self) -> Metadata | None:
        for e in self.events:
            if isinstance(e, ServerHeaders):
                return e.metadata
        return None

    @property
    def status(self) -> Status | None:
        for e in self.events:
            if isinstance(e, Status):
                return e
        return None

    @property
    def cancel(self) -> Cancel | None:
        for e in self.events:
            if isinstance(e, Cancel):
                return e
        return None

    @property
    def half_closed(self) -> bool:
        return any(isinstance(e, ClientHalfClose) for e in self.events)


def group_calls(events: Iterable[AnyEvent]) -> list[Call]:
    """Group an event stream into calls, in the order the calls started.

    Events of a call whose start is missing (a cassette cut in the middle) are dropped.
    """
    starts: dict[int, CallStart] = {}
    rest: dict[int, list[AnyEvent]] = {}
    for event in events:
        if isinstance(event, CallStart):
            starts[event.call_id] = event
            rest[event.call_id] = []
        elif event.call_id in rest:
            rest[event.call_id].append(event)
    return [Call(start=start, events=tuple(rest[cid])) for cid, start in starts.items()]


@dataclass(frozen=True, kw_only=True)
class Cassette:
    """A whole cassette in memory. Use the streaming reader for big files."""

    header: Header
    events: tuple[AnyEvent, ...]
    truncated_at: int | None = None  # byte offset of a cut-off tail that was dropped, if any

    def calls(self) -> list[Call]:
        return group_calls(self.events)

    def __iter__(self) -> Iterator[AnyEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


def metadata_get(metadata: Metadata, key: str) -> MetadataValue | None:
    """The first value of `key` (case-insensitive), or None."""
    key = key.lower()
    for k, v in metadata:
        if k.lower() == key:
            return v
    return None
