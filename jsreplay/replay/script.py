"""What a replayed call does, in one shape for outer calls (cassette events) and inner tunnel calls.

A `Script` is a recorded call reduced to what a server must do to play it back: which requests it expects and,
for each response, how many requests must have arrived before it may be sent (the causal order within the call),
then the status. Serving a script is the same code for controller calls and for the mock exporter.

Scripts the replay library builds for a cassette's outer calls hold their requests (matching compares them) but
only where each response is in the cassette (`RecordedResponses`): a response is read from the file when it is
sent, so a big cassette's index does not hold every reply. Scripts of inner calls hold their small messages; a big
one (located by the tunnel decoder) is read back from the tunnel's records when indexed (`InnerMessages`,
`InnerResponses`), so a tunnel carrying a flash image is served without holding the image.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TypeVar, overload

from jsreplay.cassette.errors import CorruptCassetteError
from jsreplay.cassette.model import (
    Call,
    ClientHalfClose,
    ClientMessage,
    Metadata,
    ServerHeaders,
    ServerMessage,
)
from jsreplay.protocol.wire import ROUTER_STREAM
from jsreplay.replay.records import RecordFile
from jsreplay.tunnel.calls import ElidedMark, InnerCall, InnerMessage
from jsreplay.tunnel.events import Spans, application_metadata


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    after_requests: int  # requests that had arrived when the recorded server sent this
    data: bytes
    seq: int  # the recorded event's sequence number (for causal holds across calls)
    t_ns: int = 0  # when it was sent, after the call started (outer calls only; 0 when unknown)


_T = TypeVar("_T")


class ReadOnIndex(Sequence[_T]):
    """A sequence whose items are made when indexed (read back from the cassette, decoded): the one home of
    Sequence's index rules here (negative indices, slices, IndexError) for the replay's lazy sequences."""

    __slots__ = ()
    _what = "item"  # for the IndexError

    def _item(self, index: int) -> _T:
        """Item `index`, 0 <= index < len(self)."""
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...

    def __getitem__(self, index: int | slice) -> _T | list[_T]:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(len(self)))]
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"{self._what} index out of range")
        return self._item(index)

    def __iter__(self) -> Iterator[_T]:
        for index in range(len(self)):
            yield self._item(index)


# One recorded response: its record's offset and length in the cassette, its seq, its time after the call started,
# and the requests before it. Packed, 32 bytes, instead of an object of some 170 bytes with its ints.
RESPONSE_ROW = struct.Struct("<qIqqI")


class RecordedResponses(ReadOnIndex[ScriptedResponse]):
    """A recorded call's responses as positions in its cassette; indexing one reads its message from the file.

    The replay library adds a row per response as it scans the cassette (the rows stay in the one bytearray they
    were appended to: copying them out would leave the allocator with holes the size of the copies).
    """

    __slots__ = ("_file", "_rows", "_t0_ns")
    _what = "response"

    def __init__(self, file: RecordFile, call_t_ns: int) -> None:
        self._file = file
        self._rows = bytearray()
        self._t0_ns = call_t_ns  # when the call started, which response times are counted from

    def add(self, offset: int, length: int, seq: int, t_ns: int, after_requests: int) -> None:
        """A response whose record is `length` bytes at `offset`, sent at `t_ns` after `after_requests` requests."""
        self._rows += RESPONSE_ROW.pack(offset, length, seq, t_ns - self._t0_ns, after_requests)

    def __len__(self) -> int:
        return len(self._rows) // RESPONSE_ROW.size

    def _item(self, index: int) -> ScriptedResponse:
        offset, length, seq, t_ns, after = RESPONSE_ROW.unpack_from(self._rows, index * RESPONSE_ROW.size)
        event = self._file.event_at(offset, length)
        if not isinstance(event, ServerMessage) or event.seq != seq:
            raise CorruptCassetteError(
                self._file.path, f"no response with seq {seq} here (the file changed since loading)", offset=offset
            )
        return ScriptedResponse(after_requests=after, data=event.data, seq=seq, t_ns=t_ns)

    def __repr__(self) -> str:
        return f"RecordedResponses({len(self)} in {self._file.path.name})"

    def positions(self) -> tuple[Sequence[int], Sequence[int]]:
        """Each response's (after_requests, seq), read from the rows (no record is read)."""
        rows = [RESPONSE_ROW.unpack_from(self._rows, i * RESPONSE_ROW.size) for i in range(len(self))]
        return [row[4] for row in rows], [row[2] for row in rows]


