"""The replay library loads cassettes in one streaming pass and reads router frames back by offset when needed."""

from __future__ import annotations

import gc
import shutil
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest

from jsreplay.cassette import migrations
from jsreplay.cassette.errors import CassetteError, CorruptCassetteError, TruncatedCassetteWarning
from jsreplay.cassette.format import CassetteReader, read_cassette, read_events_at, write_cassette
from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    Cassette,
    ClientHalfClose,
    ClientMessage,
    Event,
    Header,
    Redaction,
    Role,
    ServerMessage,
    Status,
    metadata_get,
)
from jsreplay.protocol.registry import Registry
from jsreplay.protocol.wire import GET_REPORT, ROUTER_STREAM, RouterFrameType
from jsreplay.replay.library import SIDE_PREFIX_BYTES, Library, Tunnel, load_library
from jsreplay.replay.records import TunnelBytes
from jsreplay.replay.script import (
    InnerMessages,
    InnerResponses,
    RecordedResponses,
    Script,
    ScriptedResponse,
    script_from_call,
    script_from_inner,
)
from jsreplay.replay.server import CausalIndex
from jsreplay.session.tunnels import decode_router_call, decode_router_records, tunnel_side
from jsreplay.tunnel import DecoderConfig

RECORDED = Path(__file__).resolve().parent.parent / "cassettes" / "power-echo.msgpack"


def _header() -> Header:
    return Header(
        format_version=migrations.FORMAT_VERSION,
        jsreplay_version="0.1.0",
        created_unix_ns=1,
        upstreams=(),
        descriptor_set=b"",
        redaction=Redaction(enabled=False),
    )


def _small_cassette(path: Path) -> Cassette:
    events = (
        CallStart(call_id=1, seq=0, t_ns=1, method="/a.B/C", role=Role.CONTROLLER, metadata=(), peer="", target=""),
        ClientMessage(call_id=1, seq=1, t_ns=2, data=b"x" * 3000),
        ClientHalfClose(call_id=1, seq=2, t_ns=3),
        ServerMessage(call_id=1, seq=3, t_ns=4, data=b"y" * 70000, forwarded=None),
        Status(call_id=1, seq=4, t_ns=5, code=0, details="", trailing_metadata=(("k", "v"),)),
    )
    cassette = Cassette(header=_header(), events=events)
    write_cassette(path, cassette, redactor=None)
    return cassette


def test_offsets_iterate_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    cassette = _small_cassette(path)
    with CassetteReader(path, chunk_size=1000) as reader:
        pairs = list(reader.iter_with_offsets())
    assert [e for _, e in pairs] == list(cassette.events)
    offsets = [o for o, _ in pairs]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    assert read_events_at(path, offsets) == list(cassette.events)
    assert read_events_at(path, offsets[::-1]) == list(cassette.events)[::-1]
    assert read_events_at(path, []) == []


def test_read_events_at_bad_offset_and_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    _small_cassette(path)
    with CassetteReader(path) as reader:
        offsets = [o for o, _ in reader.iter_with_offsets()]
    size = path.stat().st_size
    for bad in (0, size, size + 10, offsets[3] + 7):
        with pytest.raises(CassetteError):
            read_events_at(path, [bad])
    # Cut inside the big server message: the offsets before it still read, the cut record is an error.
    cut = tmp_path / "cut.msgpack"
    cut.write_bytes(path.read_bytes()[: offsets[3] + 1000])
    assert len(read_events_at(cut, offsets[:3])) == 3
    with pytest.raises(CassetteError):
        read_events_at(cut, [offsets[3]])
    with pytest.warns(TruncatedCassetteWarning), CassetteReader(cut) as reader:
        assert [o for o, _ in reader.iter_with_offsets()] == offsets[:3]
        assert reader.truncated_at == offsets[3]
    with pytest.raises(CassetteError):
        read_events_at(tmp_path / "missing.msgpack", [offsets[0]])


def _script_view(script: Script) -> tuple[object, ...]:
    return (
        script.key,
        script.method,
        list(script.requests),
        list(script.responses),  # recorded responses are read back from the file here
        script.initial_metadata,
        script.code,
        script.details,
        script.trailing_metadata,
        script.status_after_requests,
        script.start_seq,
        script.peer,
    )


