"""The decoded view of a cassette that show, diff and textconv share.

`build_view` takes a cassette's header and calls (values, no files) and returns a `CassetteView`: every call
with its messages decoded by the cassette's own embedded schema, how it ended, and for router streams the
tunnel they carried. Each tunnel is recorded twice (the client's Stream call and the exporter's); the two are
paired by the token they presented (the redacted `authorization` value, the same on both ends), the inner
ExporterService calls are decoded once, from the client's end, with the decoder replay uses
(`jsreplay.session.tunnels.decode_router_call`), and the exporter's end points at it as its peer.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor

from jsreplay.cassette.model import (
    Call,
    Cancel,
    ClientMessage,
    Header,
    Metadata,
    Role,
    ServerHeaders,
    ServerMessage,
    Status,
    metadata_get,
)
from jsreplay.protocol.registry import ProtocolError, Registry, iter_unknown_paths, unknown_map
from jsreplay.protocol.wire import ROUTER_HANDOUTS, ROUTER_STREAM, code_name, short_method
from jsreplay.session.tokens import bearer_token
from jsreplay.session.tunnels import (
    RouterFrame,
    TunnelSide,
    decode_router_call,
    iter_router_frames,
    pair_ends,
    peek_side,
)
from jsreplay.tunnel import ErrorCode, InnerCall, application_metadata

# What a caller sees when the server resets a stream without trailers (gRPC's HTTP/2 error-code mapping).
_RESET_STATUS = {0x8: "CANCELLED", 0xB: "RESOURCE_EXHAUSTED", 0x7: "UNAVAILABLE", 0xC: "PERMISSION_DENIED"}
# A deadline cancel is recorded as the caller's cancel at (about) its deadline; allow for scheduling slack.
_DEADLINE_SLACK = 0.98

#: `progress(stage, done, total)`, e.g. ("decoding tunnels", 10, 526).
ProgressFn = Callable[[str, int, int], None]


class EndKind(enum.Enum):
    STATUS = "status"  # the server (or the recording proxy, for an unreachable upstream) sent a status
    CANCEL = "cancel"  # the call was cancelled (by whom: `CallEnd.by`)
    RESET = "reset"  # an inner call's HTTP/2 stream was reset before any trailers
    CLOSED = "closed"  # an inner call that never ended by itself: its tunnel connection closed under it
    OPEN = "open"  # nothing recorded after the call's messages (a cassette cut off mid-call)


@dataclass(frozen=True)
class CallEnd:
    """How a call ended. `status` is the status code name the caller saw, None when it saw none."""

    kind: EndKind
    status: str | None
    details: str = ""
    by: str | None = None  # CANCEL: "client", "upstream", "proxy"; RESET: "client" or "exporter"
    t_ns: int | None = None

    def label(self, *, brief: bool = False) -> str:
        """How the call ended, in words; `brief` leaves out a cancel's deadline and a reset's code (the HTML page's
        rows, which say it as page.js does for inner calls)."""
        if self.kind is EndKind.STATUS:
            assert self.status is not None
            return f"{self.status}: {self.details}" if self.details else self.status
        if self.kind is EndKind.CANCEL:
            deadline = " (deadline)" if self.status == "DEADLINE_EXCEEDED" and not brief else ""
            return f"cancelled by {self.by}{deadline}"
        if self.kind is EndKind.RESET:
            return f"reset by {self.by}" if brief else f"reset by {self.by} ({self.details}, {self.status})"
        if self.kind is EndKind.CLOSED:
            return "closed with its connection"
        return "no end recorded"


@dataclass
class ViewMessage:
    """One message: its raw bytes and, when the schema knows its type, the decoded value."""

    data: bytes
    type_name: str | None
    value: dict[str, Any] | None = None
    error: str | None = None  # why it was not decoded
    t_ns: int | None = None  # outer calls only

    @property
    def unknown_paths(self) -> list[str]:
        return list(iter_unknown_paths(self.value)) if self.value is not None else []


@dataclass
class RouterStream:
    """What a router Stream call carried: frame counts, which end of the tunnel it was, and its peer."""

    side: TunnelSide
    frames_out: int = 0  # frames this peer sent
    frames_in: int = 0
    bytes_out: int = 0  # payload bytes
    bytes_in: int = 0
    types_out: dict[str, int] = field(default_factory=dict)  # frame type name -> count
    types_in: dict[str, int] = field(default_factory=dict)
    peer: int | None = None  # call id of the tunnel's other end, when both ends were recorded
    holds_inner: bool = False  # the inner calls are listed under this call (not under its peer)
    probe: bool = False  # no inner connection at all: a readiness probe that only said GOAWAY
    error: str | None = None  # why decoding stopped early


@dataclass(frozen=True)
class ElidedUpload:
    """An inner byte stream whose client bytes the recording kept as length and SHA-256 only (from some byte on)."""

    length: int  # client bytes in all
    sha256: str | None  # None: the recording stops before the upload ended

    def text(self) -> str:
        digest = f"sha256:{self.sha256}" if self.sha256 else "no digest (the recording stops before its end)"
        return f"{self.length} bytes, {digest}"


@dataclass
class ViewCall:
    """A call, outer or inner, in the shape show/diff/textconv use.

    Outer calls: `id` is the cassette's call id and times are nanoseconds since the recording started. Inner
    (tunnel) calls: `id` is the HTTP/2 stream id, and `span` is in tunnel-event order (the decoder's seq).
    """

    id: int
    method: str
    role: str  # "controller", "router" or "tunnel"
    caller: str | None  # "Client" or "Exporter" (jumpstarter-kind metadata, or the tunnel side), if known
    end: CallEnd
    known: bool  # the schema knows the method
    metadata: Metadata = ()
    initial_metadata: Metadata | None = None
    trailing_metadata: Metadata = ()
    requests: list[ViewMessage] = field(default_factory=list)
    responses: list[ViewMessage] = field(default_factory=list)
    start_ns: int | None = None
    timeout_ns: int | None = None
    span: tuple[int, int] = (0, 0)  # (start, end) for ordering and overlap; see the class docstring
    stream: RouterStream | None = None  # router calls
    inner: list[ViewCall] | None = None  # the tunnel's inner calls, on the call that holds them
    elided: ElidedUpload | None = None  # an inner byte stream's upload, not kept whole

    @property
    def short_method(self) -> str:
        return short_method(self.method)

    @property
    def duration_ns(self) -> int | None:
        if self.start_ns is None or self.end.t_ns is None:
            return None
        return self.end.t_ns - self.start_ns


@dataclass
class CassetteView:
    header: Header
    registry: Registry
    calls: list[ViewCall]  # outer calls in the order they started
    events: int = 0
    truncated_at: int | None = None
    # Inner calls' decoded messages were dropped, bytes and values (by diff's loader, to send less between
    # processes, once it had built their units); only re-building their units (diff's method renames) needs them.
    inner_data_dropped: bool = False
    # The router endpoints the proxy handed the peers instead of the real ones (Dial and Listen responses as
    # forwarded): the proxy's own address, which diff masks in texts with the upstreams and the real routers.
    forwarded_endpoints: tuple[str, ...] = ()

    def __getstate__(self) -> dict[str, Any]:
        # A registry holds C descriptor pools, which don't pickle; it is rebuilt from the header's schema.
        state = dict(self.__dict__)
        del state["registry"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.registry = Registry.for_descriptor_set(self.header.descriptor_set)

    def find(self, call_id: int) -> ViewCall | None:
        for call in self.calls:
            if call.id == call_id:
                return call
        return None


# ---------------------------------------------------------------------------------------------------- decoding


_WKT_STRUCT = "google.protobuf.Struct"
_WKT_VALUE = "google.protobuf.Value"
_WKT_LIST = "google.protobuf.ListValue"


def _sorted_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted_json(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted_json(v) for v in value]
    return value


def _sort_maps(value: Any, descriptor: Descriptor) -> Any:
    """Map fields and Structs with their keys sorted: protobuf keeps no order there, so runs would differ."""
    if descriptor.full_name in (_WKT_STRUCT, _WKT_VALUE, _WKT_LIST):
        return _sorted_json(value)
    if not isinstance(value, dict):
        return value
    for f in descriptor.fields:
        item = value.get(f.name)
        if item is None or f.message_type is None:
            continue
        if f.message_type.GetOptions().map_entry:
            value_type = f.message_type.fields_by_name["value"].message_type
            value[f.name] = {
                k: _sort_maps(item[k], value_type) if value_type is not None else item[k] for k in sorted(item)
            }
        elif isinstance(item, list):
            value[f.name] = [_sort_maps(v, f.message_type) for v in item]
        else:
            value[f.name] = _sort_maps(item, f.message_type)
    return value


def decode_message(registry: Registry, type_name: str | None, data: bytes, *, decode: bool = True) -> ViewMessage:
    """Decode one message with `registry`; map keys come out sorted, so the same message reads the same."""
    if type_name is None:
        return ViewMessage(data=data, type_name=None, error="method not in the schema")
    if not decode:
        return ViewMessage(data=data, type_name=type_name)
    try:
        value = registry.decode(type_name, data)
        if registry.reaches_maps(type_name):  # found once per schema, when it was loaded
            value = _sort_maps(value, registry.descriptor(type_name))
        value = _sort_unknown_maps(value)
        return ViewMessage(data=data, type_name=type_name, value=value)
    except ProtocolError as err:
        return ViewMessage(data=data, type_name=type_name, error=str(err))


def _sort_unknown_maps(value: Any) -> Any:
    """Unknown fields that read as maps (`unknown_map`) with their entries sorted by key, as known maps are: the
    sender's order is its hash table's, which differs between processes. The same object when nothing moved."""
    if isinstance(value, dict):
        changed = False
        out: dict[str, Any] = {}
        for key, item in value.items():
            new = item
            if isinstance(key, str) and key.startswith("#") and isinstance(item, list) and len(item) > 1:
                entries = unknown_map(item)
                if entries is not None:
                    keys = [str(k) for k in entries]  # in the order of `item`
                    order = sorted(range(len(item)), key=keys.__getitem__)
                    new = [item[i] for i in order]
            elif isinstance(item, dict | list):
                new = _sort_unknown_maps(item)
            changed |= new is not item
            out[key] = new
        return out if changed else value
    if isinstance(value, list):
        items = [_sort_unknown_maps(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


class _MessageDecoder:
    """`decode_message` for one view, with identical messages (same type, same bytes) decoded once.

    Polls, repeated driver calls and every tunnel's opening calls send the same bytes again and again; their
    `ViewMessage`s share one decoded value (nothing downstream mutates values).
    """

    MAX_BYTES = 4096  # bigger messages are rarely repeated; hashing them would cost more than it saves

    def __init__(self, registry: Registry, decode: bool) -> None:
        self.registry = registry
        self.decode = decode
        self._memo: dict[tuple[str, bytes], tuple[dict[str, Any] | None, str | None]] = {}

    def __call__(self, type_name: str | None, data: bytes, t_ns: int | None = None) -> ViewMessage:
        if type_name is None or not self.decode or len(data) > self.MAX_BYTES:
            message = decode_message(self.registry, type_name, data, decode=self.decode)
        else:
            key = (type_name, data)
            known = self._memo.get(key)
            if known is None:
                message = decode_message(self.registry, type_name, data)
                self._memo[key] = (message.value, message.error)
            else:
                message = ViewMessage(data=data, type_name=type_name, value=known[0], error=known[1])
        message.t_ns = t_ns
        return message


def _outer_end(call: Call, first_end: Status | Cancel | None) -> CallEnd:
    """How the call ended, given its first Status or Cancel event (if any)."""
    event = first_end
    if type(event) is Status:
        return CallEnd(EndKind.STATUS, code_name(event.code), event.details, t_ns=event.t_ns)
    if type(event) is Cancel:
        status = "CANCELLED"
        timeout = call.start.timeout_ns
        if event.by.value == "client" and timeout and event.t_ns - call.start.t_ns >= timeout * _DEADLINE_SLACK:
            status = "DEADLINE_EXCEEDED"
        return CallEnd(EndKind.CANCEL, status, event.reason, by=event.by.value, t_ns=event.t_ns)
    last = call.events[-1].t_ns if call.events else call.start.t_ns
    return CallEnd(EndKind.OPEN, None, t_ns=None if not call.events else last)


def _inner_end(inner: InnerCall) -> CallEnd:
    if inner.code is not None:
        return CallEnd(EndKind.STATUS, code_name(inner.code), inner.details)
    if inner.reset is not None:
        by = "client" if inner.reset_by_client else "exporter"
        try:
            reason = ErrorCode(inner.reset).name
        except ValueError:
            reason = f"error code {inner.reset}"
        return CallEnd(EndKind.RESET, _RESET_STATUS.get(inner.reset, "INTERNAL"), reason, by=by)
    return CallEnd(EndKind.CLOSED, None)


def _frames(registry: Registry, call: Call) -> tuple[list[RouterFrame], list[RouterFrame], str | None]:
    out: list[RouterFrame] = []
    into: list[RouterFrame] = []
    try:
        for sent, frame in iter_router_frames(call, registry):
            (out if sent else into).append(frame)
    except ProtocolError as err:
        return out, into, f"router frame does not decode: {err}"
    return out, into, None


def _caller_for_side(side: TunnelSide) -> str | None:
    return {TunnelSide.CLIENT: "Client", TunnelSide.EXPORTER: "Exporter"}.get(side)


def _message_types(registry: Registry, method: str) -> tuple[str | None, str | None, bool]:
    info = registry.method(method)
    if info is None:
        return None, None, False
    return info.request_type, info.response_type, True


def _inner_view(decoder: _MessageDecoder, inner: InnerCall) -> ViewCall:
    method = inner.method or "?"
    request_type, response_type, known = _message_types(decoder.registry, method)

    def message(type_name: str | None, data: bytes, compressed: bool) -> ViewMessage:
        if compressed:  # grpc-encoding other than identity: the bytes are not a protobuf message
            return ViewMessage(data=data, type_name=type_name, error="compressed message")
        return decoder(type_name, data)

    end_seq = inner.closed_seq if inner.closed_seq is not None else 1 << 62
    return ViewCall(
        id=inner.stream_id,
        method=method,
        role=Role.TUNNEL.value,
        caller="Client",
        end=_inner_end(inner),
        known=known,
        metadata=application_metadata(inner.request_metadata),
        initial_metadata=application_metadata(inner.response_metadata) if inner.http_status is not None else None,
        trailing_metadata=application_metadata(inner.trailing_metadata),
        requests=[message(request_type, m.data, m.compressed) for m in inner.request_messages],
        responses=[message(response_type, m.data, m.compressed) for m in inner.response_messages],
        timeout_ns=None if inner.timeout is None else int(inner.timeout * 1e9),
        span=(inner.opened_seq, end_seq),
        elided=ElidedUpload(inner.elided[-1].length, inner.elided[-1].sha256) if inner.elided else None,
    )


def _outer_view(decoder: _MessageDecoder, call: Call, frames: bool) -> ViewCall:
    request_type, response_type, known = _message_types(decoder.registry, call.method)
    requests: list[ViewMessage] = []
    responses: list[ViewMessage] = []
    # Router frames are summarised by the tunnel decoding; keep their bytes (--raw), don't decode them.
    router = call.method == ROUTER_STREAM
    first_end: Status | Cancel | None = None  # what Call.status, .cancel and .initial_metadata would find,
    first_status: Status | None = None  # in one pass over the events (a router call has hundreds)
    initial_metadata: Metadata | None = None
    for event in call.events:
        if type(event) is ClientMessage:
            if not router:
                requests.append(decoder(request_type, event.data, event.t_ns))
            elif frames:
                requests.append(ViewMessage(data=event.data, type_name=request_type, t_ns=event.t_ns))
        elif type(event) is ServerMessage:
            if not router:
                responses.append(decoder(response_type, event.data, event.t_ns))
            elif frames:
                responses.append(ViewMessage(data=event.data, type_name=response_type, t_ns=event.t_ns))
        elif type(event) is Status:
            if first_status is None:
                first_status = event
            if first_end is None:
                first_end = event
        elif type(event) is Cancel:
            if first_end is None:
                first_end = event
        elif type(event) is ServerHeaders and initial_metadata is None:
            initial_metadata = event.metadata
    end = _outer_end(call, first_end)
    status = first_status
    kind = metadata_get(call.start.metadata, "jumpstarter-kind")
    last_t = call.events[-1].t_ns if call.events else call.start.t_ns
    return ViewCall(
        id=call.call_id,
        method=call.method,
        role=call.role.value,
        caller=kind if isinstance(kind, str) else None,
        end=end,
        known=known,
        metadata=call.start.metadata,
        initial_metadata=initial_metadata,
        trailing_metadata=status.trailing_metadata if status is not None else (),
        requests=requests,
        responses=responses,
        start_ns=call.start.t_ns,
        timeout_ns=call.start.timeout_ns,
        span=(call.start.t_ns, end.t_ns if end.t_ns is not None else last_t),
    )


def _side_of(view: ViewCall) -> TunnelSide:
    return view.stream.side if view.stream is not None else TunnelSide.UNKNOWN


def _pair_tunnels(router_calls: Sequence[tuple[Call, ViewCall]]) -> list[tuple[int, int | None]]:
    """Pairs of indices into `router_calls` that are the two ends of one tunnel, in start order."""
    return pair_ends([(bearer_token(call.start.metadata), _side_of(view)) for call, view in router_calls])


def _count_types(frames: Iterable[tuple[str, int]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name, _ in frames:
        counts[name] = counts.get(name, 0) + 1
    return counts


def _fill_counts(stream: RouterStream, out: list[tuple[str, int]], into: list[tuple[str, int]]) -> None:
    stream.frames_out, stream.frames_in = len(out), len(into)
    stream.bytes_out = sum(size for _, size in out)
    stream.bytes_in = sum(size for _, size in into)
    stream.types_out, stream.types_in = _count_types(out), _count_types(into)


@dataclass
class DecodedTunnel:
    """What `build_view` keeps of one decoded tunnel: its inner calls and a summary of its frames."""

    calls: list[ViewCall]
    error: str | None
    frames_out: list[tuple[str, int]]  # (frame type name, payload size) of each frame this end sent
    frames_in: list[tuple[str, int]]


def _decode_tunnel(decoder: _MessageDecoder, call: Call) -> DecodedTunnel:
    tunnel = decode_router_call(call, decoder.registry)
    return DecodedTunnel(
        calls=[_inner_view(decoder, inner) for inner in tunnel.calls],
        error=tunnel.error,
        frames_out=[(f.type_name, len(f.payload)) for f in tunnel.frames_out],
        frames_in=[(f.type_name, len(f.payload)) for f in tunnel.frames_in],
    )


def _attach_tunnels(
    decoder: _MessageDecoder,
    router_calls: Sequence[tuple[Call, ViewCall]],
    counts: bool,
    progress: ProgressFn | None,
) -> None:
    registry = decoder.registry
    for call, view in router_calls:
        side, error = peek_side(call, registry)
        view.stream = RouterStream(side=side, error=error)
        view.caller = _caller_for_side(side)
    holders: list[tuple[Call, ViewCall]] = []
    for a, b in _pair_tunnels(router_calls):
        members = [router_calls[i] for i in ((a,) if b is None else (a, b))]
        if len(members) == 2:
            for (_, mine), (_, theirs) in ((members[0], members[1]), (members[1], members[0])):
                assert mine.stream is not None
                mine.stream.peer = theirs.id
        known = [m for m in members if _side_of(m[1]) is not TunnelSide.UNKNOWN]
        if not known:
            for _, view in members:
                assert view.stream is not None
                view.stream.probe = view.stream.error is None
            continue
        # The inner calls are decoded once, from the client's end when it was recorded.
        holder = next((m for m in known if _side_of(m[1]) is TunnelSide.CLIENT), known[0])
        holders.append(holder)
        for _, other in members:
            if other is not holder[1] and _side_of(other) is TunnelSide.UNKNOWN:
                # Nothing it sent or got opened the connection, yet its peer did: it is the other end.
                assert other.stream is not None
                client_holds = _side_of(holder[1]) is TunnelSide.CLIENT
                other.stream.side = TunnelSide.EXPORTER if client_holds else TunnelSide.CLIENT
                other.caller = _caller_for_side(other.stream.side)
    holder_ids = set()
    for done, (call, view) in enumerate(holders):
        if progress is not None and done % 16 == 0:
            progress("decoding tunnels", done, len(holders))
        tunnel = _decode_tunnel(decoder, call)
        assert view.stream is not None
        holder_ids.add(view.id)
        _fill_counts(view.stream, tunnel.frames_out, tunnel.frames_in)
        view.stream.holds_inner = True
        view.stream.error = view.stream.error or tunnel.error
        view.inner = tunnel.calls
    for call, view in router_calls if counts else ():
        if view.id not in holder_ids and view.stream is not None:
            out, into, error = _frames(registry, call)
            _fill_counts(
                view.stream,
                [(f.type_name, len(f.payload)) for f in out],
                [(f.type_name, len(f.payload)) for f in into],
            )
            view.stream.error = view.stream.error or error


def build_view(
    header: Header,
    calls: Sequence[Call],
    *,
    decode: bool = True,
    tunnels: bool = True,
    frames: bool = True,
    counts: bool = True,
    events: int = 0,
    truncated_at: int | None = None,
    progress: ProgressFn | None = None,
) -> CassetteView:
    """Decode every call of a cassette with the cassette's own schema.

    `decode=False` keeps the raw bytes only (show --raw); `tunnels=False` skips the tunnel decoder (show
    --no-tunnel); `frames=False` leaves router calls' messages (their frames, most of a cassette's bytes) out
    of the view, for uses that read tunnels through their decoded summary; `counts=False` leaves the frame
    counts of tunnel ends whose inner calls are listed elsewhere at zero (diff and textconv skip those ends).
    `progress` is called now and then while decoding.
    """
    registry = Registry.for_descriptor_set(header.descriptor_set)
    decoder = _MessageDecoder(registry, decode)
    views: list[ViewCall] = []
    router_calls: list[tuple[Call, ViewCall]] = []
    total = len(calls)
    for i, call in enumerate(calls):
        view = _outer_view(decoder, call, frames)
        views.append(view)
        if call.method == ROUTER_STREAM:
            router_calls.append((call, view))
        if progress is not None and i % 256 == 0:
            progress("decoding calls", i, total)
    if tunnels and router_calls:
        _attach_tunnels(decoder, router_calls, counts, progress)
    views.sort(key=lambda v: (v.start_ns or 0, v.id))
    return CassetteView(
        header=header,
        registry=registry,
        calls=views,
        events=events,
        truncated_at=truncated_at,
        forwarded_endpoints=_forwarded_endpoints(registry, calls) if decode else (),
    )


def _forwarded_endpoints(registry: Registry, calls: Sequence[Call]) -> tuple[str, ...]:
    """The `router_endpoint`s of the Dial and Listen responses as the proxy forwarded them (rewritten)."""
    found: dict[str, None] = {}
    for call in calls:
        if call.method not in ROUTER_HANDOUTS:
            continue
        info = registry.method(call.method)
        for event in call.events:
            if type(event) is not ServerMessage or event.forwarded is None or info is None:
                continue
            try:
                endpoint = registry.decode(info.response_type, event.forwarded).get("router_endpoint")
            except ProtocolError:
                continue
            if isinstance(endpoint, str) and endpoint:
                found[endpoint] = None
    return tuple(found)
