"""Property: whatever bytes come in, the decoder either decodes them or raises a TunnelError, nothing else."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jsreplay.tunnel import DecoderConfig, Direction, TunnelDecoder, TunnelError

from .capture import Capture
from .frames import Peer, request_fields

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feed_all(chunks: list[tuple[Direction, bytes]], end: bool = True) -> None:
    decoder = TunnelDecoder(config=DecoderConfig(max_message_size=1 << 16))
    try:
        for direction, chunk in chunks:
            decoder.feed(direction, chunk)
        if end:
            for direction in Direction:
                decoder.end(direction)
    except TunnelError:
        pass


def _pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    out: list[bytes] = []
    pos = 0
    for size in itertools.cycle(sizes or [len(data) or 1]):
        if pos >= len(data):
            return out
        out.append(data[pos : pos + size])
        pos += size
    raise AssertionError("unreachable")


@FUZZ
@given(
    junk=st.binary(max_size=600),
    direction=st.sampled_from(Direction),
    valid_start=st.booleans(),
    sizes=st.lists(st.integers(1, 64), max_size=8),
)
def test_random_bytes(junk: bytes, direction: Direction, valid_start: bool, sizes: list[int]) -> None:
    data = (Peer(direction).start() if valid_start else b"") + junk
    _feed_all([(direction, piece) for piece in _pieces(data, sizes)])


_frames = st.builds(
    Peer.raw,
    st.integers(0, 12),
    st.integers(0, 255),
    st.sampled_from([0, 1, 2, 3, 5, 0x7FFFFFFF, 0x80000001]),
    st.one_of(st.binary(max_size=40), st.sampled_from([Peer(Direction.CLIENT_TO_EXPORTER).block(request_fields())])),
)


@FUZZ
@given(direction=st.sampled_from(Direction), frames=st.lists(_frames, max_size=12))
def test_random_frames(direction: Direction, frames: list[bytes]) -> None:
    _feed_all([(direction, Peer(direction).start())] + [(direction, frame) for frame in frames])


@FUZZ
@given(data=st.data())
def test_mutated_real_traffic(captured: Capture, data: st.DataObject) -> None:
    # The first chunks hold the preface, SETTINGS and many real HPACK blocks: the richest ground for mutations.
    chunks = captured.chunks[:40]
    flips = data.draw(
        st.lists(st.tuples(st.integers(0, len(chunks) - 1), st.integers(0, 1 << 16), st.integers(1, 255)), max_size=4)
    )
    mutated = [bytearray(chunk) for _, chunk in chunks]
    for index, position, xor in flips:
        mutated[index][position % len(mutated[index])] ^= xor
    _feed_all([(direction, bytes(chunk)) for (direction, _), chunk in zip(chunks, mutated, strict=True)], end=False)