def test_library_matches_a_full_decode_of_a_recorded_cassette() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedCassetteWarning)
        cassette = read_cassette(RECORDED)
        library = load_library([RECORDED])
    registry = Registry.for_descriptor_set(cassette.header.descriptor_set)
    source = RECORDED.name
    outer = [c for c in cassette.calls() if c.method != ROUTER_STREAM or c.role is not Role.ROUTER]
    assert [_script_view(s) for s in library.scripts] == [_script_view(script_from_call(c, source)) for c in outer]

    # The tunnels: the same tokens, sides and streams as decoding every router call in full would give.
    expected: dict[str, tuple[str, object, list[Script]]] = {}
    for call in cassette.calls():
        if call.method != ROUTER_STREAM or call.role is not Role.ROUTER:
            continue
        auth = metadata_get(call.start.metadata, "authorization")
        assert isinstance(auth, str)
        token = auth.partition(" ")[2].strip()
        side = tunnel_side(call, registry)
        stream = script_from_call(call, source)
        inner = [script_from_inner(c, stream.key) for c in decode_router_call(call, registry).calls if c.method]
        if token not in expected or (side.value == "client" and expected[token][1] != side):
            expected[token] = (stream.key, side, inner)
    assert set(library.tunnels) == set(expected)
    assert any(t.carries_calls for t in library.tunnels.values())
    for token, tunnel in library.tunnels.items():
        key, side, inner = expected[token]
        assert (tunnel.stream.key, tunnel.side) == (key, side)
        full = next(c for c in cassette.calls() if f"{source}#{c.call_id}" == key)
        assert tunnel.stream.start_seq == full.start.seq
        assert tunnel.stream.peer == script_from_call(full, source).peer
        assert tunnel.call.events == full.events
        assert [_script_view(s) for s in tunnel.inner] == [_script_view(s) for s in inner]


def _held_messages(tunnel: Tunnel) -> list[object]:
    return [obj for obj in _reachable(tunnel) if isinstance(obj, ClientMessage | ServerMessage)]


def test_router_frames_are_not_held_after_loading() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedCassetteWarning)
        library = load_library([RECORDED])
    assert library.tunnels
    for tunnel in library.tunnels.values():
        assert _held_messages(tunnel) == []
        assert not tunnel.stream.requests and not tunnel.stream.responses
    assert SIDE_PREFIX_BYTES <= 64 << 10


def _reachable(root: object) -> Iterator[object]:
    """Everything `root` refers to, through containers and objects (not into classes, modules or registries)."""
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType | Registry | Path):
            continue
        seen.add(id(obj))
        yield obj
        todo.extend(gc.get_referents(obj))


def test_the_library_holds_no_events_and_its_index_is_small() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedCassetteWarning)
        library = load_library([RECORDED])
        cassette = read_cassette(RECORDED)
    assert library.scripts and library.tunnels
    held = list(_reachable((library.scripts, library.tunnels)))
    assert not [obj for obj in held if isinstance(obj, Event)]
    # Responses are positions in the file: no recorded response's bytes are held (only requests, for matching).
    requests = {data for call in cassette.calls() if call.method != ROUTER_STREAM for data in call.requests}
    big_responses = {data for call in cassette.calls() for data in call.responses if len(data) > 64}
    held_bytes = [obj for obj in held if isinstance(obj, bytes) and len(obj) > 64]
    assert not [b for b in held_bytes if b in big_responses and b not in requests]
    size = library.index_bytes()
    assert 0 < size < RECORDED.stat().st_size // 4
    library.close()


def _cut_call_cassette(path: Path) -> list[bytes]:
    """A stream whose recording ended on a response: the file's last record is a message."""
    replies = [b"a" * 10, b"b" * 100_000, b"c" * 3]
    events: list[AnyEvent] = [
        CallStart(call_id=1, seq=0, t_ns=100, method="/a.B/S", role=Role.CONTROLLER, metadata=(), peer="", target=""),
        ClientMessage(call_id=1, seq=1, t_ns=110, data=b"q"),
    ]
    events += [ServerMessage(call_id=1, seq=2 + i, t_ns=200 + i, data=r, forwarded=None) for i, r in enumerate(replies)]
    write_cassette(path, Cassette(header=_header(), events=tuple(events)), redactor=None)
    return replies