#: Reads a located message's bytes back, given its spans (`InnerMessages`).
SpanReader = Callable[[Spans], bytes]
#: Reads a located message of a tunnel back: (sent by the client, spans) -> bytes (`records.TunnelBytes.read`).
ReadLocated = Callable[[bool, Spans], bytes]


class InnerMessages(ReadOnIndex[bytes]):
    """One direction of an inner call's messages: the small ones held, the located ones as their spans (16 bytes
    per piece, in arrays), read back with `read` when indexed."""

    __slots__ = ("_ends", "_held", "_read", "_spans")
    _what = "message"

    def __init__(self, messages: Iterable[InnerMessage], read: SpanReader) -> None:
        self._read = read
        self._held: dict[int, bytes] = {}
        self._spans = array("q")
        self._ends = array("I")  # per message, where its spans end in `_spans` (a held one has none)
        for index, message in enumerate(messages):
            if message.spans:
                self._spans.extend(message.spans)
            else:
                self._held[index] = message.data
            self._ends.append(len(self._spans))

    def hold(self, index: int) -> None:
        """Keep message `index` in memory from now on (read back once if located)."""
        self._held[index] = self[index]

    def located(self, index: int) -> bool:
        return index not in self._held

    def __len__(self) -> int:
        return len(self._ends)

    def _item(self, index: int) -> bytes:
        held = self._held.get(index)
        if held is not None:
            return held
        start = self._ends[index - 1] if index else 0
        return self._read(tuple(self._spans[start : self._ends[index]]))

    def __repr__(self) -> str:
        return f"InnerMessages({len(self)}, {len(self) - len(self._held)} located)"


class InnerResponses(ReadOnIndex[ScriptedResponse]):
    """An inner call's responses over `InnerMessages`: what each waits for and its seq in arrays, its bytes read
    back when indexed if it is located."""

    __slots__ = ("_afters", "_messages", "_seqs")
    _what = "message"

    def __init__(self, messages: InnerMessages, afters: Iterable[int], seqs: Iterable[int]) -> None:
        self._messages = messages
        self._afters = array("I", afters)
        self._seqs = array("q", seqs)

    def __len__(self) -> int:
        return len(self._seqs)

    def _item(self, index: int) -> ScriptedResponse:
        data = self._messages[index]
        return ScriptedResponse(after_requests=self._afters[index], data=data, seq=self._seqs[index])

    def positions(self) -> tuple[Sequence[int], Sequence[int]]:
        """Each response's (after_requests, seq), without reading a located response back."""
        return self._afters, self._seqs

    def __repr__(self) -> str:
        return f"InnerResponses({self._messages!r})"


def response_positions(responses: Sequence[ScriptedResponse]) -> tuple[Sequence[int], Sequence[int]]:
    """Each response's (after_requests, seq): what a byte stream's pacing needs, without reading the responses
    that are in the cassette only."""
    if isinstance(responses, InnerResponses | RecordedResponses):
        return responses.positions()
    return [r.after_requests for r in responses], [r.seq for r in responses]


@dataclass(slots=True)
class Script:
    key: str  # where it came from, for reports: "cassette.msgpack#12" or "cassette.msgpack#11/tunnel stream 3"
    method: str
    requests: Sequence[bytes]
    responses: Sequence[ScriptedResponse]  # a list, or RecordedResponses (read from the cassette when indexed)
    initial_metadata: Metadata | None
    code: int | None  # None: the recording ended without a status (cancelled, or cut: see `cut`)
    details: str = ""
    trailing_metadata: Metadata = ()
    status_after_requests: int = 0
    start_seq: int = 0
    peer: str = ""  # "Client:ns/name" or "Exporter:ns/name" from the recorded request metadata
    # Not "": the recording has no end (no status, no cancel: the cassette was cut, e.g. by a killed recorder), and
    # this says where the cassette ends. Replay answers such a call as far as recorded, then fails it.
    cut: str = ""
    # Inner calls: the request metadata (a byte stream's identity is in it) and each request's seq (byte-level
    # causal order across calls); `elided`: a byte stream whose client bytes were kept (from some point on) as
    # length and SHA-256 only, how far the recording said they had got, in order.
    request_metadata: Metadata = ()
    request_seqs: Sequence[int] = ()
    elided: tuple[ElidedMark, ...] = ()


