"""Big uploads kept as length and SHA-256 (issue 12): the recorder's elision, on tunnel bytes built frame by frame.

The tunnel is the client's side of an inner HTTP/2 connection (hyperframe frames, a real HPACK encoder) carrying a
unary call and a byte stream, cut into router messages at awkward places; what the recorder writes is decoded back
with the decoder replay and show use.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import click
import hpack
import pytest

from jsreplay.cassette.model import AnyEvent, Call, CallStart, ClientMessage, Role, ServerMessage, Status
from jsreplay.cli.options import parse_size
from jsreplay.protocol.registry import Registry
from jsreplay.protocol.wire import ROUTER_STREAM, STREAM_REQUEST, RouterFrameType
from jsreplay.record.elision import Elision, ElisionConfig
from jsreplay.replay.streams import ByteCheck, Elided
from jsreplay.session.tunnels import decode_router_call
from jsreplay.tunnel.elided import ElidedSummary, elided_frame, parse_elided
from tests.tunnel.frames import C2E, E2C, Peer, message, request_fields

REGISTRY = Registry.default()
REQUEST = REGISTRY.message_class(STREAM_REQUEST)
DATA = int(RouterFrameType.DATA)
UPLOAD = os.urandom(300_000)
CHUNK = 20_000  # bytes per StreamRequest of the upload


def stream_request(payload: bytes, frame_type: int = DATA) -> bytes:
    return REQUEST(payload=payload, frame_type=frame_type).SerializeToString()


def client_bytes(upload: bytes = UPLOAD, *, pad_every: int = 0) -> bytes:
    """A GetReport call, then a byte stream uploading `upload` (gRPC messages split over 16 KiB DATA frames, some
    padded) and its closing frame."""
    peer = Peer(C2E)
    out = peer.start()
    out += peer.headers(1, request_fields())
    out += peer.data(1, message(b""), end_stream=True)
    out += peer.headers(3, request_fields(ROUTER_STREAM, ("request", '{"kind":"resource","uuid":"u"}')))
    body = b"".join(message(stream_request(upload[i : i + CHUNK])) for i in range(0, len(upload), CHUNK)) + message(
        stream_request(b"", 2)
    )
    frames = [body[i : i + 16_000] for i in range(0, len(body), 16_000)]
    for index, piece in enumerate(frames):
        pad = 7 if pad_every and index % pad_every == 0 else None
        out += peer.data(3, piece, end_stream=index == len(frames) - 1, pad=pad)
    return out


def record(data: bytes, cut: int, config: ElisionConfig) -> tuple[list[AnyEvent], Elision]:
    elision = Elision.for_registry(config, REGISTRY)
    events: list[AnyEvent] = []
    seq = 0

    def submit(event: AnyEvent) -> None:
        events.extend(elision.submit(event))

    submit(CallStart(call_id=1, seq=seq, t_ns=0, method=ROUTER_STREAM, role=Role.ROUTER))
    for i in range(0, len(data), cut):
        seq += 1
        submit(ClientMessage(call_id=1, seq=seq, t_ns=seq, data=stream_request(data[i : i + cut])))
    submit(Status(call_id=1, seq=seq + 1, t_ns=seq + 1, code=0))
    events.extend(elision.flush())
    return events, elision


def decoded(events: list[AnyEvent]):  # type: ignore[no-untyped-def]
    start = events[0]
    assert isinstance(start, CallStart)
    tunnel = decode_router_call(Call(start=start, events=tuple(events[1:])), REGISTRY)
    assert tunnel.error is None, tunnel.error
    return {call.stream_id: call for call in tunnel.calls}


def upload_of(call) -> bytes:  # type: ignore[no-untyped-def]
    payloads = [REQUEST.FromString(m) for m in call.requests]
    return b"".join(p.payload for p in payloads if p.frame_type == DATA)


def test_summary_frame_round_trip_and_errors() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    for summary in (ElidedSummary(5, False), ElidedSummary(1 << 40, True, digest)):
        frame = elided_frame(3, summary)
        assert parse_elided(frame[9:]) == summary
    with pytest.raises(ValueError, match="needs at least"):
        parse_elided(b"\x01")
    with pytest.raises(ValueError, match="version 9"):
        parse_elided(b"\x09\x00" + bytes(8))
    with pytest.raises(ValueError, match="flags 0x2 say 42"):
        parse_elided(b"\x01\x02" + bytes(8))


@pytest.mark.parametrize("cut", [7, 1000, 16_397, 70_000])
@pytest.mark.parametrize("pad_every", [0, 3])
def test_an_upload_above_the_threshold_is_kept_as_length_and_digest(cut: int, pad_every: int) -> None:
    events, elision = record(client_bytes(pad_every=pad_every), cut, ElisionConfig(threshold=100_000))
    calls = decoded(events)
    assert calls[1].method == "/jumpstarter.v1.ExporterService/GetReport" and calls[1].requests == [b""]
    upload = calls[3]
    assert upload.requests == [] and upload.request_ended  # nothing of it kept, its END_STREAM kept
    final = upload.elided[-1]
    assert (final.length, final.closed, final.sha256) == (len(UPLOAD), True, hashlib.sha256(UPLOAD).hexdigest())
    assert [m.length for m in upload.elided] == sorted(m.length for m in upload.elided)  # progress, in order
    written = sum(len(e.data) for e in events if isinstance(e, ClientMessage))
    assert written < 20_000 < len(UPLOAD)
    assert elision.elided_streams == 1


@pytest.mark.parametrize("cut", [7, 16_397])
def test_an_upload_below_the_threshold_is_written_byte_for_byte(cut: int) -> None:
    data = client_bytes()
    events, elision = record(data, cut, ElisionConfig(threshold=len(UPLOAD)))
    written = b"".join(REQUEST.FromString(e.data).payload for e in events if isinstance(e, ClientMessage))
    assert written == data
    assert upload_of(decoded(events)[3]) == UPLOAD
    assert elision.elided_streams == 0


def test_no_threshold_keeps_everything() -> None:
    data = client_bytes()
    events, _ = record(data, 5000, ElisionConfig(threshold=None))
    assert upload_of(decoded(events)[3]) == UPLOAD


@pytest.mark.parametrize("cut", [7, 1000, 16_397])
def test_an_upload_that_passes_the_threshold_after_the_hold_keeps_its_start(cut: int) -> None:
    # The hold runs out (a few KiB) long before the upload passes 100 kB: its first bytes are written, the rest is
    # elided from a gRPC message boundary on, and the digest covers all of it.
    events, _ = record(client_bytes(), cut, ElisionConfig(threshold=100_000, hold_bytes=4096))
    upload = decoded(events)[3]
    kept = upload_of(upload)
    assert 100_000 <= len(kept) < len(UPLOAD) and UPLOAD.startswith(kept)
    final = upload.elided[-1]
    assert (final.length, final.sha256) == (len(UPLOAD), hashlib.sha256(UPLOAD).hexdigest())
    # Replay's check: the kept start byte by byte, the rest by the digest.
    elided = Elided(final.length, final.sha256, kept=len(kept))
    same = ByteCheck([kept], elided)
    assert all(same.feed(UPLOAD[i : i + 4096]) is None for i in range(0, len(UPLOAD), 4096)) and same.end() is None
    early = bytearray(UPLOAD)
    early[1000] ^= 1
    check = ByteCheck([kept], elided)
    found = next(d for i in range(0, len(early), 4096) if (d := check.feed(bytes(early[i : i + 4096]))))
    assert found.offset == 1000  # in the kept part: the exact byte
    late = bytearray(UPLOAD)
    late[-10] ^= 1
    check = ByteCheck([kept], elided)
    assert all(check.feed(bytes(late[i : i + 4096])) is None for i in range(0, len(late), 4096))
    ended = check.end()
    assert ended is not None and "SHA-256" in str(ended)


def test_a_tunnel_that_is_not_http2_is_recorded_as_it_came() -> None:
    garbage = os.urandom(50_000)
    events, _ = record(garbage, 999, ElisionConfig(threshold=10))
    written = b"".join(REQUEST.FromString(e.data).payload for e in events if isinstance(e, ClientMessage))
    assert written == garbage


def test_a_cut_recording_has_no_digest_and_replay_says_it_cannot_check() -> None:
    data = client_bytes()
    cut_at = len(data) * 2 // 3
    events, _ = record(data[:cut_at], 5000, ElisionConfig(threshold=50_000))
    upload = decoded(events)[3]
    assert upload.elided and upload.elided[-1].sha256 is None


def test_sizes_on_the_command_line() -> None:
    assert parse_size("16MiB", what="--elide-above") == 16 << 20
    assert parse_size("512 KiB", what="x") == 512 << 10 and parse_size("20000000", what="x") == 20_000_000
    assert parse_size("1GiB", what="x") == 1 << 30 and parse_size("2mb", what="x") == 2_000_000
    for bad in ("12XB", "-1", "1.5MiB", ""):
        with pytest.raises(click.BadParameter, match="is not a size"):
            parse_size(bad, what="--elide-above")
    done = subprocess.run(
        [sys.executable, "-m", "jsreplay", "record", "--upstream", "127.0.0.1:1", "--cassette", "x.msgpack",
         "--elide-above", "12XB"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--elide-above: '12XB' is not a size" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_stream_the_exporter_answers_is_written_without_waiting() -> None:
    # A console or a download: the exporter sends on the stream, so it is no upload; the hold ends there.
    response = REGISTRY.message_class("jumpstarter.v1.StreamResponse")
    elision = Elision.for_registry(ElisionConfig(threshold=1 << 20, hold_seconds=3600), REGISTRY)
    client, exporter = Peer(C2E), Peer(E2C)
    opened = (
        client.start()
        + client.headers(3, request_fields(ROUTER_STREAM))
        + client.data(3, message(stream_request(b"x")))
    )
    written = elision.submit(CallStart(call_id=1, seq=0, t_ns=0, method=ROUTER_STREAM, role=Role.ROUTER))
    written += elision.submit(ClientMessage(call_id=1, seq=1, t_ns=1, data=stream_request(opened)))
    assert elision.holding and len(written) == 1  # the stream's fate is open: its bytes wait
    answer = exporter.start() + exporter.data(3, message(b"y"))
    reply = response(payload=answer, frame_type=DATA).SerializeToString()
    written += elision.submit(ServerMessage(call_id=1, seq=2, t_ns=2, data=reply))
    assert not elision.holding and [e.seq for e in written] == [0, 1, 2]


@pytest.mark.parametrize("cut", [7, 1000])
def test_router_frames_keep_their_cuts_when_nothing_is_elided(cut: int) -> None:
    # Frames are re-cut only where a stream is elided: otherwise every message is written as it came.
    data = client_bytes()
    events, _ = record(data, cut, ElisionConfig(threshold=len(UPLOAD) + 1))
    chunks = [REQUEST.FromString(e.data).payload for e in events if isinstance(e, ClientMessage)]
    assert chunks == [data[i : i + cut] for i in range(0, len(data), cut)]


def test_an_upload_seen_at_both_ends_of_its_tunnel_counts_once() -> None:
    response = REGISTRY.message_class("jumpstarter.v1.StreamResponse")
    elision = Elision.for_registry(ElisionConfig(threshold=100_000), REGISTRY)
    token = (("authorization", "Bearer t-1"),)
    data = client_bytes()
    for call_id in (1, 2):  # the client's end (sends), then the exporter's (receives)
        elision.submit(
            CallStart(call_id=call_id, seq=0, t_ns=0, method=ROUTER_STREAM, role=Role.ROUTER, metadata=token)
        )
    for seq, i in enumerate(range(0, len(data), 9000), start=1):
        chunk = data[i : i + 9000]
        elision.submit(ClientMessage(call_id=1, seq=2 * seq, t_ns=0, data=stream_request(chunk)))
        reply = response(payload=chunk, frame_type=DATA).SerializeToString()
        elision.submit(ServerMessage(call_id=2, seq=2 * seq + 1, t_ns=0, data=reply))
    elision.flush()
    assert elision.elided_streams == 1
    assert len(UPLOAD) < elision.elided_bytes < len(UPLOAD) * 1.01  # the DATA frames' bytes, once


def test_an_elided_upload_the_scanner_loses_has_no_digest() -> None:
    # A compressed message after the stream was elided: the bytes after it cannot be hashed, so the recording
    # must not claim a digest for the whole upload (replay then lists it as not checked, never as different).
    peer = Peer(C2E)
    data = peer.start() + peer.headers(3, request_fields(ROUTER_STREAM))
    body = b"".join(message(stream_request(UPLOAD[i : i + CHUNK])) for i in range(0, len(UPLOAD), CHUNK))
    body += message(b"\x00" * 10, compressed=True)
    frames = [body[i : i + 16_000] for i in range(0, len(body), 16_000)]
    for index, piece in enumerate(frames):
        data += peer.data(3, piece, end_stream=index == len(frames) - 1)
    events, _ = record(data, 5000, ElisionConfig(threshold=100_000))
    upload = decoded(events)[3]
    assert upload.elided and all(mark.sha256 is None for mark in upload.elided)


def test_frames_after_an_elided_upload_ended_keep_their_cuts_again() -> None:
    data = client_bytes()
    tail = Peer(C2E)
    tail.encoder = hpack.Encoder()
    extra = tail.headers(5, [(":method", "POST"), (":path", "/x.Y/Z")], end_stream=True)  # a literal block
    events, _ = record(data + extra, 7, ElisionConfig(threshold=100_000))
    chunks = [REQUEST.FromString(e.data).payload for e in events if isinstance(e, ClientMessage)]
    sent = [(data + extra)[i : i + 7] for i in range(0, len(data + extra), 7)]
    whole = len(extra) // 7 - 1  # messages wholly inside the tail
    assert chunks[-whole:-1] == sent[-whole:-1]
    # The upload's last ELIDED frame (its digest) goes in at the first frame boundary after its END_STREAM: the end.
    assert chunks[-1].startswith(sent[-1]) and chunks[-1][len(sent[-1]) + 3] == 0xE7
