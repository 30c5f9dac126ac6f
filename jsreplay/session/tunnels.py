"""From a recorded RouterService.Stream call to the inner gRPC calls its frames carried.

Each tunnel is recorded twice, once per peer: the client's Stream call (its requests are client->exporter bytes)
and the exporter's (its requests are exporter->client bytes). Which one a call is shows in its bytes: the side
whose outgoing stream starts with the HTTP/2 connection preface is the client. Show, diff and verify decode
tunnels through `decode_router_call`, which holds the whole call; replay through `decode_router_records`, which
takes the records one at a time and leaves big inner messages in the cassette, where a `RouterDataIndex` finds them.
"""

from __future__ import annotations

import bisect
import enum
import weakref
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from google.protobuf.message import Message

from jsreplay.cassette.model import AnyEvent, Call, ClientMessage, ServerMessage
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import STREAM_REQUEST, STREAM_RESPONSE, RouterFrameType
from jsreplay.tunnel.calls import CallAssembler, InnerCall
from jsreplay.tunnel.config import DecoderConfig
from jsreplay.tunnel.decoder import TunnelDecoder
from jsreplay.tunnel.errors import TunnelError
from jsreplay.tunnel.events import Direction
from jsreplay.tunnel.framing import CONNECTION_PREFACE

_TYPE_NAMES = {int(t): t.name for t in RouterFrameType}


class TunnelSide(enum.Enum):
    CLIENT = "client"  # the test code's end: it opens the inner HTTP/2 connection
    EXPORTER = "exporter"
    UNKNOWN = "unknown"  # no HTTP/2 in either direction (a probe that only said GOAWAY)


@dataclass(frozen=True)
class RouterFrame:
    frame_type: int
    payload: bytes

    @property
    def type_name(self) -> str:
        name = _TYPE_NAMES.get(self.frame_type)
        return name if name is not None else str(self.frame_type)


@dataclass
class RecordedTunnel:
    """One recorded router stream, decoded."""

    call_id: int
    side: TunnelSide
    frames_out: list[RouterFrame] = field(default_factory=list)  # what this peer sent
    frames_in: list[RouterFrame] = field(default_factory=list)  # what this peer received
    calls: list[InnerCall] = field(default_factory=list)  # inner calls, in stream-id order
    error: str | None = None  # why decoding stopped early, if it did

    @property
    def bytes_out(self) -> int:
        return sum(len(f.payload) for f in self.frames_out)

    @property
    def bytes_in(self) -> int:
        return sum(len(f.payload) for f in self.frames_in)


# Per registry and type name: the router frame's message class (finding it costs more than parsing a small frame).
_FRAME_CLASSES: weakref.WeakKeyDictionary[Registry, dict[str, type[Message]]] = weakref.WeakKeyDictionary()


def _frame_class(registry: Registry, type_name: str) -> type[Message]:
    classes = _FRAME_CLASSES.get(registry)
    if classes is None:
        classes = _FRAME_CLASSES[registry] = {}
    cls = classes.get(type_name)
    if cls is None:
        cls = classes[type_name] = registry.message_class(type_name)
    return cls


def _parse_with(cls: type[Message], registry: Registry, type_name: str, data: bytes) -> RouterFrame:
    try:
        message = cls.FromString(data)
    except Exception:
        message = registry.parse(type_name, data)  # raises the registry's own error for these bytes
    return RouterFrame(frame_type=int(message.frame_type), payload=bytes(message.payload))


def parse_frame(registry: Registry, type_name: str, data: bytes) -> RouterFrame:
    return _parse_with(_frame_class(registry, type_name), registry, type_name, data)


def iter_router_frames(call: Call, registry: Registry) -> Iterator[tuple[bool, RouterFrame]]:
    """The call's router frames in recorded order, each with whether this peer sent it (ProtocolError if one
    does not decode)."""
    requests = _frame_class(registry, STREAM_REQUEST)
    responses = _frame_class(registry, STREAM_RESPONSE)
    for event in call.events:
        if isinstance(event, ClientMessage):
            yield True, _parse_with(requests, registry, STREAM_REQUEST, event.data)
        elif isinstance(event, ServerMessage):
            yield False, _parse_with(responses, registry, STREAM_RESPONSE, event.data)


def event_frame(registry: Registry, event: ClientMessage | ServerMessage) -> tuple[bool, RouterFrame]:
    """A recorded Stream message as (sent by this peer, frame)."""
    sent = isinstance(event, ClientMessage)
    return sent, parse_frame(registry, STREAM_REQUEST if sent else STREAM_RESPONSE, event.data)