def test_responses_are_read_back_by_position_up_to_the_last_record(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    replies = _cut_call_cassette(path)
    library = load_library([path])
    (script,) = library.scripts
    assert script.code is None and list(script.requests) == [b"q"]
    assert isinstance(script.responses, RecordedResponses) and len(script.responses) == 3
    assert [r.data for r in script.responses] == replies
    assert script.responses[-1] == ScriptedResponse(after_requests=1, data=b"c" * 3, seq=4, t_ns=102)
    assert [r.seq for r in script.responses[1:]] == [3, 4]
    with pytest.raises(IndexError):
        script.responses[3]
    # A cassette cut inside its last record: the responses before the cut still read back whole.
    cut = tmp_path / "cut.msgpack"
    cut.write_bytes(path.read_bytes()[:-1])
    with pytest.warns(TruncatedCassetteWarning):
        truncated = load_library([cut])
    assert [r.data for r in truncated.scripts[0].responses] == replies[:2]
    library.close()
    truncated.close()


def test_a_cassette_changed_after_loading_is_an_error_not_a_wrong_reply(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    replies = _cut_call_cassette(path)
    library = load_library([path])
    responses = library.scripts[0].responses
    assert responses[0].data == replies[0]
    library.close()  # a later read opens the file again, and finds other records where the responses were
    data = path.read_bytes()
    path.write_bytes(data[:-30_000])
    with pytest.raises(CorruptCassetteError):
        responses[1]
    path.write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    with pytest.raises(CorruptCassetteError):
        responses[2]


def test_causes_found_at_send_time_are_the_latest_call_of_each_other_peer() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedCassetteWarning)
        library = load_library([RECORDED])
    index = CausalIndex(library.scripts)
    found = 0
    for script in library.scripts:
        for seq in [response.seq for response in script.responses]:
            expected = []
            for peer in dict.fromkeys(s.peer for s in library.scripts if s.peer and s.peer != script.peer):
                before = [s for s in library.scripts if s.peer == peer and s.start_seq < seq]
                latest = max(before, key=lambda s: s.start_seq, default=None)
                if latest is not None and latest.start_seq > script.start_seq:
                    expected.append((peer, latest.key))
            assert sorted(index.of(script, seq)) == sorted(expected)
            found += bool(expected)
    assert found  # the recording has responses that waited for the other peer
    library.close()


EVERY_MESSAGE_LOCATED = DecoderConfig(locate_over=0)


def _carrier(library: Library) -> Tunnel:
    return next(t for t in library.tunnels.values() if t.carries_calls)


def test_a_tunnel_with_every_message_located_serves_what_a_full_decode_holds() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedCassetteWarning)
        cassette = read_cassette(RECORDED)
        library = load_library([RECORDED], decoder=EVERY_MESSAGE_LOCATED)
    registry = Registry.for_descriptor_set(cassette.header.descriptor_set)
    tunnel = _carrier(library)
    full = next(c for c in cassette.calls() if f"{RECORDED.name}#{c.call_id}" == tunnel.stream.key)
    decoded = decode_router_call(full, registry)
    expected = [script_from_inner(c, tunnel.stream.key) for c in decoded.calls if c.method]
    assert [_script_view(s) for s in tunnel.inner] == [_script_view(s) for s in expected]
    # Every message is read back from the file but the first request of a call that matching compares.
    for script in tunnel.inner:
        assert isinstance(script.responses, InnerResponses) or not script.responses
        if isinstance(script.requests, InnerMessages):
            assert script.requests.located(0) == (script.method == ROUTER_STREAM)
    assert any(isinstance(s.requests, InnerMessages) and s.method == ROUTER_STREAM for s in tunnel.inner)

    # Record by record: each message's spans lead, through its direction's index, to the bytes decoded in full.
    located = decode_router_records(tunnel.records(), tunnel.side, registry, EVERY_MESSAGE_LOCATED)
    read = TunnelBytes(tunnel.file, registry, tunnel.call_id, located).read
    assert located.error == decoded.error
    for want, got in zip(decoded.calls, located.calls, strict=True):
        assert [read(True, m.spans) for m in got.request_messages if m.spans] == [
            m.data for m in want.request_messages if len(m.data)
        ]
        assert [read(False, m.spans) for m in got.response_messages if m.spans] == [
            m.data for m in want.response_messages if len(m.data)
        ]
    data = int(RouterFrameType.DATA)
    assert located.client_bytes.size == sum(len(f.payload) for f in decoded.frames_out if f.frame_type == data)
    assert located.exporter_bytes.size == sum(len(f.payload) for f in decoded.frames_in if f.frame_type == data)
    library.close()


def test_a_located_message_whose_record_changed_is_a_corrupt_cassette(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    shutil.copyfile(RECORDED, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedCassetteWarning)
        library = load_library([path], decoder=EVERY_MESSAGE_LOCATED)
    tunnel = _carrier(library)
    report = next(s for s in tunnel.inner if s.method == GET_REPORT)
    registry = tunnel.registry
    # Where the GetReport response's first bytes are: the record of an exporter -> client DATA frame.
    located = decode_router_records(tunnel.records(), tunnel.side, registry, EVERY_MESSAGE_LOCATED)
    spans = next(c for c in located.calls if c.method == GET_REPORT).response_messages[0].spans
    frame, _, _ = next(located.exporter_bytes.pieces(spans[0], spans[1]))
    offset, length = located.exporter_bytes.record(frame)
    # The same record, but of another call (the same length, so the file reads as before around it).
    record = msgpack.unpackb(path.read_bytes()[offset : offset + length], raw=False)
    record[1] += 1
    changed = msgpack.packb(record, use_bin_type=True)
    assert len(changed) == length
    data = bytearray(path.read_bytes())
    data[offset : offset + length] = changed
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCassetteError) as failed:
        report.responses[0]
    assert failed.value.offset == offset and str(path) in str(failed.value)
    assert "the file changed since loading" in str(failed.value)
    library.close()
