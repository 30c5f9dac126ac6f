"""Fold tunnel events into one record per inner gRPC call.

Order info: the assembler numbers every event it is given (``seq``, from 0). Fed in recorded order, seq is the
tunnel's causal order, so comparing seqs across calls tells, say, that a DriverCall was answered before the next
one was sent. Fed in another interleaving, each call's own contents stay the same; only the seqs differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeAlias

from .decoder import TunnelDecoder
from .events import (
    ConnectionClosed,
    Direction,
    Metadata,
    RequestElided,
    RequestEnded,
    RequestHeaders,
    RequestMessage,
    ResponseHeaders,
    ResponseMessage,
    ResponseTrailers,
    Spans,
    StreamReset,
    TunnelEnded,
    TunnelEvent,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class InnerMessage:
    """One gRPC message of a call and the seq of the event that completed it; a located message (see
    :attr:`~.config.DecoderConfig.locate_over`) has empty ``data`` and the ``spans`` where its bytes are."""

    seq: int
    data: bytes
    compressed: bool
    spans: Spans = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class ElidedMark:
    """Where a recording that kept a stream's client bytes as length and digest only said how far it had got."""

    seq: int
    length: int  # client DATA bytes sent so far
    closed: bool  # the client had sent its closing frame
    sha256: str | None  # of all of them, in the mark that ended the stream


@dataclass(kw_only=True)
class InnerCall:
    """Everything one inner gRPC call (one HTTP/2 stream) carried, in both directions.

    ``method`` is None only when the request headers were never seen (a cut-off recording). ``code`` is None until
    the exporter sent its status; ``reset`` is the HTTP/2 error code of the first RST_STREAM on the stream, if any
    (8, CANCEL, when the client cancelled), and ``reset_by_client`` who sent it; a reset may also follow the
    trailers (NO_ERROR, from a server that finished before the client half-closed), so look at ``code`` first to
    tell how the call ended. The ``*_seq`` fields are the seqs
    of the events that opened the call (the first event seen for it), half-closed the request, carried the response
    headers and ended the call (trailers or the first reset).

    A nested ``jumpstarter.v1.RouterService/Stream`` call (byte-streaming drivers) is an ordinary call here: its
    messages are serialized router frames whose payloads are the driver's raw bytes, not HTTP/2, so they need no
    further decoding by :class:`~jsreplay.tunnel.TunnelDecoder`.
    """

    stream_id: int
    method: str | None = None
    authority: str | None = None
    timeout: float | None = None
    request_metadata: Metadata = ()
    request_messages: list[InnerMessage] = field(default_factory=list)
    request_ended: bool = False
    http_status: int | None = None
    response_metadata: Metadata = ()
    response_messages: list[InnerMessage] = field(default_factory=list)
    code: int | None = None
    details: str = ""
    trailing_metadata: Metadata = ()
    trailers_only: bool = False
    reset: int | None = None
    reset_by_client: bool | None = None
    opened_seq: int = 0
    request_ended_seq: int | None = None
    response_headers_seq: int | None = None
    closed_seq: int | None = None
    elided: list[ElidedMark] = field(default_factory=list)  # not empty: the client's bytes were not kept

    @property
    def requests(self) -> list[bytes]:
        """The request messages' bytes, in order."""
        return [message.data for message in self.request_messages]

    @property
    def responses(self) -> list[bytes]:
        """The response messages' bytes, in order."""
        return [message.data for message in self.response_messages]

    @property
    def finished(self) -> bool:
        """True once the exporter sent its status or either side reset the stream."""
        return self.code is not None or self.reset is not None


#: Events about the whole tunnel rather than one call.
ConnectionEvent: TypeAlias = ConnectionClosed | TunnelEnded


class CallAssembler:
    """Collects :data:`~jsreplay.tunnel.TunnelEvent` values into :class:`InnerCall` records.

    Connection-level events (inner GOAWAYs, tunnel ends) are kept in :attr:`connection_events` with their seqs.
    """

    def __init__(self) -> None:
        self._calls: dict[int, InnerCall] = {}
        self._seq = 0
        self.connection_events: list[tuple[int, ConnectionEvent]] = []

    @property
    def calls(self) -> list[InnerCall]:
        """The calls seen so far, in stream-id order (the order the client opened them)."""
        return [self._calls[stream_id] for stream_id in sorted(self._calls)]

    def add_all(self, events: Iterable[TunnelEvent]) -> None:
        """Add each of ``events`` in order."""
        for event in events:
            self.add(event)

    def add(self, event: TunnelEvent) -> None:
        """Add one event; it gets the next seq."""
        seq = self._seq
        self._seq += 1
        if isinstance(event, ConnectionClosed | TunnelEnded):
            self.connection_events.append((seq, event))
            return
        call = self._calls.get(event.stream_id)
        if call is None:
            call = self._calls[event.stream_id] = InnerCall(stream_id=event.stream_id, opened_seq=seq)
        match event:  # messages first: most events are messages
            case RequestMessage():
                call.request_messages.append(
                    InnerMessage(seq=seq, data=event.data, compressed=event.compressed, spans=event.spans)
                )
            case ResponseMessage():
                call.response_messages.append(
                    InnerMessage(seq=seq, data=event.data, compressed=event.compressed, spans=event.spans)
                )
            case RequestHeaders():
                call.method = event.method
                call.authority = event.authority
                call.timeout = event.timeout
                call.request_metadata = event.metadata
            case RequestElided():
                call.elided.append(ElidedMark(seq=seq, length=event.length, closed=event.closed, sha256=event.sha256))
            case RequestEnded():
                call.request_ended = True
                call.request_ended_seq = seq
            case ResponseHeaders():
                call.http_status = event.http_status
                call.response_metadata = event.metadata
                call.response_headers_seq = seq
            case ResponseTrailers():
                call.code = event.code
                call.details = event.details
                call.trailing_metadata = event.metadata
                call.trailers_only = event.trailers_only
                if call.closed_seq is None:
                    call.closed_seq = seq
            case StreamReset():
                if call.reset is None:
                    call.reset = event.error_code
                    call.reset_by_client = event.by_client
                if call.closed_seq is None:
                    call.closed_seq = seq


def decode_tunnel(chunks: Iterable[tuple[Direction, bytes]]) -> list[InnerCall]:
    """Decode a whole recorded tunnel, given its byte chunks in recorded order, into calls in stream-id order.

    Calls still open when the chunks run out are returned as they stand (``finished`` is False).

    :raises TunnelError: if the bytes are malformed.
    """
    decoder = TunnelDecoder()
    assembler = CallAssembler()
    for direction, data in chunks:
        assembler.add_all(decoder.feed(direction, data))
    return assembler.calls
