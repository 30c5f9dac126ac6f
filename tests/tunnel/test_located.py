"""Located messages (`DecoderConfig.locate_over`): a big message's spans read back to exactly the bytes a full
decode copies out, however the message is split across DATA frames, padded, interleaved or chunked."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jsreplay.tunnel import (
    CallAssembler,
    DecoderConfig,
    Direction,
    InnerCall,
    TunnelDecoder,
    TunnelError,
)

from .capture import Capture, pattern
from .frames import C2E, E2C, Peer, message, request_fields, response_fields

Chunks = list[tuple[Direction, bytes]]
STREAM = "/jumpstarter.v1.RouterService/Stream"


def read_spans(stream: bytes, spans: tuple[int, ...]) -> bytes:
    """A located message's bytes, from its direction's whole byte stream."""
    return b"".join(stream[spans[i] : spans[i + 1]] for i in range(0, len(spans), 2))


def decode(chunks: Chunks, config: DecoderConfig | None = None) -> list[InnerCall]:
    decoder = TunnelDecoder(config=config) if config is not None else TunnelDecoder()
    assembler = CallAssembler()
    for direction, data in chunks:
        assembler.add_all(decoder.feed(direction, data))
    return assembler.calls


def streams_of(chunks: Chunks) -> dict[Direction, bytes]:
    return {d: b"".join(data for direction, data in chunks if direction is d) for d in Direction}


def assert_located_reads_back(chunks: Chunks, locate_over: int) -> int:
    """Decode `chunks` in full and located; the calls must agree once each located message is read back from its
    direction's stream. Returns how many messages were located."""
    full = decode(chunks)
    located = decode(chunks, DecoderConfig(locate_over=locate_over))
    streams = streams_of(chunks)
    count = 0
    assert len(located) == len(full)
    for want, got in zip(full, located, strict=True):
        for name, direction in (("request_messages", C2E), ("response_messages", E2C)):
            restored = []
            for m in getattr(got, name):
                if m.spans:
                    count += 1
                    assert m.data == b""
                    assert len(read_spans(streams[direction], m.spans)) > locate_over
                    m = dataclasses.replace(m, data=read_spans(streams[direction], m.spans), spans=())
                else:
                    assert len(m.data) <= locate_over
                restored.append(m)
            got = dataclasses.replace(got, **{name: restored})
        assert got == want
    return count


def _tunnel() -> Chunks:
    """Two calls on interleaved streams: messages split across many DATA frames (padded or not), a prefix split
    between frames, empty and small messages between big ones, flow control in between."""
    client, server = Peer(C2E), Peer(E2C)
    big = [pattern(i, size) for i, size in enumerate((70_000, 100, 40_000, 0, 5, 131_072))]
    c2e = bytearray(client.start())
    e2c = bytearray(server.start())
    c2e += client.headers(1, request_fields(STREAM))
    c2e += client.headers(3, request_fields("/jumpstarter.v1.ExporterService/DriverCall"))
    stream1 = b"".join(message(data) for data in big)
    stream3 = message(b"small request") + message(pattern(9, 20_000), compressed=True)
    # Stream 1 in frames of varying size, some padded, interleaved with stream 3 and WINDOW_UPDATEs; the cut points
    # fall inside prefixes too (7 divides none of the message bounds).
    sizes = itertools.cycle((16_384, 7, 1, 5_003, 9_000, 2))
    pos1 = pos3 = 0
    turn = 0
    while pos1 < len(stream1) or pos3 < len(stream3):
        size = next(sizes)
        if pos1 < len(stream1):
            piece = stream1[pos1 : pos1 + size]
            pos1 += len(piece)
            pad = (turn * 13) % 40 if turn % 3 == 0 else None
            c2e += client.data(1, piece, pad=pad, end_stream=pos1 == len(stream1))
        if pos3 < len(stream3) and turn % 2:
            piece = stream3[pos3 : pos3 + 4_099]
            pos3 += len(piece)
            c2e += client.data(3, piece, pad=3, end_stream=pos3 == len(stream3))
        if turn % 5 == 0:
            c2e += client.window_update(0, 65_535)
        turn += 1
    e2c += server.headers(1, response_fields())
    e2c += server.headers(3, response_fields())
    replies = message(pattern(20, 50_000)) + message(b"") + message(pattern(21, 1_000_000))
    for i in range(0, len(replies), 16_384):
        e2c += server.data(1, replies[i : i + 16_384], pad=1 if i % 3 else None)
        if i % 2:
            e2c += server.ping()
    e2c += server.data(3, message(b"ok") + message(pattern(22, 30_000)))
    e2c += server.headers(3, [("grpc-status", "0")], end_stream=True)
    e2c += server.headers(1, [("grpc-status", "0")], end_stream=True)
    return [(C2E, bytes(c2e)), (E2C, bytes(e2c))]


