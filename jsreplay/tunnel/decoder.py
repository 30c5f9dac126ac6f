"""Sans-I/O decoder for the cleartext HTTP/2 gRPC connection that runs inside a Jumpstarter router tunnel.

Feed it the tunnel's byte chunks, each with its :class:`Direction`, exactly as recorded (split anywhere); it
returns :mod:`~jsreplay.tunnel.events` in wire order. It never touches a socket and never sends anything: it only
watches a connection that two real peers already negotiated.

The two directions are decoded independently (each has its own buffer and its own HPACK table), so chunks may be
fed in any interleaving that keeps each direction's own order; only the order of the returned events depends on
the interleaving. For the same reason, nothing is checked that would need the other direction's view: negotiated
settings (frame size, header table size) and flow-control windows are not enforced, only the protocol's hard
limits and this decoder's own limits (see the ``MAX_*`` constants).

What is validated: the client's connection preface, SETTINGS first in each direction, every frame's layout
(through hyperframe), padding, CONTINUATION sequencing, header-block and header-field rules (pseudo-headers,
lowercase names, connection-specific headers), stream states per direction (no DATA before HEADERS or after
END_STREAM / RST_STREAM, client stream ids odd and increasing, no server push), and the gRPC layer (message
prefixes, status and timeout syntax, base64 of ``-bin`` values). Any violation raises a
:class:`~jsreplay.tunnel.errors.TunnelError`, after which that direction refuses further input with the same error.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias, cast

import hpack
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    Frame,
    GoAwayFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
)

from jsreplay.protocol.wire import RouterFrameType

from .errors import GrpcProtocolError, TunnelError, TunnelLimitError, TunnelProtocolError
from .events import (
    ConnectionClosed,
    Direction,
    ErrorCode,
    MetadataValue,
    RequestEnded,
    RequestHeaders,
    RequestMessage,
    ResponseHeaders,
    ResponseMessage,
    ResponseTrailers,
    StreamReset,
    TunnelEnded,
    TunnelEvent,
)

#: What an HTTP/2 client sends before its first frame (RFC 9113 section 3.4).
CONNECTION_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_SIZE = 9
#: The largest frame HTTP/2 can express. Peers negotiate less (16 KiB by default), but the settings that say so
#: travel in the other direction, which a recording may interleave out of causal order, so only this is enforced.
MAX_FRAME_SIZE = 2**24 - 1
#: The compressed header block of one HEADERS frame plus its CONTINUATIONs; bounds memory against endless
#: CONTINUATION frames.
MAX_HEADER_BLOCK_SIZE = 1 << 20
#: The decompressed header list, counted as HPACK does (name + value + 32 per field); bounds HPACK bombs.
MAX_HEADER_LIST_SIZE = 1 << 20
#: The largest HPACK dynamic table an encoder may ask for. Real peers use 4 KiB; the advertised limit is not
#: enforced (see MAX_FRAME_SIZE for why), so this is a generous bound instead.
MAX_HEADER_TABLE_SIZE = 1 << 16
#: The largest gRPC message accepted (grpc's default receive limit is 4 MiB; Jumpstarter raises it).
MAX_MESSAGE_SIZE = 64 << 20

_GRPC_PREFIX = struct.Struct(">BI")
_FRAME_HEADER = struct.Struct(">HBBBI")
_FRAME_NAMES = {
    0x0: "DATA",
    0x1: "HEADERS",
    0x2: "PRIORITY",
    0x3: "RST_STREAM",
    0x4: "SETTINGS",
    0x5: "PUSH_PROMISE",
    0x6: "PING",
    0x7: "GOAWAY",
    0x8: "WINDOW_UPDATE",
    0x9: "CONTINUATION",
}
_DATA = 0x0
_HEADERS = 0x1
_RST_STREAM = 0x3
_SETTINGS = 0x4
_PUSH_PROMISE = 0x5
_PING = 0x6
_WINDOW_UPDATE = 0x8
_CONTINUATION = 0x9
_FLAG_END_STREAM = _FLAG_ACK = 0x1
_FLAG_END_HEADERS = 0x4
_FLAG_PADDED = 0x8
_FLAG_PRIORITY = 0x20
_FLAG_PADDED_OR_PRIORITY = _FLAG_PADDED | _FLAG_PRIORITY
_UINT32 = struct.Struct(">L")
_FREQUENT = frozenset({_DATA, _HEADERS, _PING, _WINDOW_UPDATE, _CONTINUATION})
_FRAME_CLASSES = {_DATA: "DataFrame", _HEADERS: "HeadersFrame", _CONTINUATION: "ContinuationFrame"}
# Frames that must name an existing or new client-initiated stream (PRIORITY may name any stream).
_STREAM_FRAMES = frozenset({_DATA, _HEADERS, _RST_STREAM, _WINDOW_UPDATE})

_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
_REQUIRED_REQUEST_PSEUDO = (b":method", b":scheme", b":path")
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_STATUS = re.compile(rb"[0-9]{3}")
_GRPC_STATUS = re.compile(rb"[0-9]{1,10}")
# gRPC's mapping for responses without grpc-status (doc/http-grpc-status-mapping.md): 400 INTERNAL,
# 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, others UNKNOWN.
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_GRPC_UNKNOWN = 2

# SETTINGS identifiers whose values RFC 9113 section 6.5.2 constrains.
_ENABLE_PUSH = SettingsFrame.ENABLE_PUSH
_INITIAL_WINDOW_SIZE = SettingsFrame.INITIAL_WINDOW_SIZE
_SETTINGS_MAX_FRAME_SIZE = SettingsFrame.MAX_FRAME_SIZE
_ENABLE_CONNECT_PROTOCOL = SettingsFrame.ENABLE_CONNECT_PROTOCOL


# Header blocks already decoded and checked, keyed by all their decoding depends on: the bytes, the HPACK dynamic
# table they were decoded against (its size limit and entries) and the decoder's limits; with the table they left
# behind. Every tunnel is a new connection whose opening calls send the same blocks as the last one's, and later
# blocks mostly refer to entries added earlier: most blocks of a cassette are hits. The values are not mutated.
_Entries: TypeAlias = tuple[tuple[bytes, bytes], ...]
_HeaderKey: TypeAlias = tuple[bytes, int, _Entries, int, int]
_HeaderSplit: TypeAlias = tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]
_HEADER_CACHE: dict[_HeaderKey, tuple[_HeaderSplit, int, _Entries]] = {}  # -> (split, table size limit, entries)
# Bounds on what the cache holds (a key keeps its table's entries): at most about 1024 * (4 + 16) KiB.
_HEADER_CACHE_SIZE = 1024
_HEADER_CACHE_MAX_BLOCK = 4096  # bytes; bigger blocks are rare
_HEADER_CACHE_MAX_TABLE = 16384  # bytes; gRPC peers use 4096


@dataclass(slots=True)
class _HalfStream:
    """One direction of one inner stream: what that side has sent so far."""

    headers_seen: bool = False
    ended: bool = False  # sent END_STREAM
    reset: bool = False  # sent RST_STREAM
    http_status: int = 200
    buffer: bytearray = field(default_factory=bytearray)  # partial gRPC message


@dataclass(slots=True)
class _HeaderBlock:
    """A header block being assembled from HEADERS + CONTINUATION frames."""

    stream_id: int
    end_stream: bool
    offset: int
    frame: tuple[int, int, int, int]
    fragments: list[bytes]
    size: int


@dataclass(slots=True)
class _Side:
    """The state of one direction of the connection."""

    direction: Direction
    by_client: bool  # direction.by_client, read for nearly every frame
    hpack: hpack.Decoder
    buffer: bytearray = field(default_factory=bytearray)
    consumed: int = 0  # bytes of this direction already parsed and dropped from ``buffer``
    preface_pending: bool = False
    settings_seen: bool = False
    ended: bool = False
    error: TunnelError | None = None
    header_block: _HeaderBlock | None = None
    last_stream_id: int = 0  # highest stream the client opened (client side only)
    streams: dict[int, _HalfStream] = field(default_factory=dict)
    # Frame being handled, for error messages: (type, flags, stream id, length), described only on failure
    # (formatting a description for every frame costs more than decoding small ones).
    offset: int = 0
    frame: tuple[int, int, int, int] | None = None

    def fail(
        self,
        problem: str,
        kind: type[TunnelError] = TunnelProtocolError,
        error_code: ErrorCode | None = None,
    ) -> TunnelError:
        """An error about the frame being handled; the caller raises it."""
        frame = None if self.frame is None else _describe(*self.frame)
        return kind(problem, direction=self.direction, offset=self.offset, frame=frame, error_code=error_code)


def _describe(frame_type: int, flags: int, stream_id: int, length: int) -> str:
    name = _FRAME_NAMES.get(frame_type, f"unknown frame type 0x{frame_type:x}")
    return f"{name} frame (stream {stream_id}, {length} bytes, flags 0x{flags:x})"


# The parse loop steps over flow-control frames that pass every check (tests turn this off to compare).
_SKIP_FLOW_CONTROL = True
_ROUTER_DATA = int(RouterFrameType.DATA)
_ROUTER_GOAWAY = int(RouterFrameType.GOAWAY)
_C2E = Direction.CLIENT_TO_EXPORTER
_E2C = Direction.EXPORTER_TO_CLIENT


class TunnelDecoder:
    """Turns the two byte streams of an inner HTTP/2 gRPC connection into :data:`TunnelEvent` values.

    Limits default to the module's ``MAX_*`` constants. One instance decodes one tunnel (one HTTP/2 connection).

    The inner connection may itself carry a ``jumpstarter.v1.RouterService/Stream`` call (byte-streaming drivers).
    That is just another inner call: its messages are serialized router frames whose payloads are the driver's raw
    bytes, not HTTP/2, so they need no further decoding here.
    """

    def __init__(
        self,
        *,
        max_frame_size: int = MAX_FRAME_SIZE,
        max_header_block_size: int = MAX_HEADER_BLOCK_SIZE,
        max_header_list_size: int = MAX_HEADER_LIST_SIZE,
        max_header_table_size: int = MAX_HEADER_TABLE_SIZE,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.max_header_block_size = max_header_block_size
        self.max_message_size = max_message_size
        # One per direction; not a dict keyed by Direction: an Enum hashes in Python, and this is per chunk.
        self._sides: list[_Side] = []
        for direction in (_C2E, _E2C):
            decoder = hpack.Decoder(max_header_list_size=max_header_list_size)
            decoder.max_allowed_table_size = max_header_table_size
            side = _Side(
                direction=direction, by_client=direction.by_client, hpack=decoder, preface_pending=direction.by_client
            )
            self._sides.append(side)

    def feed(self, direction: Direction, data: bytes) -> list[TunnelEvent]:
        """Decode the next ``data`` travelling in ``direction``; return the events it completes, in wire order.

        Incomplete frames and messages are kept until later input completes them.

        :raises TunnelError: if the bytes are malformed. The error's ``events`` holds what this call decoded before
            the bad frame, and every later call for ``direction`` raises the same error.
        """
        side = self._check_open(direction)
        if side.ended:
            if not data:
                return []
            err = TunnelProtocolError(
                "data after the end of the byte stream", direction=direction, offset=side.consumed
            )
            raise self._refuse(side, err)
        events: list[TunnelEvent] = []
        try:
            if side.buffer or side.preface_pending:
                side.buffer += data
                data = self._take_ready(side)
            if data:
                self._parse(side, bytes(data), events)
        except TunnelError as err:
            err.events = tuple(events)
            side.error = err
            raise
        return events

    def end(self, direction: Direction) -> list[TunnelEvent]:
        """Mark the end of ``direction``'s byte stream; return ``[TunnelEnded]`` (nothing if already ended).

        :raises TunnelProtocolError: if the stream stopped inside the preface, a frame or a header block.
        """
        side = self._check_open(direction)
        if side.ended:
            return []
        pending = len(side.buffer)
        if side.header_block is not None or (pending and not side.preface_pending):
            side.offset, side.frame = side.consumed, None
            raise self._refuse(side, side.fail(f"byte stream ended inside a frame ({pending} bytes pending)"))
        if pending:
            side.offset, side.frame = 0, None
            raise self._refuse(side, side.fail(f"byte stream ended inside the connection preface ({pending} bytes)"))
        side.ended = True
        return [TunnelEnded(by_client=direction.by_client)]

    def feed_router_frame(self, direction: Direction, frame_type: int, payload: bytes) -> list[TunnelEvent]:
        """Feed one outer ``RouterService/Stream`` message as a Jumpstarter 0.9.0 peer would receive it.

        DATA feeds its payload. GOAWAY ends the direction (:meth:`end`): Jumpstarter's ``RouterStream`` treats it as
        end-of-stream and never reads past it, so later DATA raises. PING, RST_STREAM and unknown types are ignored,
        as ``RouterStream`` ignores them too (it only logs them); they return no events.
        """
        if frame_type == _ROUTER_DATA:
            return self.feed(direction, payload)
        if frame_type == _ROUTER_GOAWAY:
            return self.end(direction)
        self._check_open(direction)
        return []

    def _check_open(self, direction: Direction) -> _Side:
        if direction is _C2E:
            side = self._sides[0]
        elif direction is _E2C:
            side = self._sides[1]
        else:
            raise KeyError(direction)
        if side.error is not None:
            side.error.events = ()
            raise side.error
        return side

    @staticmethod
    def _refuse(side: _Side, err: TunnelError) -> TunnelError:
        side.error = err
        return err

    # Framing ---------------------------------------------------------------------------------------------------

    def _take_ready(self, side: _Side) -> bytes:
        """The buffered bytes, moved out of the buffer, once they hold a whole frame (or a frame header that is
        over the limit); b"" while more input is needed. Waiting for a whole frame keeps a frame split into many
        small chunks from being copied once per chunk."""
        buf = side.buffer
        if side.preface_pending:
            seen = bytes(buf[: len(CONNECTION_PREFACE)])
            if not CONNECTION_PREFACE.startswith(seen):
                side.offset, side.frame = side.consumed, None
                raise side.fail(f"expected the HTTP/2 connection preface, got {seen!r}")
            if len(seen) < len(CONNECTION_PREFACE):
                return b""
            side.preface_pending = False
            del buf[: len(CONNECTION_PREFACE)]
            side.consumed += len(CONNECTION_PREFACE)
        if len(buf) < FRAME_HEADER_SIZE:
            return b""
        length = int.from_bytes(buf[:3], "big")
        if len(buf) < FRAME_HEADER_SIZE + length and length <= self.max_frame_size:
            return b""
        data = bytes(buf)
        buf.clear()
        return data

    def _parse(self, side: _Side, data: bytes, events: list[TunnelEvent]) -> None:
        """Decode the whole frames at the start of ``data``; keep the rest in the side's buffer."""
        pos = 0
        size = len(data)
        try:
            while size - pos >= FRAME_HEADER_SIZE:
                high, low, frame_type, flags, stream_id = _FRAME_HEADER.unpack_from(data, pos)
                length = (high << 8) | low
                stream_id &= 0x7FFFFFFF
                side.offset = side.consumed + pos
                side.frame = (frame_type, flags, stream_id, length)
                if length > self.max_frame_size:
                    raise side.fail(
                        f"frame larger than the limit of {self.max_frame_size} bytes",
                        TunnelLimitError,
                        ErrorCode.FRAME_SIZE_ERROR,
                    )
                end = pos + FRAME_HEADER_SIZE + length
                if size < end:
                    break
                # Half of a gRPC connection's frames are flow control that asks nothing of a passive decoder:
                # a well-formed WINDOW_UPDATE or PING on an open connection is skipped here. Anything else,
                # malformed ones included, goes through _frame, which checks and reports.
                if (
                    (frame_type == _WINDOW_UPDATE or frame_type == _PING)
                    and _SKIP_FLOW_CONTROL
                    and side.settings_seen
                    and side.header_block is None
                    and (
                        (length == 8 and not stream_id)
                        if frame_type == _PING
                        else length == 4
                        and 1 <= _UINT32.unpack_from(data, pos + FRAME_HEADER_SIZE)[0] <= 2**31 - 1
                        and (
                            not stream_id
                            or (stream_id % 2 == 1 and not (side.by_client and stream_id > side.last_stream_id))
                        )
                    )
                ):
                    pos = end  # a well-formed WINDOW_UPDATE or PING: every check _frame makes would pass
                    continue
                self._frame(side, frame_type, flags, stream_id, length, data, pos + FRAME_HEADER_SIZE, end, events)
                pos = end
        finally:
            side.consumed += pos
            if pos < size:
                side.buffer += memoryview(data)[pos:]

    def _frame(
        self,
        side: _Side,
        frame_type: int,
        flags: int,
        stream_id: int,
        length: int,
        data: bytes,
        start: int,
        end: int,
        events: list[TunnelEvent],
    ) -> None:
        """Handle the frame whose body is ``data[start:end]``.

        The frequent types are parsed here, with the checks and messages hyperframe's parser has (tests compare
        the two); the rest go through hyperframe, whose frame objects cost more than decoding a small frame.
        """
        first, last, pad, depends_on = start, start, 0, -1  # the payload is data[first:last]
        frame: Frame | None = None
        if (frame_type == _DATA or frame_type == _HEADERS) and stream_id and not flags & _FLAG_PADDED_OR_PRIORITY:
            last = end  # what _parse_frequent returns for these, without the call
        elif frame_type in _FREQUENT:
            try:
                first, last, pad, depends_on = _parse_frequent(frame_type, flags, stream_id, data, start, end)
            except _MalformedFrame as err:
                raise side.fail(f"malformed frame: {err}") from None
        else:
            view = memoryview(data)
            try:
                frame, _ = Frame.parse_frame_header(view[start - FRAME_HEADER_SIZE : start])
                frame.parse_body(view[start:end])
            except HyperframeError as err:
                raise side.fail(f"malformed frame: {err}") from err

        block = side.header_block
        if block is not None:
            if frame_type != _CONTINUATION or stream_id != block.stream_id:
                raise side.fail(f"expected CONTINUATION for stream {block.stream_id}")
            self._continuation(side, block, flags, data[first:last], events)
            return
        if not side.settings_seen:
            if frame_type != _SETTINGS or flags & _FLAG_ACK:
                raise side.fail("the first frame must be SETTINGS")
            side.settings_seen = True
        if stream_id and stream_id % 2 == 0 and frame_type in _STREAM_FRAMES:
            # gRPC clients disable server push, so every stream is client-initiated and odd.
            raise side.fail("even stream id: server push is not in use")

        if frame_type == _DATA:
            self._data(side, stream_id, data, first, last, bool(flags & _FLAG_END_STREAM), events)
        elif frame_type == _WINDOW_UPDATE:
            if stream_id and side.by_client and stream_id > side.last_stream_id:
                raise side.fail("WINDOW_UPDATE on an idle stream")
        elif frame_type == _HEADERS:
            self._headers(side, stream_id, flags, pad, depends_on, data[first:last], length, events)
        elif frame_type == _CONTINUATION:
            raise side.fail("CONTINUATION without a preceding HEADERS")
        elif isinstance(frame, PriorityFrame):
            if frame.depends_on == frame.stream_id:
                raise side.fail("stream depends on itself")
        elif isinstance(frame, RstStreamFrame):
            self._rst_stream(side, frame, events)
        elif isinstance(frame, SettingsFrame):
            self._settings(side, frame)
        elif isinstance(frame, GoAwayFrame):
            events.append(
                ConnectionClosed(
                    error_code=frame.error_code,
                    last_stream_id=frame.last_stream_id,
                    debug_data=frame.additional_data,
                    by_client=side.by_client,
                )
            )
        elif frame_type == _PUSH_PROMISE:
            raise side.fail("PUSH_PROMISE: gRPC clients disable server push")
        # PING needs no action (its size is checked above); unknown frame types must be ignored (RFC 9113 5.5).

    def _settings(self, side: _Side, frame: SettingsFrame) -> None:
        for name, value in frame.settings.items():
            if name == _ENABLE_PUSH and (value > 1 or (value == 1 and not side.by_client)):
                raise side.fail(f"invalid SETTINGS_ENABLE_PUSH {value}")
            if name == _ENABLE_CONNECT_PROTOCOL and value > 1:
                raise side.fail(f"invalid SETTINGS_ENABLE_CONNECT_PROTOCOL {value}")
            if name == _INITIAL_WINDOW_SIZE and value > 2**31 - 1:
                raise side.fail(
                    f"invalid SETTINGS_INITIAL_WINDOW_SIZE {value}", error_code=ErrorCode.FLOW_CONTROL_ERROR
                )
            if name == _SETTINGS_MAX_FRAME_SIZE and not 2**14 <= value <= 2**24 - 1:
                raise side.fail(f"invalid SETTINGS_MAX_FRAME_SIZE {value}")

    def _rst_stream(self, side: _Side, frame: RstStreamFrame, events: list[TunnelEvent]) -> None:
        if side.by_client and frame.stream_id > side.last_stream_id:
            raise side.fail("RST_STREAM on an idle stream")
        stream = side.streams.setdefault(frame.stream_id, _HalfStream())
        stream.reset = True
        stream.buffer.clear()  # a message cut short by the reset is abandoned, not an error
        events.append(StreamReset(stream_id=frame.stream_id, error_code=frame.error_code, by_client=side.by_client))

    # Headers ---------------------------------------------------------------------------------------------------

    def _headers(
        self,
        side: _Side,
        stream_id: int,
        flags: int,
        pad: int,
        depends_on: int,
        fragment: bytes,
        length: int,
        events: list[TunnelEvent],
    ) -> None:
        # hyperframe misses padding that eats into the priority fields; check the whole layout here.
        overhead = (1 + pad if flags & _FLAG_PADDED else 0) + (5 if flags & _FLAG_PRIORITY else 0)
        if overhead > length:
            raise side.fail("padding longer than the frame")
        if flags & _FLAG_PRIORITY and depends_on == stream_id:
            raise side.fail("stream depends on itself")
        self._check_headers_allowed(side, stream_id)
        assert side.frame is not None
        block = side.header_block = _HeaderBlock(
            stream_id=stream_id,
            end_stream=bool(flags & _FLAG_END_STREAM),
            offset=side.offset,
            frame=side.frame,
            fragments=[fragment],
            size=len(fragment),
        )
        self._check_block_size(side, block)
        if flags & _FLAG_END_HEADERS:
            self._finish_header_block(side, events)

    def _continuation(
        self, side: _Side, block: _HeaderBlock, flags: int, fragment: bytes, events: list[TunnelEvent]
    ) -> None:
        block.fragments.append(fragment)
        block.size += len(fragment)
        self._check_block_size(side, block)
        if flags & _FLAG_END_HEADERS:
            self._finish_header_block(side, events)

    def _check_block_size(self, side: _Side, block: _HeaderBlock) -> None:
        if block.size > self.max_header_block_size:
            raise side.fail(
                f"header block larger than the limit of {self.max_header_block_size} bytes", TunnelLimitError
            )

    def _check_headers_allowed(self, side: _Side, stream_id: int) -> None:
        stream = side.streams.get(stream_id)
        if side.by_client and stream_id > side.last_stream_id:
            return  # opens a new stream
        if stream is None:
            if side.by_client:
                raise side.fail("HEADERS on a closed stream (stream ids must increase)")
            return  # the exporter's first HEADERS on this stream
        if stream.ended or stream.reset:
            raise side.fail("HEADERS on a stream this side already closed", error_code=ErrorCode.STREAM_CLOSED)
        if not stream.headers_seen:  # only an RST_STREAM was seen, and that closes the stream
            raise side.fail("HEADERS on a closed stream", error_code=ErrorCode.STREAM_CLOSED)

    def _finish_header_block(self, side: _Side, events: list[TunnelEvent]) -> None:
        block = side.header_block
        assert block is not None
        side.header_block = None
        # Errors about the header block name its HEADERS frame rather than the last CONTINUATION.
        side.offset, side.frame = block.offset, block.frame
        data = b"".join(block.fragments)
        decoder = side.hpack
        table = decoder.header_table
        key: _HeaderKey | None = None
        split = None
        if len(data) <= _HEADER_CACHE_MAX_BLOCK and table.maxsize <= _HEADER_CACHE_MAX_TABLE:
            entries = tuple(table.dynamic_entries)
            key = (data, table.maxsize, entries, decoder.max_header_list_size, decoder.max_allowed_table_size)
            known = _HEADER_CACHE.get(key)
            if known is not None:
                split, maxsize, after = known
                if maxsize != table.maxsize or after != entries:
                    _set_table(table, maxsize, after)
        if split is None:
            try:
                decoded = decoder.decode(data, raw=True)
            except hpack.OversizedHeaderListError as err:
                raise side.fail(f"header list too large: {err}", TunnelLimitError) from err
            except hpack.HPACKError as err:
                raise side.fail(f"HPACK: {err}", error_code=ErrorCode.COMPRESSION_ERROR) from err
            fields = [(cast(bytes, name), cast(bytes, value)) for name, value in decoded]
            split = self._split_fields(side, fields)
            if key is not None and table.maxsize <= _HEADER_CACHE_MAX_TABLE:
                if len(_HEADER_CACHE) >= _HEADER_CACHE_SIZE:
                    _HEADER_CACHE.clear()
                _HEADER_CACHE[key] = (split, table.maxsize, tuple(table.dynamic_entries))
        pseudo, regular = split
        stream = side.streams.get(block.stream_id)
        if side.by_client:
            if stream is None:
                self._request_headers(side, block, pseudo, regular, events)
            else:
                self._request_trailers(side, block, pseudo, stream, events)
        elif stream is None:
            self._response_headers(side, block, pseudo, regular, events)
        else:
            self._response_trailers(side, block, pseudo, regular, stream, events)

    @staticmethod
    def _split_fields(
        side: _Side, fields: list[tuple[bytes, bytes]]
    ) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
        """Check RFC 9113 section 8.2 field rules; return (pseudo-headers, regular fields in order)."""
        pseudo: dict[bytes, bytes] = {}
        regular: list[tuple[bytes, bytes]] = []
        for name, value in fields:
            if name.startswith(b":"):
                if regular:
                    raise side.fail(f"pseudo-header {name!r} after a regular header")
                if name in pseudo:
                    raise side.fail(f"duplicate pseudo-header {name!r}")
                pseudo[name] = value
                continue
            if not name or name != name.lower():
                raise side.fail(f"header name {name!r} is empty or not lowercase")
            if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
                raise side.fail(f"connection-specific header {name!r}")
            regular.append((name, value))
        return pseudo, regular

    def _request_headers(
        self,
        side: _Side,
        block: _HeaderBlock,
        pseudo: dict[bytes, bytes],
        regular: list[tuple[bytes, bytes]],
        events: list[TunnelEvent],
    ) -> None:
        unknown = set(pseudo) - _REQUEST_PSEUDO
        if unknown:
            raise side.fail(f"unexpected request pseudo-headers {sorted(unknown)}")
        for name in _REQUIRED_REQUEST_PSEUDO:
            if not pseudo.get(name):
                raise side.fail(f"request without {name.decode()}")
        side.last_stream_id = block.stream_id
        stream = side.streams[block.stream_id] = _HalfStream(headers_seen=True)
        timeout = None
        metadata: list[tuple[str, MetadataValue]] = []
        for name, value in regular:
            if name == b"grpc-timeout":
                timeout = _parse_timeout(side, value)
            else:
                metadata.extend(_metadata_entries(side, name, value))
        authority = pseudo.get(b":authority")
        events.append(
            RequestHeaders(
                stream_id=block.stream_id,
                method=_text(pseudo[b":path"]),
                authority=None if authority is None else _text(authority),
                timeout=timeout,
                metadata=tuple(metadata),
            )
        )
        if block.end_stream:
            self._end_request(side, block.stream_id, stream, events)

    def _request_trailers(
        self,
        side: _Side,
        block: _HeaderBlock,
        pseudo: dict[bytes, bytes],
        stream: _HalfStream,
        events: list[TunnelEvent],
    ) -> None:
        # gRPC clients never send trailers; HTTP/2 allows them, so accept and drop their (HPACK-decoded) fields.
        if pseudo:
            raise side.fail("pseudo-headers in trailers")
        if not block.end_stream:
            raise side.fail("second HEADERS without END_STREAM")
        self._end_request(side, block.stream_id, stream, events)

    def _response_headers(
        self,
        side: _Side,
        block: _HeaderBlock,
        pseudo: dict[bytes, bytes],
        regular: list[tuple[bytes, bytes]],
        events: list[TunnelEvent],
    ) -> None:
        status = pseudo.get(b":status")
        if set(pseudo) != {b":status"} or status is None or not _STATUS.fullmatch(status):
            raise side.fail(f"response needs exactly one valid :status pseudo-header, got {pseudo!r}")
        stream = side.streams[block.stream_id] = _HalfStream(headers_seen=True, http_status=int(status))
        if block.end_stream:
            stream.ended = True
            events.append(self._trailers_event(side, block.stream_id, stream, regular, trailers_only=True))
            return
        metadata = tuple(entry for name, value in regular for entry in _metadata_entries(side, name, value))
        events.append(ResponseHeaders(stream_id=block.stream_id, http_status=stream.http_status, metadata=metadata))

    def _response_trailers(
        self,
        side: _Side,
        block: _HeaderBlock,
        pseudo: dict[bytes, bytes],
        regular: list[tuple[bytes, bytes]],
        stream: _HalfStream,
        events: list[TunnelEvent],
    ) -> None:
        if pseudo:
            raise side.fail("pseudo-headers in trailers")
        if not block.end_stream:
            raise side.fail("second HEADERS without END_STREAM")
        self._check_no_partial_message(side, stream)
        stream.ended = True
        events.append(self._trailers_event(side, block.stream_id, stream, regular, trailers_only=False))

    @staticmethod
    def _trailers_event(
        side: _Side,
        stream_id: int,
        stream: _HalfStream,
        regular: list[tuple[bytes, bytes]],
        *,
        trailers_only: bool,
    ) -> ResponseTrailers:
        code: int | None = None
        details = ""
        metadata: list[tuple[str, MetadataValue]] = []
        for name, value in regular:
            if name == b"grpc-status":
                if not _GRPC_STATUS.fullmatch(value):
                    raise side.fail(f"invalid grpc-status {value!r}", GrpcProtocolError)
                code = int(value)
            elif name == b"grpc-message":
                # Percent-encoded UTF-8; gRPC asks decoders to keep bad escapes and bad UTF-8 rather than fail.
                details = urllib.parse.unquote_to_bytes(value).decode("utf-8", errors="replace")
            else:
                metadata.extend(_metadata_entries(side, name, value))
        if code is None:
            code = _HTTP_TO_GRPC.get(stream.http_status, _GRPC_UNKNOWN)
        return ResponseTrailers(
            stream_id=stream_id, code=code, details=details, metadata=tuple(metadata), trailers_only=trailers_only
        )

    # Data ------------------------------------------------------------------------------------------------------

    def _data(
        self,
        side: _Side,
        stream_id: int,
        frame: bytes,
        start: int,
        end: int,
        end_stream: bool,
        events: list[TunnelEvent],
    ) -> None:
        """Handle a DATA frame whose payload is ``frame[start:end]``."""
        stream = side.streams.get(stream_id)
        if stream is None or not stream.headers_seen:
            raise side.fail("DATA before HEADERS", error_code=ErrorCode.STREAM_CLOSED)
        if stream.ended or stream.reset:
            raise side.fail("DATA on a stream this side already closed", error_code=ErrorCode.STREAM_CLOSED)
        message_type = RequestMessage if side.by_client else ResponseMessage
        buf = stream.buffer
        # Messages are cut straight from the frame's bytes (one copy each); only a message split across frames
        # goes through the stream's buffer (appending there, so a big message in many frames is not copied once
        # per frame).
        data: bytes | bytearray = frame
        pos, size = start, end
        if buf:
            buf += memoryview(frame)[start:end]
            data, pos, size = buf, 0, len(buf)
        while size - pos >= _GRPC_PREFIX.size:
            flag, length = _GRPC_PREFIX.unpack_from(data, pos)
            if flag > 1:
                raise side.fail(f"invalid gRPC compressed-flag {flag}", GrpcProtocolError)
            if length > self.max_message_size:
                raise side.fail(
                    f"gRPC message of {length} bytes exceeds the limit of {self.max_message_size}", TunnelLimitError
                )
            stop = pos + _GRPC_PREFIX.size + length
            if size < stop:
                break
            message = bytes(data[pos + _GRPC_PREFIX.size : stop])
            events.append(message_type(stream_id=stream_id, data=message, compressed=flag == 1))
            pos = stop
        if data is buf:
            del buf[:pos]
        elif pos < size:
            buf += memoryview(frame)[pos:size]
        if end_stream:
            if not side.by_client:
                raise side.fail("the exporter ended a stream without trailers", GrpcProtocolError)
            self._end_request(side, stream_id, stream, events)

    def _end_request(self, side: _Side, stream_id: int, stream: _HalfStream, events: list[TunnelEvent]) -> None:
        self._check_no_partial_message(side, stream)
        stream.ended = True
        events.append(RequestEnded(stream_id=stream_id))

    @staticmethod
    def _check_no_partial_message(side: _Side, stream: _HalfStream) -> None:
        if stream.buffer:
            raise side.fail(
                f"stream ended inside a gRPC message ({len(stream.buffer)} bytes pending)", GrpcProtocolError
            )


