"""Decode bytes that a real grpc.aio client and server exchanged, and compare with what the client saw."""

from __future__ import annotations

import itertools

from jsreplay.tunnel import (
    CallAssembler,
    Direction,
    ErrorCode,
    InnerCall,
    RouterFrameType,
    TunnelDecoder,
    TunnelEnded,
    application_metadata,
    decode_tunnel,
)

from .capture import BIG, FAIL_DETAILS, SERVICE, Capture


def _by_call_id(calls: list[InnerCall]) -> dict[str, InnerCall]:
    out: dict[str, InnerCall] = {}
    for call in calls:
        call_id = dict(call.request_metadata)["x-call-id"]
        assert isinstance(call_id, str)
        out[call_id] = call
    return out


def test_every_call_matches_the_clients_view(captured: Capture) -> None:
    calls = decode_tunnel(captured.chunks)
    assert [call.stream_id for call in calls] == sorted(call.stream_id for call in calls)
    decoded = _by_call_id(calls)
    assert decoded.keys() == captured.calls.keys()
    for call_id, seen in captured.calls.items():
        call = decoded[call_id]
        assert call.method == seen.method, call_id
        assert call.authority is not None and call.authority.startswith("127.0.0.1:")
        assert application_metadata(call.request_metadata) == seen.request_metadata, call_id
        assert call.requests == seen.requests, call_id
        assert call.responses == seen.responses, call_id
        assert not any(m.compressed for m in call.request_messages + call.response_messages)
        if seen.cancelled:
            assert (call.reset, call.reset_by_client, call.code) == (ErrorCode.CANCEL, True, None), call_id
            continue
        assert call.reset is None, call_id
        assert call.request_ended, call_id
        assert call.code == seen.code, call_id
        assert call.details == seen.details, call_id
        assert application_metadata(call.response_metadata) == seen.initial_metadata, call_id
        assert application_metadata(call.trailing_metadata) == seen.trailing_metadata, call_id


def test_statuses_details_and_binary_metadata(captured: Capture) -> None:
    decoded = _by_call_id(decode_tunnel(captured.chunks))
    unary = decoded["u0"]
    assert dict(unary.request_metadata)["client-bin"] == b"\x01\x02\xff"
    assert dict(unary.trailing_metadata)["trail-bin"] == bytes(range(256))
    assert dict(unary.trailing_metadata)["empty-bin"] == b""
    assert unary.timeout is not None and 29 < unary.timeout <= 30
    assert (unary.code, unary.trailers_only, unary.http_status) == (0, False, 200)
    # Abort before any message: a trailers-only response, with non-ASCII and '%' in the details.
    failed = decoded["f0"]
    assert (failed.code, failed.details, failed.trailers_only) == (9, FAIL_DETAILS, True)
    assert failed.response_headers_seq is None and failed.http_status is None
    late = decoded["f1"]
    assert (late.code, late.details, late.trailers_only, late.responses) == (8, "late 50%", False, [b"first"])
    assert dict(late.trailing_metadata)["why-bin"] == "ünï".encode()


def test_large_messages_span_many_frames(captured: Capture) -> None:
    decoded = _by_call_id(decode_tunnel(captured.chunks))
    assert [len(r) for r in decoded["b1"].requests] == [BIG, 10]
    assert [len(r) for r in decoded["s9"].responses] == [BIG, BIG]
    # The relay saw the big messages in many reads, not one.
    assert max(len(chunk) for _, chunk in captured.chunks) < BIG


def test_concurrent_calls_are_kept_apart(captured: Capture) -> None:
    calls = decode_tunnel(captured.chunks)
    unary = [call for call in calls if call.method == f"/{SERVICE}/Unary"]
    assert len(unary) == 21
    # The burst really overlapped: some call opened before an earlier one closed.
    burst = [call for call in calls if call.opened_seq > _by_call_id(calls)["c0"].opened_seq]
    assert any(later.opened_seq < (earlier.closed_seq or 0) for earlier, later in itertools.pairwise(burst))


def test_seqs_give_causal_order(captured: Capture) -> None:
    decoded = _by_call_id(decode_tunnel(captured.chunks))
    sequential = [decoded[name] for name in ("u0", "s0", "b0", "f0", "f1", "c0")]
    for earlier, later in itertools.pairwise(sequential):
        assert earlier.closed_seq is not None and earlier.closed_seq < later.opened_seq
    # Bidi ping-pong: request i, then response i, then request i + 1.
    bidi = decoded["b0"]
    order = [m.seq for pair in zip(bidi.request_messages, bidi.response_messages, strict=True) for m in pair]
    assert order == sorted(order)
    assert bidi.request_ended_seq is not None and bidi.closed_seq is not None
    assert order[-1] < bidi.request_ended_seq < bidi.closed_seq


def test_router_frames_feed_data_and_end_on_goaway(captured: Capture) -> None:
    decoder = TunnelDecoder()
    assembler = CallAssembler()
    for direction, chunk in captured.chunks:
        assembler.add_all(decoder.feed_router_frame(direction, RouterFrameType.DATA, chunk))
        assembler.add_all(decoder.feed_router_frame(direction, RouterFrameType.PING, b""))
    for direction in Direction:
        assembler.add_all(decoder.feed_router_frame(direction, RouterFrameType.GOAWAY, b""))
    ends = [event for _, event in assembler.connection_events if isinstance(event, TunnelEnded)]
    assert ends == [TunnelEnded(by_client=True), TunnelEnded(by_client=False)]
    assert len(assembler.calls) == len(captured.calls)
