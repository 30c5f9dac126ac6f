"""Cassettes loaded for replay: an index of where each recorded call's messages are, read back when they are sent.

Loading streams each cassette once and keeps no events. A controller call becomes a `Script` holding what matching
and serving need up front (method, requests, metadata, status, peer) and where each response's record is in the
file (`RecordedResponses`: read with one `pread` when sent). A router stream (a tunnel, almost all of a cassette's
bytes) keeps only the offsets and lengths of its records, in arrays. When the tunnel is first used its records are
read back one at a time and decoded with big inner messages located (`REPLAY_DECODER`): those stay in the file
and are read again when sent (`TunnelBytes`). So what the library holds grows with the number of calls and
messages, not with the bytes they carried.
"""

from __future__ import annotations

import enum
import os
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from jsreplay.cassette.format import CassetteReader, read_cassette
from jsreplay.cassette.model import (
    AnyEvent,
    Call,
    CallStart,
    Cancel,
    Cassette,
    ClientMessage,
    Header,
    Role,
    ServerHeaders,
    ServerMessage,
    Status,
)
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import ROUTER_STREAM
from jsreplay.replay.records import RecordFile, TunnelBytes
from jsreplay.replay.script import RecordedResponses, Script, call_peer, script_from_inner
from jsreplay.session.tokens import bearer_token
from jsreplay.session.tunnels import (
    SideFinder,
    TunnelSide,
    better_carrier,
    decode_router_call,
    decode_router_records,
    event_frame,
)
from jsreplay.tunnel.config import DecoderConfig

# How much of a router stream's first frames is looked at to tell its side, at most (the HTTP/2 preface is 24 bytes).
SIDE_PREFIX_BYTES = 64 << 10
#: Inner messages longer than this are read from the cassette when sent, not held: a located message costs some
#: 16 bytes per piece (a piece per DATA frame it was carried in), so above this what is held is a few percent of
#: the bytes, and a flash image's upload and download are not held at all.
LOCATE_OVER = 1 << 10
#: How replay decodes tunnels (one configuration: its header block cache is shared by every tunnel).
REPLAY_DECODER = DecoderConfig(locate_over=LOCATE_OVER)


class Tunnel:
    """What a recorded router token led to: the client side's stream and, decoded on first use, its inner calls.

    Decoding every tunnel of a big cassette at start-up would dominate the replay server's start, and holding its
    frames would cost as much memory as the file: most are never asked for, so only the side (a look at the first
    frames) is found up front, and the stream's records are read back from the cassette when `inner` is needed,
    one at a time; the inner messages over `decoder.locate_over` bytes stay in the file (see `TunnelBytes`).
    """

    def __init__(
        self,
        token: str,
        side: TunnelSide,
        stream: Script,
        registry: Registry,
        file: RecordFile,
        call_id: int,
        offsets: array[int],
        lengths: array[int],
        decoder: DecoderConfig = REPLAY_DECODER,
    ) -> None:
        self.token = token
        self.side = side
        self.stream = stream  # the Stream call's start and status; its messages are in the file only
        self.registry = registry
        self.file = file
        self.call_id = call_id
        self.decoder = decoder
        # The call's start record, then every later event of the call, in file order: where and how long each is.
        self._offsets = offsets
        self._lengths = lengths
        self._inner: list[Script] | None = None
        self.decode_error: str | None = None

    @property
    def path(self) -> Path:
        return self.file.path

    def records(self) -> Iterator[tuple[int, int, AnyEvent]]:
        """The call's events after its start, read back one at a time: (offset, length, event)."""
        for offset, length in zip(self._offsets[1:], self._lengths[1:], strict=True):
            yield offset, length, self.file.event_at(offset, length)

    @property
    def call(self) -> Call:
        """The whole recorded Stream call, read from the cassette again."""
        start = self.file.event_at(self._offsets[0], self._lengths[0])
        assert isinstance(start, CallStart), "a tunnel's first offset is its call's start"
        return Call(start=start, events=tuple(event for _, _, event in self.records()))

    @property
    def carries_calls(self) -> bool:
        """The client side of a tunnel that spoke HTTP/2 (a readiness probe's did not)."""
        return self.side is TunnelSide.CLIENT

    @property
    def inner(self) -> list[Script]:
        if self._inner is None:
            key, cut = self.stream.key, self.stream.cut
            if self.side is TunnelSide.UNKNOWN:  # no HTTP/2 was seen at its start: a probe's few frames
                decoded = decode_router_call(self.call, self.registry)
                self.decode_error = decoded.error
                self._inner = [script_from_inner(c, key, cut) for c in decoded.calls if c.method]
                return self._inner
            located = decode_router_records(self.records(), self.side, self.registry, self.decoder)
            self.decode_error = located.error
            read = TunnelBytes(self.file, self.registry, self.call_id, located).read
            self._inner = [script_from_inner(c, key, cut, read) for c in located.calls if c.method]
        return self._inner

    @property
    def decoded(self) -> bool:
        """Whether the inner calls are held decoded (from first use until `release`)."""
        return self._inner is not None

    def release(self) -> None:
        """Drop the decoded inner calls (a tunnel's echo bytes can be megabytes); `inner` decodes again if asked."""
        self._inner = None


