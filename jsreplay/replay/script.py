"""What a replayed call does, in one shape for outer calls (cassette events) and inner tunnel calls.

A `Script` is a recorded call reduced to what a server must do to play it back: which requests it expects and,
for each response, how many requests must have arrived before it may be sent (the causal order within the call),
then the status. Serving a script is the same code for controller calls and for the mock exporter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from jsreplay.cassette.model import Call, ClientHalfClose, ClientMessage, Metadata, ServerHeaders, ServerMessage
from jsreplay.tunnel.calls import InnerCall
from jsreplay.tunnel.events import application_metadata


@dataclass(frozen=True)
class ScriptedResponse:
    after_requests: int  # requests that had arrived when the recorded server sent this
    data: bytes
    seq: int  # the recorded event's sequence number (for causal holds across calls)
    t_ns: int = 0  # when it was sent, after the call started (outer calls only; 0 when unknown)


@dataclass
class Script:
    key: str  # where it came from, for reports: "cassette.msgpack#12" or "cassette.msgpack#11/tunnel stream 3"
    method: str
    requests: list[bytes]
    responses: list[ScriptedResponse]
    initial_metadata: Metadata | None
    code: int | None  # None: the recording ended without a status (cancelled); replay ends it CANCELLED
    details: str = ""
    trailing_metadata: Metadata = ()
    status_after_requests: int = 0
    request_metadata: Metadata = ()
    start_seq: int = 0
    peer: str = ""  # "Client:ns/name" or "Exporter:ns/name" from the recorded request metadata
    extra: dict[str, object] = field(default_factory=dict)


def _peer(metadata: Metadata) -> str:
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
        request_metadata=call.start.metadata,
        start_seq=call.start.seq,
        peer=_peer(call.start.metadata),
    )


def script_from_inner(call: InnerCall, source: str) -> Script:
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
        request_metadata=application_metadata(call.request_metadata),
        start_seq=call.opened_seq,
    )
