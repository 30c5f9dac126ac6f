"""The decoder parses its most frequent frame types itself: it must accept, reject and extract exactly what
hyperframe's parser does, with hyperframe's messages. Well-formed flow-control frames skip checks that would
find nothing. Router frames parse with a cached message class."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import Frame
from hypothesis import given, settings
from hypothesis import strategies as st

from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.session.tunnels import RouterFrame, parse_frame
from jsreplay.tunnel import DEFAULT_CONFIG, DecoderConfig, Direction, TunnelDecoder, TunnelError
from jsreplay.tunnel.framing import FREQUENT, MalformedFrame, parse_frequent

from .frames import Peer, request_fields, response_fields

_HEADER = struct.Struct(">HBBBI")


def _hyperframe(frame_type: int, flags: int, stream_id: int, body: bytes) -> tuple[bytes, int, int] | str:
    header = _HEADER.pack(len(body) >> 8, len(body) & 0xFF, frame_type, flags, stream_id)
    try:
        frame, _ = Frame.parse_frame_header(memoryview(header))
        frame.parse_body(memoryview(body))
    except HyperframeError as err:
        return str(err)
    padded = "PADDED" in frame.flags
    priority = "PRIORITY" in frame.flags
    return (
        getattr(frame, "data", b""),
        frame.pad_length if padded else 0,
        frame.depends_on if priority else -1,
    )


def _ours(frame_type: int, flags: int, stream_id: int, body: bytes) -> tuple[bytes, int, int] | str:
    # Embedded in a bigger buffer, as the decoder sees it.
    data = b"\xaa" * 7 + body + b"\xbb" * 5
    try:
        parsed = parse_frequent(frame_type, flags, stream_id & 0x7FFFFFFF, data, 7, 7 + len(body))
    except MalformedFrame as err:
        return str(err)
    first, last, pad, depends_on = parsed
    return data[first:last], pad, depends_on


@settings(max_examples=3000, deadline=None)
@given(
    frame_type=st.sampled_from(sorted(FREQUENT)),
    flags=st.integers(0, 255),
    stream_id=st.sampled_from([0, 1, 2, 3, 0x7FFFFFFF, 0x80000000, 0x80000001]),
    body=st.one_of(
        st.binary(max_size=24),
        # A plausible pad length, then a short body: the boundary cases of the padding rules.
        st.builds(lambda pad, rest: bytes([pad]) + rest, st.integers(0, 12), st.binary(max_size=12)),
        # WINDOW_UPDATE increments around the limits.
        st.sampled_from([struct.pack(">L", n) for n in (0, 1, 2**31 - 1, 2**31, 2**32 - 1)]),
    ),
)
def test_frequent_frames_parse_as_hyperframe_parses_them(
    frame_type: int, flags: int, stream_id: int, body: bytes
) -> None:
    assert _ours(frame_type, flags, stream_id, body) == _hyperframe(frame_type, flags, stream_id, body)


def test_router_frames_parse_with_the_registry_and_fail_with_its_error() -> None:
    registry = Registry.default()
    data = registry.encode("jumpstarter.v1.StreamRequest", {"payload": b"abc", "frame_type": 0})
    assert parse_frame(registry, "jumpstarter.v1.StreamRequest", data) == RouterFrame(frame_type=0, payload=b"abc")
    with pytest.raises(ProtocolError, match=r"cannot decode 2 bytes as jumpstarter\.v1\.StreamResponse"):
        parse_frame(registry, "jumpstarter.v1.StreamResponse", b"\xff\xff")


def _decode(chunks: list[tuple[Direction, bytes]], config: DecoderConfig) -> list[object]:
    decoder = TunnelDecoder(config=config)
    out: list[object] = []
    for direction, chunk in chunks:
        try:
            out.extend(decoder.feed(direction, chunk))
        except TunnelError as err:
            out.append(str(err))
    return out


_flow_control = st.one_of(
    st.builds(
        lambda stream, increment: Peer.raw(0x8, 0, stream, struct.pack(">L", increment)),
        st.sampled_from([0, 1, 2, 3, 5, 0x80000001]),
        st.sampled_from([0, 1, 2**31 - 1, 2**31]),
    ),
    st.builds(lambda stream, body: Peer.raw(0x8, 0, stream, body), st.sampled_from([0, 1]), st.binary(max_size=6)),
    st.builds(Peer.raw, st.just(0x6), st.integers(0, 1), st.sampled_from([0, 1]), st.binary(min_size=7, max_size=9)),
)


@settings(max_examples=400, deadline=None)
@given(
    direction=st.sampled_from(Direction),
    start=st.booleans(),
    frames=st.lists(
        st.one_of(
            _flow_control,
            st.sampled_from(
                [
                    Peer(Direction.CLIENT_TO_EXPORTER).headers(1, request_fields()),
                    Peer(Direction.EXPORTER_TO_CLIENT).headers(1, response_fields()),
                    Peer.raw(0x1, 0x0, 1, b""),  # HEADERS awaiting a CONTINUATION
                    Peer.raw(0x9, 0x4, 1, b""),
                ]
            ),
        ),
        max_size=10,
    ),
)
def test_skipped_flow_control_frames_decode_as_fully_checked_ones(
    direction: Direction, start: bool, frames: list[bytes]
) -> None:
    _same_with_and_without_skipping(direction, start, frames)


def _window_update(stream: int, increment: int = 1) -> bytes:
    return Peer.raw(0x8, 0, stream, struct.pack(">L", increment))


@pytest.mark.parametrize("direction", list(Direction))
@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize(
    "frames",
    [
        [Peer.raw(0x1, 0x0, 1, b""), _window_update(0)],  # inside a header block
        [Peer.raw(0x1, 0x0, 1, b""), Peer.raw(0x6, 0, 0, bytes(8))],
        [_window_update(1), _window_update(3), _window_update(5)],  # open or idle streams
        [_window_update(2)],
        [_window_update(0, 0), _window_update(0, 2**31), _window_update(0x80000001)],
        [Peer.raw(0x8, 0, 0, bytes(5)), Peer.raw(0x8, 0, 0, bytes(3))],
        [Peer.raw(0x6, 0, 1, bytes(8)), Peer.raw(0x6, 1, 0, bytes(8)), Peer.raw(0x6, 0, 0, bytes(9))],
    ],
)
def test_flow_control_frames_at_each_check(direction: Direction, start: bool, frames: list[bytes]) -> None:
    _same_with_and_without_skipping(direction, start, [Peer(direction).headers(1, request_fields()), *frames])
    _same_with_and_without_skipping(direction, start, frames)


def _same_with_and_without_skipping(direction: Direction, start: bool, frames: list[bytes]) -> None:
    chunks = [(direction, Peer(direction).start() if start else b"")] + [(direction, frame) for frame in frames]
    fast = _decode(chunks, DecoderConfig())
    assert _decode(chunks, DecoderConfig(skip_flow_control=False)) == fast


_FIELD_VALUES = st.sampled_from(["a", "b", "c" * 40, "d" * 300])


@settings(max_examples=150, deadline=None)
@given(
    connections=st.lists(
        st.lists(
            st.tuples(
                st.lists(st.tuples(st.sampled_from(["x-one", "x-two", "x-three"]), _FIELD_VALUES), max_size=4),
                st.sampled_from([None, 0, 64, 256, 4096]),  # a table size update before the block, or none
            ),
            min_size=1,
            max_size=6,
        ),
        min_size=1,
        max_size=4,
    ),
    repeat=st.booleans(),
)
def test_cached_header_blocks_decode_and_leave_the_table_as_hpack_does(
    connections: list[list[tuple[list[tuple[str, str]], int | None]]], repeat: bool
) -> None:
    # Decoded blocks are reused across connections together with the table they leave behind: decoding with
    # the cache (each connection twice when `repeat`, so the second pass is all hits) must give what decoding
    # every block afresh gives.
    streams = []
    for blocks in connections * (2 if repeat else 1):
        peer = Peer(Direction.CLIENT_TO_EXPORTER)
        data = peer.start()
        for n, (extra, table_size) in enumerate(blocks):
            if table_size is not None:
                peer.encoder.header_table_size = table_size
            data += peer.headers(2 * n + 1, request_fields("/x", *extra), end_stream=True)
        streams.append(data)

    def decode_all(config: DecoderConfig) -> list[list[object]]:
        return [_decode([(Direction.CLIENT_TO_EXPORTER, data)], config) for data in streams]

    cached = decode_all(DecoderConfig())  # one configuration, so one cache for every connection
    assert decode_all(DecoderConfig(header_cache_blocks=0)) == cached


def test_a_configuration_owns_its_header_cache() -> None:
    assert TunnelDecoder().config is DEFAULT_CONFIG  # so that every tunnel shares one cache
    config = DecoderConfig()
    assert dataclasses.replace(config, max_header_list_size=300).header_cache is not config.header_cache
    assert DecoderConfig() == config  # the cache takes no part in equality
    peer = Peer(Direction.CLIENT_TO_EXPORTER)
    data = peer.start() + peer.headers(1, request_fields("/x"))
    off = DecoderConfig(header_cache_blocks=0)
    for used in (config, off):
        _decode([(Direction.CLIENT_TO_EXPORTER, data)], used)
    assert len(config.header_cache.blocks) == 1
    assert not off.header_cache.blocks