class SideFinder:
    """Which peer a Stream call belongs to, from the first DATA bytes of each direction, fed frame by frame.

    The side whose outgoing bytes start with the HTTP/2 connection preface is the client's; a tunnel cut short
    still shows the start of it. `settled` is true once more frames cannot change the answer (this peer sent the
    whole preface, or each direction has shown whether it starts with it), so callers can stop parsing there.
    """

    def __init__(self) -> None:
        self._heads = {True: b"", False: b""}  # sent by this peer, received

    def add(self, sent: bool, frame: RouterFrame) -> None:
        head = self._heads[sent]
        if frame.frame_type == RouterFrameType.DATA and len(head) < len(CONNECTION_PREFACE):
            self._heads[sent] = head + frame.payload[: len(CONNECTION_PREFACE) - len(head)]

    @staticmethod
    def _decided(head: bytes) -> bool:
        return len(head) >= len(CONNECTION_PREFACE) or not CONNECTION_PREFACE.startswith(head)

    @property
    def settled(self) -> bool:
        sent, received = self._heads[True], self._heads[False]
        if sent == CONNECTION_PREFACE:
            return True
        return bool(sent) and bool(received) and self._decided(sent) and self._decided(received)

    @property
    def side(self) -> TunnelSide:
        for sent, side in ((True, TunnelSide.CLIENT), (False, TunnelSide.EXPORTER)):
            head = self._heads[sent]
            if head and CONNECTION_PREFACE.startswith(head):
                return side
        return TunnelSide.UNKNOWN


def peek_side(call: Call, registry: Registry) -> tuple[TunnelSide, str | None]:
    """Which peer a recorded Stream call belongs to, from its first frames only (cheap: no HTTP/2 decoding), and
    why it is unknown when a frame does not decode."""
    finder = SideFinder()
    try:
        for sent, frame in iter_router_frames(call, registry):
            finder.add(sent, frame)
            if finder.settled:
                break
    except ProtocolError as err:
        return TunnelSide.UNKNOWN, f"router frame does not decode: {err}"
    return finder.side, None


def tunnel_side(call: Call, registry: Registry) -> TunnelSide:
    return peek_side(call, registry)[0]


def decode_router_call(call: Call, registry: Registry) -> RecordedTunnel:
    """Decode the frames of one recorded Stream call, and the inner calls they carry, in recorded order."""
    tunnel = RecordedTunnel(call_id=call.call_id, side=TunnelSide.UNKNOWN)
    ordered: list[tuple[bool, RouterFrame]] = []  # (sent by this peer, frame)
    finder = SideFinder()
    settled = False
    frames_out, frames_in = tunnel.frames_out, tunnel.frames_in
    try:
        for sent, frame in iter_router_frames(call, registry):
            (frames_out if sent else frames_in).append(frame)
            ordered.append((sent, frame))
            if not settled:  # later frames cannot change the side
                finder.add(sent, frame)
                settled = finder.settled
    except ProtocolError as err:
        tunnel.error = f"router frame does not decode: {err}"
        return tunnel
    tunnel.side = finder.side
    if tunnel.side is TunnelSide.UNKNOWN:
        return tunnel
    client_sends = tunnel.side is TunnelSide.CLIENT
    decoder = TunnelDecoder()
    assembler = CallAssembler()
    from_client, from_exporter = Direction.CLIENT_TO_EXPORTER, Direction.EXPORTER_TO_CLIENT
    for sent, frame in ordered:
        direction = from_client if sent == client_sends else from_exporter
        try:
            assembler.add_all(decoder.feed_router_frame(direction, frame.frame_type, frame.payload))
        except TunnelError as err:
            assembler.add_all(err.events)
            tunnel.error = str(err)
            break
    tunnel.calls = assembler.calls
    return tunnel


