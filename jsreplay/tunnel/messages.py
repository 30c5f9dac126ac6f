"""gRPC message framing inside a stream's DATA: each message is a 5-byte prefix (compressed flag, length) and
the message bytes, split across DATA frames anywhere.

Two ways to cut: :func:`cut_messages` copies every message out; :func:`cut_located` copies only the small ones and
notes where a big one's bytes are in the direction's byte stream (its spans), so that a tunnel carrying a flash
image is decoded without holding the image.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import Fault, GrpcProtocolError, TunnelLimitError
from .events import RequestMessage, ResponseMessage, TunnelEvent

#: The largest gRPC message accepted (grpc's default receive limit is 4 MiB; Jumpstarter raises it).
MAX_MESSAGE_SIZE = 64 << 20
GRPC_PREFIX = struct.Struct(">BI")


def cut_messages(
    buf: bytearray,
    frame: bytes,
    start: int,
    end: int,
    max_message_size: int,
    stream_id: int,
    message_type: type[RequestMessage] | type[ResponseMessage],
    events: list[TunnelEvent],
) -> None:
    """Append the messages that DATA payload ``frame[start:end]`` completes; keep a partial one in ``buf``.

    :raises Fault: on a bad compressed flag or a message over ``max_message_size`` (known from its prefix).
    """
    # Messages are cut straight from the frame's bytes (one copy each); only a message split across frames goes
    # through the stream's buffer (appending there, so a big message in many frames is not copied once per frame).
    data: bytes | bytearray = frame
    pos, size = start, end
    if buf:
        buf += memoryview(frame)[start:end]
        data, pos, size = buf, 0, len(buf)
    while size - pos >= GRPC_PREFIX.size:
        flag, length = GRPC_PREFIX.unpack_from(data, pos)
        if flag > 1:
            raise Fault(f"invalid gRPC compressed-flag {flag}", GrpcProtocolError)
        if length > max_message_size:
            raise Fault(f"gRPC message of {length} bytes exceeds the limit of {max_message_size}", TunnelLimitError)
        stop = pos + GRPC_PREFIX.size + length
        if size < stop:
            break
        message = bytes(data[pos + GRPC_PREFIX.size : stop])
        events.append(message_type(stream_id=stream_id, data=message, compressed=flag == 1))
        pos = stop
    if data is buf:
        del buf[:pos]
    elif pos < size:
        buf += memoryview(frame)[pos:size]


@dataclass(slots=True)
class LocatedBody:
    """A located message whose bytes are still arriving: its size, what is left, and its spans so far."""

    compressed: bool
    size: int
    left: int
    spans: list[int] = field(default_factory=list)  # flattened (start, stop) offsets in the direction's stream

    @property
    def pending(self) -> int:
        """The bytes of the message seen so far, its prefix included."""
        return GRPC_PREFIX.size + self.size - self.left


def _prefix(data: bytes | bytearray, pos: int, max_message_size: int) -> tuple[int, int]:
    flag, length = GRPC_PREFIX.unpack_from(data, pos)
    if flag > 1:
        raise Fault(f"invalid gRPC compressed-flag {flag}", GrpcProtocolError)
    if length > max_message_size:
        raise Fault(f"gRPC message of {length} bytes exceeds the limit of {max_message_size}", TunnelLimitError)
    return flag, length


def cut_located(
    buf: bytearray,
    body: LocatedBody | None,
    frame: bytes,
    start: int,
    end: int,
    base: int,
    locate_over: int,
    max_message_size: int,
    stream_id: int,
    message_type: type[RequestMessage] | type[ResponseMessage],
    events: list[TunnelEvent],
) -> LocatedBody | None:
    """Like :func:`cut_messages`, but a message over ``locate_over`` bytes is not copied: its event has empty
    ``data`` and the spans of the direction's byte stream that hold it (``frame[0]`` is at offset ``base``).

    ``buf`` keeps a partial prefix or small message, ``body`` the located message being received (if any); returns
    the located message still arriving after this payload, or None.

    :raises Fault: as :func:`cut_messages` does.
    """
    pos = start
    while pos < end:
        if body is not None:  # the next bytes belong to a located message: note where, copy nothing
            take = min(body.left, end - pos)
            body.spans += (base + pos, base + pos + take)
            body.left -= take
            pos += take
            if not body.left:
                spans = tuple(body.spans)
                events.append(message_type(stream_id=stream_id, data=b"", compressed=body.compressed, spans=spans))
                body = None
            continue
        if not buf:
            if end - pos < GRPC_PREFIX.size:
                buf += memoryview(frame)[pos:end]
                break
            flag, length = _prefix(frame, pos, max_message_size)
            pos += GRPC_PREFIX.size
            if length > locate_over:
                body = LocatedBody(flag == 1, length, length)
                continue
            if end - pos >= length:  # a whole small message in this payload: cut straight from the frame
                events.append(message_type(stream_id=stream_id, data=frame[pos : pos + length], compressed=flag == 1))
                pos += length
                continue
            buf += memoryview(frame)[pos - GRPC_PREFIX.size : end]
            break
        # `buf` holds the start of a prefix or of a small message: complete it from this payload.
        if len(buf) < GRPC_PREFIX.size:
            take = min(GRPC_PREFIX.size - len(buf), end - pos)
            buf += memoryview(frame)[pos : pos + take]
            pos += take
            if len(buf) < GRPC_PREFIX.size:
                break
            flag, length = _prefix(buf, 0, max_message_size)
            if length > locate_over:
                buf.clear()
                body = LocatedBody(flag == 1, length, length)
                continue
        flag, length = GRPC_PREFIX.unpack_from(buf, 0)
        take = min(GRPC_PREFIX.size + length - len(buf), end - pos)
        buf += memoryview(frame)[pos : pos + take]
        pos += take
        if len(buf) == GRPC_PREFIX.size + length:
            events.append(message_type(stream_id=stream_id, data=bytes(buf[GRPC_PREFIX.size :]), compressed=flag == 1))
            buf.clear()
    return body


def incomplete_message(pending: int) -> Fault:
    """The fault of a stream that ends with ``pending`` bytes of a message received; the caller raises it."""
    return Fault(f"stream ended inside a gRPC message ({pending} bytes pending)", GrpcProtocolError)