def call_peer(metadata: Metadata) -> str:
    """Who made a call, from its request metadata: "Client:ns/name", "Exporter:ns/name" or ""."""
    values = {k.lower(): v for k, v in metadata if isinstance(v, str)}
    kind = values.get("jumpstarter-kind", "")
    if not kind:
        return ""
    return f"{kind}:{values.get('jumpstarter-namespace', '')}/{values.get('jumpstarter-name', '')}"


def script_from_call(call: Call, source: str) -> Script:
    requests: list[bytes] = []
    responses: list[ScriptedResponse] = []
    initial: Metadata | None = None
    for event in call.events:
        if isinstance(event, ClientMessage):
            requests.append(event.data)
        elif isinstance(event, ServerHeaders):
            initial = event.metadata
        elif isinstance(event, ServerMessage):
            responses.append(
                ScriptedResponse(
                    after_requests=len(requests), data=event.data, seq=event.seq, t_ns=event.t_ns - call.start.t_ns
                )
            )
        elif isinstance(event, ClientHalfClose):
            pass
    status = call.status
    return Script(
        key=f"{source}#{call.call_id}",
        method=call.method,
        requests=requests,
        responses=responses,
        initial_metadata=initial,
        code=None if status is None else status.code,
        details="" if status is None else status.details,
        trailing_metadata=() if status is None else status.trailing_metadata,
        status_after_requests=len(requests),
        start_seq=call.start.seq,
        peer=call_peer(call.start.metadata),
    )


def script_from_inner(call: InnerCall, source: str, tunnel_cut: str = "", read: ReadLocated | None = None) -> Script:
    """`tunnel_cut`: where the recording of the tunnel carrying `call` stops, if it has no end (then a call that
    was neither finished nor reset has no end either; in a tunnel that ended, such a call ended with it).

    `read(by_client, spans)`: reads a located message back (the call was decoded with messages located); a
    direction with a located message then reads it when indexed (`InnerMessages`). A call other than a byte
    stream keeps its first request in memory all the same: matching compares it for every live call.
    """
    seqs = [m.seq for m in call.request_messages]  # increasing: the assembler numbers events in order
    afters = [bisect.bisect_left(seqs, message.seq) for message in call.response_messages]
    requests: Sequence[bytes] = call.requests
    responses: Sequence[ScriptedResponse] = [
        ScriptedResponse(after_requests=after, data=message.data, seq=message.seq)
        for after, message in zip(afters, call.response_messages, strict=True)
    ]
    if read is not None and any(m.spans for m in call.request_messages):
        located = InnerMessages(call.request_messages, partial(read, True))
        if call.method != ROUTER_STREAM and len(located):
            located.hold(0)
        requests = located
    if read is not None and any(m.spans for m in call.response_messages):
        messages = InnerMessages(call.response_messages, partial(read, False))
        responses = InnerResponses(messages, afters, (m.seq for m in call.response_messages))
    code = call.code
    if code is None and call.reset is not None:
        code = None  # reset without status: the recorded caller cancelled
    return Script(
        key=f"{source}/stream {call.stream_id}",
        method=call.method or "",
        requests=requests,
        responses=responses,
        initial_metadata=application_metadata(call.response_metadata) if not call.trailers_only else None,
        code=code,
        details=call.details,
        trailing_metadata=application_metadata(call.trailing_metadata),
        status_after_requests=sum(1 for s in seqs if call.closed_seq is None or s < call.closed_seq),
        start_seq=call.opened_seq,
        cut="" if call.finished else tunnel_cut,
        request_metadata=call.request_metadata,
        request_seqs=array("q", seqs) if isinstance(requests, InnerMessages) else seqs,
        elided=tuple(call.elided),
    )