def _set_table(table: hpack.table.HeaderTable, maxsize: int, entries: _Entries) -> None:
    """Put an HPACK dynamic table in a state it had elsewhere, through its public methods: a size limit of 0
    empties it, then the entries go back in oldest first (`add` puts each in front)."""
    table.maxsize = 0
    table.maxsize = maxsize
    for name, value in reversed(entries):
        table.add(name, value)


class _MalformedFrame(Exception):
    """A frame that breaks HTTP/2's layout rules; the message is hyperframe's for the same fault."""


def _parse_frequent(
    frame_type: int, flags: int, stream_id: int, data: bytes, start: int, end: int
) -> tuple[int, int, int, int]:
    """Parse a DATA, HEADERS, CONTINUATION, PING or WINDOW_UPDATE frame whose body is ``data[start:end]``.

    Returns (first, last, pad length, PRIORITY's stream dependency or -1), where ``data[first:last]`` is DATA's
    data or the header block fragment. Checks what hyperframe's parser checks, in its order and with its
    messages (a test compares the two): these frames are most of a tunnel, and building hyperframe's frame
    objects costs more than decoding them.
    """
    if frame_type == _WINDOW_UPDATE:
        if end - start > 4:
            raise _MalformedFrame(f"WINDOW_UPDATE frame must have 4 byte length: got {end - start}")
        if end - start < 4:
            raise _MalformedFrame("Invalid WINDOW_UPDATE body")
        if not 1 <= _UINT32.unpack_from(data, start)[0] <= 2**31 - 1:
            raise _MalformedFrame("WINDOW_UPDATE increment must be between 1 to 2^31-1")
        return start, start, 0, -1
    if frame_type == _PING:
        if stream_id:
            raise _MalformedFrame(f"Stream ID must be zero for PingFrame with stream_id={stream_id}")
        if end - start != 8:
            raise _MalformedFrame(f"PING frame must have 8 byte length: got {end - start}")
        return start, start, 0, -1
    if not stream_id:
        raise _MalformedFrame(f"Stream ID must be non-zero for {_FRAME_CLASSES[frame_type]}")
    if frame_type == _CONTINUATION:
        return start, end, 0, -1
    body, pad, depends_on = start, 0, -1
    if flags & _FLAG_PADDED:
        if start == end:
            raise _MalformedFrame("Invalid Padding data")
        pad = data[start]
        body += 1
    if frame_type == _HEADERS and flags & _FLAG_PRIORITY:
        if end - body < 5:
            raise _MalformedFrame("Invalid Priority data")
        depends_on = _UINT32.unpack_from(data, body)[0] & 0x7FFFFFFF
        # hyperframe bounds the padding by the body after the pad length for HEADERS, by the whole body for DATA.
        if pad and pad >= end - body:
            raise _MalformedFrame("Padding is too long.")
        return body + 5, max(body + 5, end - pad), pad, depends_on
    if pad and pad >= end - (body if frame_type == _HEADERS else start):
        raise _MalformedFrame("Padding is too long.")
    return body, end - pad, pad, depends_on


def _text(value: bytes) -> str:
    """Header text as grpcio decodes it: UTF-8, or Latin-1 (lossless) when the bytes are not UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _metadata_entries(side: _Side, name: bytes, value: bytes) -> Iterable[tuple[str, MetadataValue]]:
    key = name.decode("latin-1")
    if not key.endswith("-bin"):
        return [(key, _text(value))]
    if value.startswith(b"\x00"):
        # gRPC's "true binary metadata" extension (setting 0xfe03, which grpc core peers advertise): a NUL byte,
        # then the raw value.
        return [(key, value[1:])]
    # gRPC allows several base64 values joined by commas in one field, padded or not.
    entries: list[tuple[str, MetadataValue]] = []
    for part in value.split(b","):
        part = part.strip()
        try:
            entries.append((key, base64.b64decode(part + b"=" * (-len(part) % 4), validate=True)))
        except binascii.Error as err:
            raise side.fail(f"invalid base64 in {key}: {part!r}", GrpcProtocolError) from err
    return entries


def _parse_timeout(side: _Side, value: bytes) -> float:
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        raise side.fail(f"invalid grpc-timeout {value!r}", GrpcProtocolError)
    return int(match[1]) * _TIMEOUT_UNITS[match[2]]
