"""From a recorded RouterService.Stream call to the inner gRPC calls its frames carried.

Each tunnel is recorded twice, once per peer: the client's Stream call (its requests are client->exporter bytes)
and the exporter's (its requests are exporter->client bytes). Which one a call is shows in its bytes: the side
whose outgoing stream starts with the HTTP/2 connection preface is the client. Replay, show, diff and verify all
decode tunnels through `decode_router_call`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from jsreplay.cassette.model import Call, ClientMessage, ServerMessage
from jsreplay.protocol.registry import ProtocolError, Registry

from .calls import CallAssembler, InnerCall
from .decoder import CONNECTION_PREFACE, RouterFrameType, TunnelDecoder
from .errors import TunnelError
from .events import Direction

ROUTER_STREAM = "/jumpstarter.v1.RouterService/Stream"
_REQUEST_TYPE = "jumpstarter.v1.StreamRequest"
_RESPONSE_TYPE = "jumpstarter.v1.StreamResponse"


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
        try:
            return RouterFrameType(self.frame_type).name
        except ValueError:
            return str(self.frame_type)


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


def parse_frame(registry: Registry, type_name: str, data: bytes) -> RouterFrame:
    message = registry.parse(type_name, data)
    return RouterFrame(frame_type=int(message.frame_type), payload=bytes(message.payload))


def _starts_with_preface(frames: list[RouterFrame]) -> bool:
    head = b""
    for frame in frames:
        if frame.frame_type == RouterFrameType.DATA:
            head += frame.payload
            if len(head) >= len(CONNECTION_PREFACE):
                break
    return head.startswith(CONNECTION_PREFACE) or (
        0 < len(head) < len(CONNECTION_PREFACE) and CONNECTION_PREFACE.startswith(head)
    )


def tunnel_side(call: Call, registry: Registry) -> TunnelSide:
    """Which peer a recorded Stream call belongs to, from its first frames only (cheap: no HTTP/2 decoding)."""
    out: list[RouterFrame] = []
    into: list[RouterFrame] = []
    try:
        for event in call.events:
            if isinstance(event, ClientMessage):
                out.append(parse_frame(registry, _REQUEST_TYPE, event.data))
            elif isinstance(event, ServerMessage):
                into.append(parse_frame(registry, _RESPONSE_TYPE, event.data))
            else:
                continue
            if sum(len(f.payload) for f in out) >= len(CONNECTION_PREFACE) or sum(len(f.payload) for f in into) >= len(
                CONNECTION_PREFACE
            ):
                break
    except ProtocolError:
        return TunnelSide.UNKNOWN
    if _starts_with_preface(out):
        return TunnelSide.CLIENT
    if _starts_with_preface(into):
        return TunnelSide.EXPORTER
    return TunnelSide.UNKNOWN


def decode_router_call(call: Call, registry: Registry) -> RecordedTunnel:
    """Decode the frames of one recorded Stream call, and the inner calls they carry, in recorded order."""
    tunnel = RecordedTunnel(call_id=call.call_id, side=TunnelSide.UNKNOWN)
    ordered: list[tuple[bool, RouterFrame]] = []  # (sent by this peer, frame)
    try:
        for event in call.events:
            if isinstance(event, ClientMessage):
                frame = parse_frame(registry, _REQUEST_TYPE, event.data)
                tunnel.frames_out.append(frame)
                ordered.append((True, frame))
            elif isinstance(event, ServerMessage):
                frame = parse_frame(registry, _RESPONSE_TYPE, event.data)
                tunnel.frames_in.append(frame)
                ordered.append((False, frame))
    except ProtocolError as err:
        tunnel.error = f"router frame does not decode: {err}"
        return tunnel
    if _starts_with_preface(tunnel.frames_out):
        tunnel.side = TunnelSide.CLIENT
    elif _starts_with_preface(tunnel.frames_in):
        tunnel.side = TunnelSide.EXPORTER
    else:
        return tunnel
    client_sends = tunnel.side is TunnelSide.CLIENT
    decoder = TunnelDecoder()
    assembler = CallAssembler()
    for sent, frame in ordered:
        from_client = sent == client_sends
        direction = Direction.CLIENT_TO_EXPORTER if from_client else Direction.EXPORTER_TO_CLIENT
        try:
            assembler.add_all(decoder.feed_router_frame(direction, frame.frame_type, frame.payload))
        except TunnelError as err:
            assembler.add_all(err.events)
            tunnel.error = str(err)
            break
    tunnel.calls = assembler.calls
    return tunnel
