"""What a replayed call does, in one shape for outer calls (cassette events) and inner tunnel calls.

A `Script` is a recorded call reduced to what a server must do to play it back: which requests it expects and,
for each response, how many requests must have arrived before it may be sent (the causal order within the call),
then the status. Serving a script is the same code for controller calls and for the mock exporter.

Scripts of inner calls hold their messages. Scripts the replay library builds for a cassette's outer calls hold
their requests (matching compares them) but only where each response is in the cassette (`RecordedResponses`):
a response is read from the file when it is sent, so a big cassette's index does not hold every reply.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from jsreplay.cassette.errors import CorruptCassetteError
from jsreplay.cassette.model import (
    Call,
    ClientHalfClose,
    ClientMessage,
    Metadata,
    ServerHeaders,
    ServerMessage,
)
from jsreplay.replay.records import RecordFile
from jsreplay.tunnel.calls import ElidedMark, InnerCall
from jsreplay.tunnel.events import application_metadata


@dataclass(frozen=True, slots=True)
class ScriptedResponse:
    after_requests: int  # requests that had arrived when the recorded server sent this
    data: bytes
    seq: int  # the recorded event's sequence number (for causal holds across calls)
    t_ns: int = 0  # when it was sent, after the call started (outer calls only; 0 when unknown)


# One recorded response: its record's offset and length in the cassette, its seq, its time after the call started,
# and the requests before it. Packed, 32 bytes, instead of an object of some 170 bytes with its ints.
RESPONSE_ROW = struct.Struct("<qIqqI")


class RecordedResponses(Sequence[ScriptedResponse]):
    """A recorded call's responses as positions in its cassette; indexing one reads its message from the file.

    The replay library adds a row per response as it scans the cassette (the rows stay in the one bytearray they
    were appended to: copying them out would leave the allocator with holes the size of the copies).
    """

    __slots__ = ("_file", "_rows", "_t0_ns")

    def __init__(self, file: RecordFile, call_t_ns: int) -> None:
        self._file = file
        self._rows = bytearray()
        self._t0_ns = call_t_ns  # when the call started, which response times are counted from

    def add(self, offset: int, length: int, seq: int, t_ns: int, after_requests: int) -> None:
        """A response whose record is `length` bytes at `offset`, sent at `t_ns` after `after_requests` requests."""
        self._rows += RESPONSE_ROW.pack(offset, length, seq, t_ns - self._t0_ns, after_requests)

    def __len__(self) -> int:
        return len(self._rows) // RESPONSE_ROW.size

    @overload
    def __getitem__(self, index: int) -> ScriptedResponse: ...

    @overload
    def __getitem__(self, index: slice) -> list[ScriptedResponse]: ...

    def __getitem__(self, index: int | slice) -> ScriptedResponse | list[ScriptedResponse]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("response index out of range")
        offset, length, seq, t_ns, after = RESPONSE_ROW.unpack_from(self._rows, index * RESPONSE_ROW.size)
        event = self._file.event_at(offset, length)
        if not isinstance(event, ServerMessage) or event.seq != seq:
            raise CorruptCassetteError(
                self._file.path, f"no response with seq {seq} here (the file changed since loading)", offset=offset
            )
        return ScriptedResponse(after_requests=after, data=event.data, seq=seq, t_ns=t_ns)

    def __iter__(self) -> Iterator[ScriptedResponse]:
        for index in range(len(self)):
            yield self[index]

    def __repr__(self) -> str:
        return f"RecordedResponses({len(self)} in {self._file.path.name})"


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


def script_from_inner(call: InnerCall, source: str, tunnel_cut: str = "") -> Script:
    """`tunnel_cut`: where the recording of the tunnel carrying `call` stops, if it has no end (then a call that
    was neither finished nor reset has no end either; in a tunnel that ended, such a call ended with it)."""
    responses: list[ScriptedResponse] = []
    seqs = [m.seq for m in call.request_messages]
    for message in call.response_messages:
        before = sum(1 for s in seqs if s < message.seq)
        responses.append(ScriptedResponse(after_requests=before, data=message.data, seq=message.seq))
    code = call.code
    if code is None and call.reset is not None:
        code = None  # reset without status: the recorded caller cancelled
    return Script(
        key=f"{source}/stream {call.stream_id}",
        method=call.method or "",
        requests=call.requests,
        responses=responses,
        initial_metadata=application_metadata(call.response_metadata) if not call.trailers_only else None,
        code=code,
        details=call.details,
        trailing_metadata=application_metadata(call.trailing_metadata),
        status_after_requests=sum(1 for s in seqs if call.closed_seq is None or s < call.closed_seq),
        start_seq=call.opened_seq,
        cut="" if call.finished else tunnel_cut,
        request_metadata=call.request_metadata,
        request_seqs=seqs,
        elided=tuple(call.elided),
    )