@dataclass(frozen=True)
class LoadedCassette:
    """What the library keeps of a cassette besides its index: the header, and how the file ended."""

    header: Header
    event_count: int  # whole events in the file
    truncated_at: int | None = None


@dataclass
class Library:
    cassettes: list[tuple[Path, LoadedCassette]] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)  # outer calls other than router streams
    tunnels: dict[str, Tunnel] = field(default_factory=dict)
    registries: dict[str, Registry] = field(default_factory=dict)  # script key prefix (source) -> registry
    created_unix_ns: int = 0  # the earliest recording's start, for timestamp shifting
    files: list[RecordFile] = field(default_factory=list)  # where recorded responses are read from

    def registry_for(self, script: Script) -> Registry:
        source = script.key.split("#", 1)[0]
        return self.registries.get(source) or Registry.default()

    def close(self) -> None:
        """Close the cassettes opened to read responses (a later read opens them again)."""
        for file in self.files:
            file.close()

    def index_bytes(self) -> int:
        """The memory of the library's index: scripts, requests, response rows, tunnels and offsets, containers.

        Counted object by object (`sys.getsizeof`, each object once), not estimated. The parts every cassette has
        whatever its size are left out: registries, headers, open files, enum members, the decoder configuration.
        """
        return _deep_size(
            (self.scripts, self.tunnels), stop=(Registry, RecordFile, Header, Path, enum.Enum, DecoderConfig)
        )


def _deep_size(root: object, stop: tuple[type, ...]) -> int:
    seen: set[int] = set()
    total = 0
    todo: list[object] = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or obj is None or isinstance(obj, stop):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, str | bytes | bytearray | int | float | bool | array):
            continue
        if isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, tuple | list | set | frozenset):
            todo.extend(obj)
        else:
            todo.extend(vars(obj).values() if hasattr(obj, "__dict__") else ())
            for cls in type(obj).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if hasattr(obj, name):
                        todo.append(getattr(obj, name))
    return total


def whole_cassette(path: Path) -> Cassette:
    """A cassette with every event in memory, for tools that walk all of a small one's calls (verify's plan)."""
    return read_cassette(path)


def _note(script: Script, event: AnyEvent) -> None:
    """Headers and status into a script being scanned, as script_from_call takes them (the last headers, the
    first status)."""
    if isinstance(event, ServerHeaders):
        script.initial_metadata = event.metadata
    elif isinstance(event, Status) and script.code is None:
        script.code = event.code
        script.details = event.details
        script.trailing_metadata = event.trailing_metadata


def _new_script(source: str, start: CallStart, responses: RecordedResponses | tuple[()] = ()) -> Script:
    return Script(
        key=f"{source}#{start.call_id}",
        method=sys.intern(start.method),  # thousands of calls, a dozen methods
        requests=(),
        responses=responses,
        initial_metadata=None,
        code=None,
        start_seq=start.seq,
        peer=sys.intern(call_peer(start.metadata)),
    )


class _RouterStream:
    """A router Stream call while its cassette is scanned: its script, token, the offsets and lengths of its
    records, and its first frames until its side is known."""

    __slots__ = ("call_id", "finder", "lengths", "offsets", "prefix_bytes", "side", "stream", "token")

    def __init__(self, source: str, start: CallStart, offset: int) -> None:
        self.stream = _new_script(source, start)
        self.call_id = start.call_id
        self.token = bearer_token(start.metadata) or ""
        self.offsets = array("q", [offset])
        self.lengths = array("I", [0])  # each record's length is set once the next record's offset is known
        self.finder: SideFinder | None = SideFinder()  # fed the first frames, until the side is known
        self.prefix_bytes = 0
        self.side: TunnelSide | None = None

    def add(self, offset: int, event: AnyEvent, registry: Registry) -> None:
        self.offsets.append(offset)
        self.lengths.append(0)
        if not isinstance(event, ClientMessage | ServerMessage):
            _note(self.stream, event)
            return
        if self.finder is None:
            return
        try:
            self.finder.add(*event_frame(registry, event))
        except ProtocolError:
            self.side = TunnelSide.UNKNOWN  # as tunnel_side decides for a frame that does not decode
            self.finder = None
            return
        self.prefix_bytes += len(event.data)
        if self.prefix_bytes >= SIDE_PREFIX_BYTES or self.finder.settled:
            self.settle()

    def settle(self) -> TunnelSide:
        if self.side is None:
            assert self.finder is not None
            self.side = self.finder.side
        self.finder = None
        return self.side