def _chunked(chunks: Chunks, size: int) -> Chunks:
    """Each direction cut into `size`-byte pieces, the directions alternating."""
    pieces = {d: [s[i : i + size] for i in range(0, len(s), size)] for d, s in streams_of(chunks).items()}
    out: Chunks = []
    for c, e in itertools.zip_longest(pieces[C2E], pieces[E2C]):
        out += [(C2E, c)] if c is not None else []
        out += [(E2C, e)] if e is not None else []
    return out


@pytest.mark.parametrize("locate_over", [0, 99, 4096, 65_536])
@pytest.mark.parametrize("size", [1_000_000, 16_393, 4_096, 777])
def test_located_messages_read_back_exactly_whatever_the_chunking(locate_over: int, size: int) -> None:
    located = assert_located_reads_back(_chunked(_tunnel(), size), locate_over)
    assert located >= (2 if locate_over == 65_536 else 7)


PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(data=st.data())
def test_located_messages_read_back_at_any_cuts(data: st.DataObject) -> None:
    out: Chunks = []
    for direction, stream in streams_of(_tunnel()).items():
        cuts = sorted(set(data.draw(st.lists(st.integers(0, len(stream)), max_size=60), label=direction.value)))
        bounds = [0, *cuts, len(stream)]
        out += [(direction, stream[a:b]) for a, b in itertools.pairwise(bounds) if b > a]
    assert_located_reads_back(out, data.draw(st.sampled_from([0, 10, 30_000]), label="locate_over"))


def test_a_real_grpc_connection_reads_back(captured: Capture) -> None:
    # grpcio's own framing of a 1 MiB message and streams of smaller ones, as a relay recorded it.
    for locate_over in (0, 100, 16_384):
        assert assert_located_reads_back(captured.chunks, locate_over) > 0


def test_a_stream_ending_inside_a_located_message_is_the_same_error() -> None:
    client = Peer(C2E)
    data = client.start() + client.headers(1, request_fields(STREAM))
    data += client.data(1, message(pattern(1, 50_000))[:30_000], end_stream=True)
    errors = []
    for config in (DecoderConfig(), DecoderConfig(locate_over=1000)):
        with pytest.raises(TunnelError) as failed:
            TunnelDecoder(config=config).feed(C2E, data)
        errors.append(str(failed.value))
    assert errors[0] == errors[1] and "30000 bytes pending" in errors[0]


def test_a_reset_abandons_a_located_message() -> None:
    client, server = Peer(C2E), Peer(E2C)
    decoder = TunnelDecoder(config=DecoderConfig(locate_over=10))
    decoder.feed(E2C, server.start())
    decoder.feed(C2E, client.start() + client.headers(1, request_fields(STREAM)))
    assert decoder.feed(C2E, client.data(1, message(b"x" * 100)[:50])) == []
    events = decoder.feed(C2E, client.rst(1))
    assert [type(e).__name__ for e in events] == ["StreamReset"]


def test_locate_over_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="locate_over"):
        DecoderConfig(locate_over=-1)
