"""HTTP/2 framing for the tunnel decoder: one direction's bytes cut into frames, and each frame's layout parsed.

:class:`FrameBuffer` keeps a direction's partial input, checks the client's connection preface and the frame size
limit, parses every frame's layout (the frequent types in place, the rest through hyperframe) and hands the frame
to the connection's handler. What frames mean for streams is the handler's business (:mod:`.decoder`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar

from hyperframe.exceptions import HyperframeError
from hyperframe.frame import Frame

from .errors import TunnelError, TunnelLimitError, TunnelProtocolError
from .events import Direction, ErrorCode, TunnelEvent

#: What an HTTP/2 client sends before its first frame (RFC 9113 section 3.4).
CONNECTION_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_SIZE = 9
#: The largest frame HTTP/2 can express. Peers negotiate less (16 KiB by default), but the settings that say so
#: travel in the other direction, which a recording may interleave out of causal order, so only this is enforced.
MAX_FRAME_SIZE = 2**24 - 1
MAX_STREAM_ID = 2**31 - 1

DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9
FLAG_END_STREAM = FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20
FLAG_PADDED_OR_PRIORITY = FLAG_PADDED | FLAG_PRIORITY

FRAME_NAMES = {
    DATA: "DATA",
    HEADERS: "HEADERS",
    PRIORITY: "PRIORITY",
    RST_STREAM: "RST_STREAM",
    SETTINGS: "SETTINGS",
    PUSH_PROMISE: "PUSH_PROMISE",
    PING: "PING",
    GOAWAY: "GOAWAY",
    WINDOW_UPDATE: "WINDOW_UPDATE",
    CONTINUATION: "CONTINUATION",
}
#: The types parsed in place by :func:`parse_frequent`; the others go through hyperframe.
FREQUENT = frozenset({DATA, HEADERS, PING, WINDOW_UPDATE, CONTINUATION})
_FRAME_CLASSES = {DATA: "DataFrame", HEADERS: "HeadersFrame", CONTINUATION: "ContinuationFrame"}
_FRAME_HEADER = struct.Struct(">HBBBI")
_UINT32 = struct.Struct(">L")

#: A frame's header fields (type, flags, stream id, length), kept to describe the frame in an error.
FrameHeader: TypeAlias = tuple[int, int, int, int]
_State = TypeVar("_State")
#: Takes (state, type, flags, stream id, length, data, first, last, pad length, PRIORITY's stream dependency or -1,
#: hyperframe's frame for the rare types or None, events); the payload is ``data[first:last]``.
FrameHandler: TypeAlias = Callable[
    [_State, int, int, int, int, bytes, int, int, int, int, Frame | None, list[TunnelEvent]], None
]


def describe(frame_type: int, flags: int, stream_id: int, length: int) -> str:
    name = FRAME_NAMES.get(frame_type, f"unknown frame type 0x{frame_type:x}")
    return f"{name} frame (stream {stream_id}, {length} bytes, flags 0x{flags:x})"


class MalformedFrame(Exception):
    """A frame that breaks HTTP/2's layout rules; the message is hyperframe's for the same fault."""


@dataclass(slots=True)
class FrameBuffer:
    """Cuts one direction's byte stream into frames, like h2's ``FrameBuffer``; also where errors are located."""

    direction: Direction
    max_frame_size: int
    preface_pending: bool = False
    buffer: bytearray = field(default_factory=bytearray)
    consumed: int = 0  # bytes already parsed and dropped from ``buffer``
    # The frame being handled, for errors: its offset and header, described only on failure (formatting a
    # description for every frame costs more than decoding small ones).
    offset: int = 0
    frame: FrameHeader | None = None
    # Half of a gRPC connection's frames are flow control that asks nothing of a passive decoder: while this is
    # >= 0, a well-formed PING, or WINDOW_UPDATE on stream 0 or on an odd stream up to this id, is dropped here
    # without reaching the handler. The connection keeps it at -1 whenever such a frame could fail one of its
    # checks (before SETTINGS, inside a header block) or when skipping is off.
    skip_up_to: int = -1

    def fail(
        self,
        problem: str,
        kind: type[TunnelError] = TunnelProtocolError,
        error_code: ErrorCode | None = None,
    ) -> TunnelError:
        """An error about the frame being handled; the caller raises it."""
        frame = None if self.frame is None else describe(*self.frame)
        return kind(problem, direction=self.direction, offset=self.offset, frame=frame, error_code=error_code)

    def take(self, data: bytes) -> bytes:
        """Add ``data`` to the buffered bytes; return them all, moved out of the buffer, once they hold a whole
        frame (or a frame header that is over the limit); b"" while more input is needed. Waiting for a whole
        frame keeps a frame split into many small chunks from being copied once per chunk."""
        buf = self.buffer
        buf += data
        if self.preface_pending:
            seen = bytes(buf[: len(CONNECTION_PREFACE)])
            if not CONNECTION_PREFACE.startswith(seen):
                self.offset, self.frame = self.consumed, None
                raise self.fail(f"expected the HTTP/2 connection preface, got {seen!r}")
            if len(seen) < len(CONNECTION_PREFACE):
                return b""
            self.preface_pending = False
            del buf[: len(CONNECTION_PREFACE)]
            self.consumed += len(CONNECTION_PREFACE)
        if len(buf) < FRAME_HEADER_SIZE:
            return b""
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < FRAME_HEADER_SIZE + length and length <= self.max_frame_size:
            return b""
        taken = bytes(buf)
        buf.clear()
        return taken

    def cut(self, data: bytes, handle: FrameHandler[_State], state: _State, events: list[TunnelEvent]) -> None:
        """Parse the whole frames at the start of ``data`` and hand each to ``handle``; keep the rest."""
        pos = 0
        size = len(data)
        max_frame_size = self.max_frame_size
        try:
            while size - pos >= FRAME_HEADER_SIZE:
                high, low, frame_type, flags, stream_id = _FRAME_HEADER.unpack_from(data, pos)
                length = (high << 8) | low
                stream_id &= 0x7FFFFFFF
                self.offset = self.consumed + pos
                self.frame = (frame_type, flags, stream_id, length)
                if length > max_frame_size:
                    raise self.fail(
                        f"frame larger than the limit of {max_frame_size} bytes",
                        TunnelLimitError,
                        ErrorCode.FRAME_SIZE_ERROR,
                    )
                start = pos + FRAME_HEADER_SIZE
                end = start + length
                if size < end:
                    break
                if (
                    (frame_type == WINDOW_UPDATE or frame_type == PING)
                    and (skip_up_to := self.skip_up_to) >= 0
                    and (
                        (length == 8 and not stream_id)
                        if frame_type == PING
                        else length == 4
                        and 1 <= _UINT32.unpack_from(data, start)[0] <= 2**31 - 1
                        and (not stream_id or (stream_id % 2 == 1 and stream_id <= skip_up_to))
                    )
                ):
                    pos = end  # every check the handler makes would pass
                    continue
                first, last, pad, depends_on = start, start, 0, -1
                frame: Frame | None = None
                if (frame_type == DATA or frame_type == HEADERS) and stream_id and not flags & FLAG_PADDED_OR_PRIORITY:
                    last = end  # what parse_frequent returns for these, without the call
                elif frame_type in FREQUENT:
                    try:
                        first, last, pad, depends_on = parse_frequent(frame_type, flags, stream_id, data, start, end)
                    except MalformedFrame as err:
                        raise self.fail(f"malformed frame: {err}") from None
                else:
                    # Rare types (SETTINGS, RST_STREAM, GOAWAY, PRIORITY...): hyperframe's objects are worth it.
                    view = memoryview(data)
                    try:
                        frame, _ = Frame.parse_frame_header(view[pos:start])
                        frame.parse_body(view[start:end])
                    except HyperframeError as err:
                        raise self.fail(f"malformed frame: {err}") from err
                handle(state, frame_type, flags, stream_id, length, data, first, last, pad, depends_on, frame, events)
                pos = end
        finally:
            self.consumed += pos
            if pos < size:
                self.buffer += memoryview(data)[pos:]


def parse_frequent(
    frame_type: int, flags: int, stream_id: int, data: bytes, start: int, end: int
) -> tuple[int, int, int, int]:
    """Parse a DATA, HEADERS, CONTINUATION, PING or WINDOW_UPDATE frame whose body is ``data[start:end]``.

    Returns (first, last, pad length, PRIORITY's stream dependency or -1), where ``data[first:last]`` is DATA's
    data or the header block fragment. Checks what hyperframe's parser checks, in its order and with its
    messages (a test compares the two): these frames are most of a tunnel, and building hyperframe's frame
    objects costs more than decoding them.
    """
    if frame_type == WINDOW_UPDATE:
        if end - start > 4:
            raise MalformedFrame(f"WINDOW_UPDATE frame must have 4 byte length: got {end - start}")
        if end - start < 4:
            raise MalformedFrame("Invalid WINDOW_UPDATE body")
        if not 1 <= _UINT32.unpack_from(data, start)[0] <= 2**31 - 1:
            raise MalformedFrame("WINDOW_UPDATE increment must be between 1 to 2^31-1")
        return start, start, 0, -1
    if frame_type == PING:
        if stream_id:
            raise MalformedFrame(f"Stream ID must be zero for PingFrame with stream_id={stream_id}")
        if end - start != 8:
            raise MalformedFrame(f"PING frame must have 8 byte length: got {end - start}")
        return start, start, 0, -1
    if not stream_id:
        raise MalformedFrame(f"Stream ID must be non-zero for {_FRAME_CLASSES[frame_type]}")
    if frame_type == CONTINUATION:
        return start, end, 0, -1
    body, pad, depends_on = start, 0, -1
    if flags & FLAG_PADDED:
        if start == end:
            raise MalformedFrame("Invalid Padding data")
        pad = data[start]
        body += 1
    if frame_type == HEADERS and flags & FLAG_PRIORITY:
        if end - body < 5:
            raise MalformedFrame("Invalid Priority data")
        depends_on = _UINT32.unpack_from(data, body)[0] & 0x7FFFFFFF
        # hyperframe bounds the padding by the body after the pad length for HEADERS, by the whole body for DATA.
        if pad and pad >= end - body:
            raise MalformedFrame("Padding is too long.")
        return body + 5, max(body + 5, end - pad), pad, depends_on
    if pad and pad >= end - (body if frame_type == HEADERS else start):
        raise MalformedFrame("Padding is too long.")
    return body, end - pad, pad, depends_on