def _scan(
    path: Path, reader: CassetteReader, source: str, registry: Registry, file: RecordFile
) -> dict[int, Script | _RouterStream]:
    """Every call of the cassette, in the order the calls started (a repeated call id keeps its place).

    Controller calls become their final scripts as the events come (no per-call scan state to copy from and free
    afterwards: on a big cassette that churn alone left the allocator some 2 MB of holes per GB).
    """
    calls: dict[int, Script | _RouterStream] = {}
    ended: set[int] = set()  # calls whose recording has a status or a cancel
    # A response's record length is where the next record starts: it waits here for that offset. So does the
    # length of a router stream's last record.
    pending: tuple[RecordedResponses, int, ServerMessage, int] | None = None
    last_router: tuple[_RouterStream, int] | None = None
    for offset, event in reader.iter_with_offsets():
        if pending is not None:
            responses, start, message, after = pending
            responses.add(start, offset - start, message.seq, message.t_ns, after)
            pending = None
        if last_router is not None:
            stream, start = last_router
            stream.lengths[-1] = offset - start
            last_router = None
        if isinstance(event, CallStart):
            ended.discard(event.call_id)
            if event.method == ROUTER_STREAM and event.role is Role.ROUTER:
                calls[event.call_id] = stream = _RouterStream(source, event, offset)
                last_router = (stream, offset)
            else:
                calls[event.call_id] = _new_script(source, event, RecordedResponses(file, event.t_ns))
            continue
        call = calls.get(event.call_id)
        if call is None:
            continue  # its start is missing (a cassette cut in the middle): dropped, as group_calls does
        if isinstance(event, Status | Cancel):
            ended.add(event.call_id)
        if isinstance(call, _RouterStream):
            call.add(offset, event, registry)
            last_router = (call, offset)
        elif isinstance(event, ClientMessage):
            # Most calls send one request: a 1-tuple is 40 bytes smaller than a list; a stream gets a list.
            requests = call.requests
            if isinstance(requests, list):
                requests.append(event.data)
            else:
                call.requests = [*requests, event.data] if requests else (event.data,)
        elif isinstance(event, ServerMessage):
            assert isinstance(call.responses, RecordedResponses)
            pending = (call.responses, offset, event, len(call.requests))
        else:
            _note(call, event)
    end = reader.truncated_at if reader.truncated_at is not None else os.path.getsize(path)
    if pending is not None:
        responses, start, message, after = pending
        responses.add(start, end - start, message.seq, message.t_ns, after)
    if last_router is not None:
        stream, start = last_router
        stream.lengths[-1] = end - start
    cut = f"the cassette ends at byte {end}, after {reader.events_read} events"
    for call_id, call in calls.items():
        if call_id not in ended:
            (call if isinstance(call, Script) else call.stream).cut = cut
    return calls


def load_library(
    paths: Iterable[Path], schema: bytes | None = None, decoder: DecoderConfig = REPLAY_DECODER
) -> Library:
    """`schema`: decode every cassette with it (--schema) instead of the one it embeds; `decoder`: how tunnels are
    decoded (tests lower `locate_over` to read more messages back from the file)."""
    library = Library()
    for path in paths:
        source = path.name
        with CassetteReader(path) as reader:
            header = reader.header
            registry = Registry.for_descriptor_set(schema if schema is not None else header.descriptor_set)
            file = RecordFile(path)
            calls = _scan(path, reader, source, registry, file)
            loaded = LoadedCassette(header=header, event_count=reader.events_read, truncated_at=reader.truncated_at)
        library.files.append(file)
        library.registries[source] = registry
        if not library.created_unix_ns or header.created_unix_ns < library.created_unix_ns:
            library.created_unix_ns = header.created_unix_ns
        for call in calls.values():
            if isinstance(call, Script):
                call.status_after_requests = len(call.requests)
                library.scripts.append(call)
                continue
            side = call.settle()
            existing = library.tunnels.get(call.token)
            # Both peers' streams are recorded; the client's carries the inner calls we answer.
            if not better_carrier(existing.side if existing is not None else None, side):
                continue
            library.tunnels[call.token] = Tunnel(
                call.token, side, call.stream, registry, file, call.call_id, call.offsets, call.lengths, decoder
            )
        library.cassettes.append((path, loaded))
    return library
