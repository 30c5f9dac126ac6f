"""Sans-I/O decoder for the cleartext HTTP/2 gRPC connection that runs inside a Jumpstarter router tunnel.

Feed it the tunnel's byte chunks, each with its :class:`Direction`, exactly as recorded (split anywhere); it
returns :mod:`~jsreplay.tunnel.events` in wire order. It never touches a socket and never sends anything: it only
watches a connection that two real peers already negotiated.

The two directions are decoded independently (each has its own buffer and its own HPACK table), so chunks may be
fed in any interleaving that keeps each direction's own order; only the order of the returned events depends on
the interleaving. For the same reason, nothing is checked that would need the other direction's view: negotiated
settings (frame size, header table size) and flow-control windows are not enforced, only the protocol's hard
limits and this decoder's own limits (see :class:`~.config.DecoderConfig`).

What is validated: the client's connection preface, SETTINGS first in each direction, every frame's layout
(through hyperframe), padding, CONTINUATION sequencing, header-block and header-field rules (pseudo-headers,
lowercase names, connection-specific headers), stream states per direction (no DATA before HEADERS or after
END_STREAM / RST_STREAM, client stream ids odd and increasing, no server push), and the gRPC layer (message
prefixes, status and timeout syntax, base64 of ``-bin`` values). Any violation raises a
:class:`~jsreplay.tunnel.errors.TunnelError`, after which that direction refuses further input with the same error.

This module is the connection's state machine (streams, events); it composes the layers below it: :mod:`.framing`
(frames cut from bytes), :mod:`.headers` (HPACK and header rules) and :mod:`.messages` (gRPC message framing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hyperframe.frame import ExtensionFrame, Frame, GoAwayFrame, PriorityFrame, RstStreamFrame, SettingsFrame

from jsreplay.protocol.wire import RouterFrameType

from .config import DEFAULT_CONFIG, DecoderConfig
from .elided import ELIDED_FRAME, parse_elided
from .errors import Fault, GrpcProtocolError, TunnelError, TunnelLimitError, TunnelProtocolError
from .events import (
    ConnectionClosed,
    Direction,
    ErrorCode,
    RequestElided,
    RequestEnded,
    RequestMessage,
    ResponseHeaders,
    ResponseMessage,
    StreamReset,
    TunnelEnded,
    TunnelEvent,
)
from .framing import (
    CONTINUATION,
    DATA,
    FLAG_ACK,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    HEADERS,
    MAX_STREAM_ID,
    PUSH_PROMISE,
    RST_STREAM,
    SETTINGS,
    WINDOW_UPDATE,
    FrameBuffer,
)
from .headers import (
    HeaderBlock,
    HeaderDecoder,
    check_trailers,
    request_headers,
    response_headers,
    response_trailers,
)
from .messages import LocatedBody, cut_located, cut_messages, incomplete_message

# Frames that must name an existing or new client-initiated stream (PRIORITY may name any stream).
_STREAM_FRAMES = frozenset({DATA, HEADERS, RST_STREAM, WINDOW_UPDATE})
# SETTINGS identifiers whose values RFC 9113 section 6.5.2 constrains.
_ENABLE_PUSH = SettingsFrame.ENABLE_PUSH
_INITIAL_WINDOW_SIZE = SettingsFrame.INITIAL_WINDOW_SIZE
_SETTINGS_MAX_FRAME_SIZE = SettingsFrame.MAX_FRAME_SIZE
_ENABLE_CONNECT_PROTOCOL = SettingsFrame.ENABLE_CONNECT_PROTOCOL

_ROUTER_DATA = int(RouterFrameType.DATA)
_ROUTER_GOAWAY = int(RouterFrameType.GOAWAY)
_C2E = Direction.CLIENT_TO_EXPORTER
_E2C = Direction.EXPORTER_TO_CLIENT


@dataclass(slots=True)
class _HalfStream:
    """One direction of one inner stream: what that side has sent so far."""

    headers_seen: bool = False
    ended: bool = False  # sent END_STREAM
    reset: bool = False  # sent RST_STREAM
    http_status: int = 200
    buffer: bytearray = field(default_factory=bytearray)  # partial gRPC message
    located: LocatedBody | None = None  # a located message being received (DecoderConfig.locate_over)

    def pending(self) -> int:
        """Bytes of an unfinished message this side has sent (0 between messages)."""
        return self.located.pending if self.located is not None else len(self.buffer)


@dataclass(slots=True)
class _Side:
    """The state of one direction of the connection."""

    direction: Direction
    by_client: bool  # direction.by_client, read for nearly every frame
    frames: FrameBuffer
    headers: HeaderDecoder
    message_type: type[RequestMessage] | type[ResponseMessage]
    settings_seen: bool = False
    ended: bool = False
    error: TunnelError | None = None
    header_block: HeaderBlock | None = None
    last_stream_id: int = 0  # highest stream the client opened (client side only)
    streams: dict[int, _HalfStream] = field(default_factory=dict)

    def fail(
        self,
        problem: str,
        kind: type[TunnelError] = TunnelProtocolError,
        error_code: ErrorCode | None = None,
    ) -> TunnelError:
        """An error about the frame being handled; the caller raises it."""
        return self.frames.fail(problem, kind, error_code)

    def fault(self, fault: Fault) -> TunnelError:
        """A lower layer's fault, located at the frame being handled; the caller raises it."""
        return self.frames.fail(fault.problem, fault.kind, fault.error_code)