class RouterDataIndex:
    """Where one direction of a recorded tunnel is in its cassette: for each router DATA frame with a payload, the
    offset of its first byte in the direction's byte stream and its record's (offset, length) in the file.

    With the spans of a located inner message (offsets in that byte stream), this says which records to read back
    and which slice of each frame's payload to take. 20 bytes per frame, in arrays.
    """

    __slots__ = ("_lengths", "_records", "_starts", "sent", "size")

    def __init__(self, sent: bool) -> None:
        self.sent = sent  # the recorded peer sent these frames (ClientMessage records, StreamRequest), or received
        self._starts = array("q")
        self._records = array("q")
        self._lengths = array("I")  # records are at most MAX_RECORD_BYTES
        self.size = 0  # bytes in the direction so far

    def add(self, record_offset: int, record_length: int, payload_size: int) -> None:
        """The next DATA frame of the direction: its record, and how many payload bytes it carried."""
        if payload_size:
            self._starts.append(self.size)
            self._records.append(record_offset)
            self._lengths.append(record_length)
            self.size += payload_size

    def __len__(self) -> int:
        return len(self._starts)

    def record(self, index: int) -> tuple[int, int]:
        """The (offset, length) of frame `index`'s record."""
        return self._records[index], self._lengths[index]

    def payload_size(self, index: int) -> int:
        stop = self._starts[index + 1] if index + 1 < len(self._starts) else self.size
        return stop - self._starts[index]

    def pieces(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """(frame index, first, last) for each frame holding bytes [start, stop) of the direction, in order: the
        bytes are ``payload[first:last]`` of each. ValueError if the range is not inside what was indexed."""
        if not 0 <= start <= stop <= self.size:
            raise ValueError(f"bytes {start}..{stop} are outside the {self.size} indexed")
        index = bisect.bisect_right(self._starts, start) - 1
        while start < stop:
            base = self._starts[index]
            last = min(stop - base, self.payload_size(index))
            yield index, start - base, last
            start = base + last
            index += 1


@dataclass
class LocatedTunnel:
    """A recorded router stream decoded by `decode_router_records`: the inner calls (big messages located) and,
    per direction, where its bytes are in the cassette."""

    calls: list[InnerCall]
    error: str | None
    client_bytes: RouterDataIndex  # client -> exporter
    exporter_bytes: RouterDataIndex  # exporter -> client

    def index(self, by_client: bool) -> RouterDataIndex:
        return self.client_bytes if by_client else self.exporter_bytes


def decode_router_records(
    records: Iterable[tuple[int, int, AnyEvent]], side: TunnelSide, registry: Registry, config: DecoderConfig
) -> LocatedTunnel:
    """Decode a recorded Stream call given as its records after the start, (offset, length, event), in recorded
    order, holding one record at a time; inner messages over ``config.locate_over`` bytes are located (their spans
    index the `RouterDataIndex` of their direction). ``side`` is the recorded peer's (CLIENT or EXPORTER), known
    from the call's first frames.

    The calls and error are `decode_router_call`'s for the same call, except that a frame that does not decode
    is only found when reached (the calls are then dropped, as that function drops them).
    """
    if side is TunnelSide.UNKNOWN:
        raise ValueError("the side of the tunnel must be known to decode it record by record")
    client_sends = side is TunnelSide.CLIENT
    client_bytes, exporter_bytes = RouterDataIndex(client_sends), RouterDataIndex(not client_sends)
    tunnel = LocatedTunnel(calls=[], error=None, client_bytes=client_bytes, exporter_bytes=exporter_bytes)
    decoder = TunnelDecoder(config=config)
    assembler = CallAssembler()
    from_client, from_exporter = Direction.CLIENT_TO_EXPORTER, Direction.EXPORTER_TO_CLIENT
    broken = False  # the inner connection failed: later frames are only checked to decode, as decode_router_call does
    try:
        for offset, length, event in records:
            if not isinstance(event, ClientMessage | ServerMessage):
                continue
            sent, frame = event_frame(registry, event)
            if broken:
                continue
            by_client = sent == client_sends
            if frame.frame_type == RouterFrameType.DATA:
                (client_bytes if by_client else exporter_bytes).add(offset, length, len(frame.payload))
            direction = from_client if by_client else from_exporter
            try:
                assembler.add_all(decoder.feed_router_frame(direction, frame.frame_type, frame.payload))
            except TunnelError as err:
                assembler.add_all(err.events)
                tunnel.error = str(err)
                broken = True
    except ProtocolError as err:
        tunnel.error = f"router frame does not decode: {err}"
        return tunnel
    tunnel.calls = assembler.calls
    return tunnel


# Which recorded end of a tunnel to serve or drive from: the client's (its requests are what the exporter is sent,
# its responses what the client got back), then the exporter's, then an end whose side is unknown.
_CARRIER_RANK = {TunnelSide.CLIENT: 2, TunnelSide.EXPORTER: 1, TunnelSide.UNKNOWN: 0}


def better_carrier(current: TunnelSide | None, candidate: TunnelSide) -> bool:
    """Whether a tunnel end of side `candidate` should replace the end kept so far (the first of equals stays)."""
    return current is None or _CARRIER_RANK[candidate] > _CARRIER_RANK[current]


def pair_ends(ends: Sequence[tuple[str | None, TunnelSide]]) -> list[tuple[int, int | None]]:
    """Pairs of indices into `ends` ((token, side) of each recorded router stream, in start order) that are the two
    ends of one tunnel, in start order; an end without a peer pairs with None.

    The router pipes the two callers that present one token into each other: a client end pairs with an exporter
    end of the same token, in order; ends whose side is unknown (probes) pair among what is left, in order. An end
    with no token pairs with nothing.
    """
    by_token: dict[object, list[int]] = {}
    for i, (token, _) in enumerate(ends):
        by_token.setdefault(token if token is not None else ("no-token", i), []).append(i)
    pairs: list[tuple[int, int | None]] = []
    for indices in by_token.values():
        clients = [i for i in indices if ends[i][1] is TunnelSide.CLIENT]
        exporters = [i for i in indices if ends[i][1] is TunnelSide.EXPORTER]
        unknown = [i for i in indices if ends[i][1] is TunnelSide.UNKNOWN]
        while clients and exporters:
            pairs.append((clients.pop(0), exporters.pop(0)))
        rest = sorted(clients + exporters + unknown)
        while len(rest) >= 2:
            pairs.append((rest.pop(0), rest.pop(0)))
        if rest:
            pairs.append((rest[0], None))
    pairs.sort(key=lambda p: p[0])
    return pairs
