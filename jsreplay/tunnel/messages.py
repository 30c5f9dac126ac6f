"""gRPC message framing inside a stream's DATA: each message is a 5-byte prefix (compressed flag, length) and
the message bytes, split across DATA frames anywhere."""

from __future__ import annotations

import struct

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


def incomplete_message(buf: bytearray) -> Fault:
    """The fault of a stream that ends while ``buf`` holds part of a message; the caller raises it."""
    return Fault(f"stream ended inside a gRPC message ({len(buf)} bytes pending)", GrpcProtocolError)