class TunnelDecoder:
    """Turns the two byte streams of an inner HTTP/2 gRPC connection into :data:`TunnelEvent` values.

    ``config`` holds the limits and switches (:class:`DecoderConfig`); decoders built with the same one share its
    header block cache. One instance decodes one tunnel (one HTTP/2 connection).

    The inner connection may itself carry a ``jumpstarter.v1.RouterService/Stream`` call (byte-streaming drivers).
    That is just another inner call: its messages are serialized router frames whose payloads are the driver's raw
    bytes, not HTTP/2, so they need no further decoding here.
    """

    def __init__(self, *, config: DecoderConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        # Copied out of the configuration: read per frame or per message.
        self._max_header_block_size = config.max_header_block_size
        self._max_message_size = config.max_message_size
        self._locate_over = config.locate_over
        self._skip_flow_control = config.skip_flow_control
        # One per direction; not a dict keyed by Direction: an Enum hashes in Python, and this is per chunk.
        self._sides: list[_Side] = []
        for direction in (_C2E, _E2C):
            headers = HeaderDecoder(
                max_header_list_size=config.max_header_list_size,
                max_header_table_size=config.max_header_table_size,
                cache=config.header_cache,
            )
            frames = FrameBuffer(direction, config.max_frame_size, preface_pending=direction.by_client)
            side = _Side(
                direction=direction,
                by_client=direction.by_client,
                frames=frames,
                headers=headers,
                message_type=RequestMessage if direction.by_client else ResponseMessage,
            )
            self._sides.append(side)

    def feed(self, direction: Direction, data: bytes) -> list[TunnelEvent]:
        """Decode the next ``data`` travelling in ``direction``; return the events it completes, in wire order.

        Incomplete frames and messages are kept until later input completes them.

        :raises TunnelError: if the bytes are malformed. The error's ``events`` holds what this call decoded before
            the bad frame, and every later call for ``direction`` raises the same error.
        """
        side = self._check_open(direction)
        frames = side.frames
        if side.ended:
            if not data:
                return []
            err = TunnelProtocolError(
                "data after the end of the byte stream", direction=direction, offset=frames.consumed
            )
            raise self._refuse(side, err)
        events: list[TunnelEvent] = []
        try:
            if frames.buffer or frames.preface_pending:
                data = frames.take(data)
            if data:
                frames.cut(bytes(data), self._frame, side, events)
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
        frames = side.frames
        pending = len(frames.buffer)
        if side.header_block is not None or (pending and not frames.preface_pending):
            frames.offset, frames.frame = frames.consumed, None
            raise self._refuse(side, side.fail(f"byte stream ended inside a frame ({pending} bytes pending)"))
        if pending:
            frames.offset, frames.frame = 0, None
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

    # Frames ----------------------------------------------------------------------------------------------------

    def _frame(
        self,
        side: _Side,
        frame_type: int,
        flags: int,
        stream_id: int,
        length: int,
        data: bytes,
        first: int,
        last: int,
        pad: int,
        depends_on: int,
        frame: Frame | None,
        events: list[TunnelEvent],
    ) -> None:
        """Handle a frame that :class:`FrameBuffer` parsed: its payload is ``data[first:last]``; ``frame`` is
        hyperframe's for the rare types."""
        block = side.header_block
        if block is not None:
            if frame_type != CONTINUATION or stream_id != block.stream_id:
                raise side.fail(f"expected CONTINUATION for stream {block.stream_id}")
            self._continuation(side, block, flags, data[first:last], events)
            return
        if not side.settings_seen:
            if frame_type != SETTINGS or flags & FLAG_ACK:
                raise side.fail("the first frame must be SETTINGS")
            side.settings_seen = True
            if self._skip_flow_control:
                side.frames.skip_up_to = side.last_stream_id if side.by_client else MAX_STREAM_ID
        if stream_id and stream_id % 2 == 0 and frame_type in _STREAM_FRAMES:
            # gRPC clients disable server push, so every stream is client-initiated and odd.
            raise side.fail("even stream id: server push is not in use")

        if frame_type == DATA:
            stream = side.streams.get(stream_id)
            if stream is None or not stream.headers_seen:
                raise side.fail("DATA before HEADERS", error_code=ErrorCode.STREAM_CLOSED)
            if stream.ended or stream.reset:
                raise side.fail("DATA on a stream this side already closed", error_code=ErrorCode.STREAM_CLOSED)
            try:
                if self._locate_over is None:
                    cut_messages(
                        stream.buffer, data, first, last, self._max_message_size, stream_id, side.message_type, events
                    )
                else:  # data[0] is where the frame buffer stands in the direction's byte stream
                    stream.located = cut_located(
                        stream.buffer,
                        stream.located,
                        data,
                        first,
                        last,
                        side.frames.consumed,
                        self._locate_over,
                        self._max_message_size,
                        stream_id,
                        side.message_type,
                        events,
                    )
            except Fault as err:
                raise side.fault(err) from None
            if flags & FLAG_END_STREAM:
                if not side.by_client:
                    raise side.fail("the exporter ended a stream without trailers", GrpcProtocolError)
                self._end_request(side, stream_id, stream, events)
        elif frame_type == WINDOW_UPDATE:
            if stream_id and side.by_client and stream_id > side.last_stream_id:
                raise side.fail("WINDOW_UPDATE on an idle stream")
        elif frame_type == HEADERS:
            self._headers(side, stream_id, flags, pad, depends_on, data[first:last], length, events)
        elif frame_type == CONTINUATION:
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
        elif frame_type == PUSH_PROMISE:
            raise side.fail("PUSH_PROMISE: gRPC clients disable server push")
        elif frame_type == ELIDED_FRAME and isinstance(frame, ExtensionFrame):
            self._elided(side, stream_id, bytes(frame.body), events)
        # PING needs no action (its size is checked above); unknown frame types must be ignored (RFC 9113 5.5).

    def _elided(self, side: _Side, stream_id: int, payload: bytes, events: list[TunnelEvent]) -> None:
        """jsreplay's own frame: the client bytes of `stream_id` were kept as a length and digest only."""
        stream = side.streams.get(stream_id)
        if not side.by_client or stream is None or not stream.headers_seen:
            raise side.fail("jsreplay ELIDED frame outside a client stream")
        try:
            summary = parse_elided(payload)
        except ValueError as err:
            raise side.fail(f"malformed jsreplay ELIDED frame: {err}") from None
        events.append(
            RequestElided(stream_id=stream_id, length=summary.length, closed=summary.closed, sha256=summary.sha256)
        )

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
        stream.located = None
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
        overhead = (1 + pad if flags & FLAG_PADDED else 0) + (5 if flags & FLAG_PRIORITY else 0)
        if overhead > length:
            raise side.fail("padding longer than the frame")
        if flags & FLAG_PRIORITY and depends_on == stream_id:
            raise side.fail("stream depends on itself")
        self._check_headers_allowed(side, stream_id)
        frames = side.frames
        assert frames.frame is not None
        block = side.header_block = HeaderBlock(
            stream_id=stream_id,
            end_stream=bool(flags & FLAG_END_STREAM),
            offset=frames.offset,
            frame=frames.frame,
            fragments=[fragment],
            size=len(fragment),
        )
        frames.skip_up_to = -1  # until the block ends, any frame but its CONTINUATION is an error
        if block.size > self._max_header_block_size:
            raise side.fail(
                f"header block larger than the limit of {self._max_header_block_size} bytes", TunnelLimitError
            )
        if flags & FLAG_END_HEADERS:
            self._finish_header_block(side, events)

    def _continuation(
        self, side: _Side, block: HeaderBlock, flags: int, fragment: bytes, events: list[TunnelEvent]
    ) -> None:
        block.fragments.append(fragment)
        block.size += len(fragment)
        if block.size > self._max_header_block_size:
            raise side.fail(
                f"header block larger than the limit of {self._max_header_block_size} bytes", TunnelLimitError
            )
        if flags & FLAG_END_HEADERS:
            self._finish_header_block(side, events)

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
        frames = side.frames
        # Errors about the header block name its HEADERS frame rather than the last CONTINUATION.
        frames.offset, frames.frame = block.offset, block.frame
        stream_id = block.stream_id
        stream = side.streams.get(stream_id)
        try:
            pseudo, regular = side.headers.decode(b"".join(block.fragments))
            if side.by_client:
                if stream is None:
                    event = request_headers(stream_id, pseudo, regular)
                    side.last_stream_id = stream_id
                    stream = side.streams[stream_id] = _HalfStream(headers_seen=True)
                    events.append(event)
                else:
                    # gRPC clients never send trailers; HTTP/2 allows them, so accept and drop their fields.
                    check_trailers(pseudo, block.end_stream)
                if block.end_stream:
                    self._end_request(side, stream_id, stream, events)
            elif stream is None:
                first = response_headers(stream_id, pseudo, regular, end_stream=block.end_stream)
                if isinstance(first, ResponseHeaders):
                    side.streams[stream_id] = _HalfStream(headers_seen=True, http_status=first.http_status)
                else:  # trailers-only
                    side.streams[stream_id] = _HalfStream(headers_seen=True, ended=True)
                events.append(first)
            else:
                check_trailers(pseudo, block.end_stream)
                if stream.pending():
                    raise side.fault(incomplete_message(stream.pending()))
                stream.ended = True
                events.append(response_trailers(stream_id, stream.http_status, regular, trailers_only=False))
        except Fault as err:
            raise side.fault(err) from err.__cause__
        if self._skip_flow_control:
            frames.skip_up_to = side.last_stream_id if side.by_client else MAX_STREAM_ID

    def _end_request(self, side: _Side, stream_id: int, stream: _HalfStream, events: list[TunnelEvent]) -> None:
        if stream.pending():
            raise side.fault(incomplete_message(stream.pending()))
        stream.ended = True
        events.append(RequestEnded(stream_id=stream_id))
