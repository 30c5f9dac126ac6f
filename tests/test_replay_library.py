"""The replay library loads cassettes in one streaming pass and reads router frames back by offset when needed."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from jsreplay.cassette import migrations
from jsreplay.cassette.errors import CassetteError, TruncatedCassetteWarning
from jsreplay.cassette.format import CassetteReader, read_cassette, read_events_at, write_cassette
from jsreplay.cassette.model import (
    CallStart,
    Cassette,
    ClientHalfClose,
    ClientMessage,
    Header,
    Redaction,
    Role,
    ServerMessage,
    Status,
    metadata_get,
)
from jsreplay.protocol.registry import Registry
from jsreplay.replay.library import SIDE_PREFIX_BYTES, Tunnel, load_library
from jsreplay.replay.script import Script, script_from_call, script_from_inner
from jsreplay.tunnel.recorded import ROUTER_STREAM, decode_router_call, tunnel_side

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
        script.requests,
        script.responses,
        script.initial_metadata,
        script.code,
        script.details,
        script.trailing_metadata,
        script.status_after_requests,
        script.request_metadata,
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
    found = []
    for value in vars(tunnel).values():
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, ClientMessage | ServerMessage):
                found.append(item)
            events = getattr(item, "events", ())
            found.extend(e for e in events if isinstance(e, ClientMessage | ServerMessage))
    return found


def test_router_frames_are_not_held_after_loading() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncatedCassetteWarning)
        library = load_library([RECORDED])
    assert library.tunnels
    for tunnel in library.tunnels.values():
        assert _held_messages(tunnel) == []
        assert tunnel.stream.requests == [] and tunnel.stream.responses == []
    _, loaded = library.cassettes[0]
    router_ids = {s.call_id for s in loaded.events if isinstance(s, CallStart) and s.method == ROUTER_STREAM}
    held = [e for e in loaded.events if e.call_id in router_ids and isinstance(e, ClientMessage | ServerMessage)]
    assert held == []
    assert SIDE_PREFIX_BYTES <= 64 << 10
