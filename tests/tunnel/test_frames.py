"""Hand-built frames: every HTTP/2 feature the decoder handles, and the errors it reports."""

from __future__ import annotations

import base64

import pytest
from hyperframe.frame import SettingsFrame

from jsreplay.tunnel import (
    CallAssembler,
    ConnectionClosed,
    DecoderConfig,
    Direction,
    ErrorCode,
    GrpcProtocolError,
    RequestEnded,
    RequestHeaders,
    RequestMessage,
    ResponseHeaders,
    ResponseMessage,
    ResponseTrailers,
    RouterFrameType,
    StreamReset,
    TunnelDecoder,
    TunnelEnded,
    TunnelError,
    TunnelEvent,
    TunnelLimitError,
    TunnelProtocolError,
)

from .frames import C2E, E2C, Peer, message, request_fields, response_fields

GET_REPORT = "/jumpstarter.v1.ExporterService/GetReport"


class Conn:
    """A decoder plus the two peers' frame factories, already past the preface and SETTINGS."""

    def __init__(self, decoder: TunnelDecoder | None = None) -> None:
        self.decoder = decoder or TunnelDecoder()
        self.client = Peer(C2E)
        self.server = Peer(E2C)
        self.sent = {C2E: 0, E2C: 0}  # bytes fed so far, per direction
        assert self.c(self.client.start()) == []
        assert self.s(self.server.start()) == []

    def c(self, data: bytes) -> list[TunnelEvent]:
        self.sent[C2E] += len(data)
        return self.decoder.feed(C2E, data)

    def s(self, data: bytes) -> list[TunnelEvent]:
        self.sent[E2C] += len(data)
        return self.decoder.feed(E2C, data)

    def c_bytewise(self, data: bytes) -> list[TunnelEvent]:
        return [event for i in range(len(data)) for event in self.c(data[i : i + 1])]

    def open(self, stream_id: int = 1, *extra: tuple[str, str]) -> None:
        self.c(self.client.headers(stream_id, request_fields(GET_REPORT, *extra)))


@pytest.fixture
def conn() -> Conn:
    return Conn()


# What decodes ----------------------------------------------------------------------------------------------------


def test_unary_call(conn: Conn) -> None:
    events = conn.c(
        conn.client.headers(1, request_fields(GET_REPORT, ("grpc-timeout", "250m"), ("x-id", "7")))
        + conn.client.data(1, message(b"req"), end_stream=True)
    )
    assert events == [
        RequestHeaders(
            stream_id=1,
            method=GET_REPORT,
            authority="exporter",
            timeout=0.25,
            metadata=(("content-type", "application/grpc"), ("te", "trailers"), ("x-id", "7")),
        ),
        RequestMessage(stream_id=1, data=b"req", compressed=False),
        RequestEnded(stream_id=1),
    ]
    events = conn.s(
        conn.server.headers(1, response_fields(("x-initial", "i")))
        + conn.server.data(1, message(b"resp"))
        + conn.server.headers(1, [("grpc-status", "0"), ("x-trailer", "t")], end_stream=True)
    )
    assert events == [
        ResponseHeaders(
            stream_id=1, http_status=200, metadata=(("content-type", "application/grpc"), ("x-initial", "i"))
        ),
        ResponseMessage(stream_id=1, data=b"resp", compressed=False),
        ResponseTrailers(stream_id=1, code=0, details="", metadata=(("x-trailer", "t"),), trailers_only=False),
    ]


def test_header_block_across_continuations_fed_bytewise(conn: Conn) -> None:
    fields = request_fields(GET_REPORT, *[(f"x-key-{i}", "v" * 50) for i in range(40)])
    events = conn.c_bytewise(conn.client.headers(1, fields, end_stream=True, split=3))
    assert [type(event) for event in events] == [RequestHeaders, RequestEnded]
    assert isinstance(events[0], RequestHeaders)
    assert dict(events[0].metadata)["x-key-39"] == "v" * 50


def test_padding_and_priority(conn: Conn) -> None:
    events = conn.c(conn.client.headers(1, request_fields(), pad=17, priority=0))
    events += conn.c(conn.client.headers(3, request_fields(), pad=0))
    events += conn.c(conn.client.data(1, message(b"padded"), pad=200) + conn.client.data(3, b"", pad=3))
    assert [(type(e), e.stream_id) for e in events if not isinstance(e, ConnectionClosed | TunnelEnded)] == [
        (RequestHeaders, 1),
        (RequestHeaders, 3),
        (RequestMessage, 1),
    ]
    assert conn.c(conn.client.priority(5, depends_on=1)) == []


def test_messages_split_and_packed_across_data_frames(conn: Conn) -> None:
    conn.open()
    wire = message(b"a" * 100) + message(b"") + message(b"b" * 10, compressed=True)
    # One message over three frames, then two messages in one frame.
    frames = [wire[:40], wire[40:90], wire[90:]]
    events = [event for part in frames for event in conn.c(conn.client.data(1, part))]
    assert events == [
        RequestMessage(stream_id=1, data=b"a" * 100, compressed=False),
        RequestMessage(stream_id=1, data=b"", compressed=False),
        RequestMessage(stream_id=1, data=b"b" * 10, compressed=True),
    ]


def test_connection_noise_yields_nothing(conn: Conn) -> None:
    conn.open()
    noise = (
        conn.client.ping()
        + conn.client.settings_ack()
        + conn.client.window_update(0)
        + conn.client.window_update(1)
        + conn.client.priority(1)
        + Peer.raw(0x42, 0xFF, 2, b"unknown frame types are ignored")
        + conn.client.start()[len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") :]
    )
    assert conn.c_bytewise(noise) == []
    assert conn.s(conn.server.ping(ack=True) + conn.server.window_update(0, 1 << 20)) == []


def test_rst_stream_and_in_flight_frames(conn: Conn) -> None:
    conn.open()
    conn.s(conn.server.headers(1, response_fields()))
    assert conn.c(conn.client.rst(1)) == [StreamReset(stream_id=1, error_code=ErrorCode.CANCEL, by_client=True)]
    # The exporter had not seen the reset yet: its frames on the stream are still on the wire.
    events = conn.s(conn.server.data(1, message(b"late")) + conn.server.rst(1, ErrorCode.NO_ERROR))
    assert events == [
        ResponseMessage(stream_id=1, data=b"late", compressed=False),
        StreamReset(stream_id=1, error_code=0, by_client=False),
    ]
    # A window update after the client's reset is tolerated; new data is not.
    assert conn.c(conn.client.window_update(1)) == []
    with pytest.raises(TunnelProtocolError, match="DATA on a stream this side already closed"):
        conn.c(conn.client.data(1, message(b"x")))


def test_goaway(conn: Conn) -> None:
    events = conn.s(conn.server.goaway(7, ErrorCode.ENHANCE_YOUR_CALM, b"too_many_pings"))
    assert events == [ConnectionClosed(error_code=11, last_stream_id=7, debug_data=b"too_many_pings", by_client=False)]
    # GOAWAY is graceful: the connection still carries frames afterwards.
    conn.open(1)


def test_dynamic_table_size_update(conn: Conn) -> None:
    conn.open(1, ("x-indexed", "first"))
    conn.client.encoder.header_table_size = 256  # the next block starts with a size update
    events = conn.c(conn.client.headers(3, request_fields(GET_REPORT, ("x-indexed", "second"))))
    conn.client.encoder.header_table_size = 0
    events += conn.c(conn.client.headers(5, request_fields(GET_REPORT, ("x-indexed", "third"))))
    assert [dict(e.metadata)["x-indexed"] for e in events if isinstance(e, RequestHeaders)] == ["second", "third"]


def test_table_size_update_above_the_limit_is_refused() -> None:
    conn = Conn(TunnelDecoder(config=DecoderConfig(max_header_table_size=4096)))
    conn.client.encoder.header_table_size = 8192
    with pytest.raises(TunnelProtocolError, match="HPACK") as info:
        conn.open()
    assert info.value.error_code == ErrorCode.COMPRESSION_ERROR


def test_hpack_state_is_per_direction(conn: Conn) -> None:
    # Both sides index the same name into their own dynamic tables; one shared table would mix them up.
    for stream_id in (1, 3, 5):
        conn.c(conn.client.headers(stream_id, request_fields(GET_REPORT, ("shared", f"c{stream_id}"))))
        events = conn.s(conn.server.headers(stream_id, response_fields(("shared", f"s{stream_id}"))))
        assert isinstance(events[0], ResponseHeaders)
        assert dict(events[0].metadata)["shared"] == f"s{stream_id}"


def test_same_header_block_bytes_decode_by_each_tables_entries() -> None:
    # Decoded header blocks are reused across connections (see HeaderBlockCache): a block that only refers to
    # dynamic table entries must still read each connection's own entries.
    seen = []
    for value in ("one", "two", "one"):
        conn = Conn()
        first = conn.client.headers(1, request_fields(GET_REPORT, ("x-run", value)))
        again = conn.client.headers(3, request_fields(GET_REPORT, ("x-run", value)))
        conn.c(first)
        (event,) = conn.c(again)
        assert isinstance(event, RequestHeaders)
        seen.append((again, dict(event.metadata)["x-run"]))
    assert seen[0][0] == seen[1][0] == seen[2][0]  # the same bytes every time...
    assert [value for _, value in seen] == ["one", "two", "one"]  # ...read against different tables


def test_trailers_only_response_with_percent_encoded_details(conn: Conn) -> None:
    conn.open()
    fields = [*response_fields(), ("grpc-status", "5"), ("grpc-message", "nicht gefunden: 100%25 %C3%BC %zz")]
    events = conn.s(conn.server.headers(1, fields, end_stream=True))
    assert events == [
        ResponseTrailers(
            stream_id=1,
            code=5,
            details="nicht gefunden: 100% ü %zz",
            metadata=(("content-type", "application/grpc"),),
            trailers_only=True,
        )
    ]


def test_status_without_grpc_status_follows_http_mapping(conn: Conn) -> None:
    conn.open(1)
    conn.open(3)
    events = conn.s(conn.server.headers(1, [(":status", "503")], end_stream=True))
    events += conn.s(conn.server.headers(3, response_fields()) + conn.server.headers(3, [], end_stream=True))
    assert [(e.code, e.trailers_only) for e in events if isinstance(e, ResponseTrailers)] == [(14, True), (2, False)]


def test_binary_metadata_forms(conn: Conn) -> None:
    values = [base64.b64encode(b"\x00padded").decode(), base64.b64encode(b"\xffx").decode().rstrip("=")]
    events = conn.c(
        conn.client.headers(
            1,
            request_fields(
                GET_REPORT,
                ("joined-bin", ", ".join(values)),
                ("raw-bin", "\x00true binary"),  # grpc core's NUL-prefixed form
                ("latin", "caf\xe9"),
            ),
        )
    )
    assert isinstance(events[0], RequestHeaders)
    metadata = events[0].metadata
    assert [value for name, value in metadata if name == "joined-bin"] == [b"\x00padded", b"\xffx"]
    assert dict(metadata)["raw-bin"] == b"true binary"


def test_non_utf8_header_value_falls_back_to_latin1(conn: Conn) -> None:
    block = conn.client.block([*request_fields(), (b"x-latin", b"caf\xe9")])
    events = conn.c(Peer.raw(0x1, 0x4, 1, block))
    assert isinstance(events[0], RequestHeaders)
    assert dict(events[0].metadata)["x-latin"] == "café"


def test_request_trailers_end_the_request(conn: Conn) -> None:
    conn.open()
    events = conn.c(conn.client.data(1, message(b"x")) + conn.client.headers(1, [("x-ignored", "1")], end_stream=True))
    assert events == [RequestMessage(stream_id=1, data=b"x", compressed=False), RequestEnded(stream_id=1)]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1H", 3600.0), ("2M", 120.0), ("3S", 3.0), ("4m", 0.004), ("5u", 5e-6), ("99999999n", 0.099999999)],
)
def test_timeouts(conn: Conn, value: str, seconds: float) -> None:
    events = conn.c(conn.client.headers(1, request_fields(GET_REPORT, ("grpc-timeout", value))))
    assert isinstance(events[0], RequestHeaders)
    assert events[0].timeout == pytest.approx(seconds)


def test_out_of_causal_order_feeding_still_assembles(conn: Conn) -> None:
    # The exporter's answer is fed before the client's request: directions are decoded independently.
    assembler = CallAssembler()
    assembler.add_all(conn.s(conn.server.headers(1, response_fields()) + conn.server.data(1, message(b"r"))))
    assert assembler.calls[0].method is None
    assembler.add_all(conn.c(conn.client.headers(1, request_fields(), end_stream=True)))
    assembler.add_all(conn.s(conn.server.headers(1, [("grpc-status", "0")], end_stream=True)))
    (call,) = assembler.calls
    assert (call.method, call.responses, call.code, call.request_ended) == (GET_REPORT, [b"r"], 0, True)


def test_first_reset_wins() -> None:
    assembler = CallAssembler()
    assembler.add_all(
        [
            StreamReset(stream_id=1, error_code=8, by_client=True),
            StreamReset(stream_id=1, error_code=0, by_client=False),
        ]
    )
    (call,) = assembler.calls
    assert (call.reset, call.reset_by_client, call.closed_seq, call.finished) == (8, True, 0, True)


# Router frames and the end of the byte stream ----------------------------------------------------------------------


def test_router_frames() -> None:
    decoder = TunnelDecoder()
    client = Peer(C2E)
    assert decoder.feed_router_frame(C2E, RouterFrameType.DATA, client.start()) == []
    assert decoder.feed_router_frame(C2E, RouterFrameType.PING, b"ignored") == []
    assert decoder.feed_router_frame(C2E, RouterFrameType.RST_STREAM, b"ignored") == []
    assert decoder.feed_router_frame(C2E, 42, b"ignored") == []
    assert decoder.feed_router_frame(C2E, RouterFrameType.GOAWAY, b"") == [TunnelEnded(by_client=True)]
    assert decoder.feed_router_frame(C2E, RouterFrameType.GOAWAY, b"") == []
    assert decoder.feed_router_frame(C2E, RouterFrameType.DATA, b"") == []
    with pytest.raises(TunnelProtocolError, match="after the end"):
        decoder.feed_router_frame(C2E, RouterFrameType.DATA, b"more")
    # An exporter that never sent a byte may end too.
    assert decoder.end(E2C) == [TunnelEnded(by_client=False)]


def test_end_inside_a_frame_is_an_error(conn: Conn) -> None:
    conn.c(conn.client.headers(1, request_fields())[:5])
    with pytest.raises(TunnelProtocolError, match="ended inside a frame"):
        conn.decoder.end(C2E)


def test_end_inside_the_preface_is_an_error() -> None:
    decoder = TunnelDecoder()
    decoder.feed(C2E, b"PRI * HT")
    with pytest.raises(TunnelProtocolError, match="inside the connection preface"):
        decoder.end(C2E)


# Errors --------------------------------------------------------------------------------------------------------


def _fails(conn: Conn, direction: Direction, data: bytes, kind: type[TunnelError], match: str) -> TunnelError:
    feed = conn.c if direction is C2E else conn.s
    with pytest.raises(kind, match=match) as info:
        feed(data)
    return info.value


def test_error_names_direction_offset_and_frame(conn: Conn) -> None:
    conn.open()
    offset = conn.sent[C2E]
    good = conn.client.data(1, message(b"ok"))
    err = _fails(conn, C2E, good + Peer.raw(0x0, 0, 3, b"x"), TunnelProtocolError, "DATA before HEADERS")
    assert str(err) == (
        f"client_to_exporter: byte {offset + len(good)}: DATA frame (stream 3, 1 bytes, flags 0x0): DATA before HEADERS"
    )
    assert (err.direction, err.offset) == (C2E, offset + len(good))
    # What the same feed decoded before the bad frame is kept on the error.
    assert err.events == (RequestMessage(stream_id=1, data=b"ok", compressed=False),)


def test_direction_refuses_input_after_an_error(conn: Conn) -> None:
    err = _fails(conn, C2E, Peer.raw(0x9, 0x4, 1, b""), TunnelProtocolError, "CONTINUATION without")
    with pytest.raises(TunnelProtocolError) as again:
        conn.c(conn.client.ping())
    assert again.value is err and again.value.events == ()
    with pytest.raises(TunnelProtocolError):
        conn.decoder.end(C2E)
    # The other direction is unaffected.
    assert conn.s(conn.server.ping()) == []


def test_bad_preface() -> None:
    decoder = TunnelDecoder()
    with pytest.raises(TunnelProtocolError, match="byte 0: expected the HTTP/2 connection preface"):
        decoder.feed(C2E, b"GET / HTTP/1.1\r\n")


def test_first_frame_must_be_settings() -> None:
    decoder = TunnelDecoder()
    with pytest.raises(TunnelProtocolError, match="first frame must be SETTINGS"):
        decoder.feed(E2C, Peer.ping())
    with pytest.raises(TunnelProtocolError, match="first frame must be SETTINGS"):
        decoder.feed(C2E, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + Peer.settings_ack())


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        (SettingsFrame.MAX_FRAME_SIZE, 100),
        (SettingsFrame.INITIAL_WINDOW_SIZE, 2**31),
        (SettingsFrame.ENABLE_PUSH, 2),
        (SettingsFrame.ENABLE_CONNECT_PROTOCOL, 5),
    ],
)
def test_invalid_settings(setting: int, value: int) -> None:
    with pytest.raises(TunnelProtocolError, match="invalid SETTINGS"):
        TunnelDecoder().feed(E2C, Peer(E2C).start({setting: value}))


def test_server_may_not_enable_push() -> None:
    with pytest.raises(TunnelProtocolError, match="ENABLE_PUSH"):
        TunnelDecoder().feed(E2C, Peer(E2C).start({SettingsFrame.ENABLE_PUSH: 1}))


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda p: p.headers(3, request_fields()) + p.headers(1, request_fields()), "stream ids must increase"),
        (lambda p: p.headers(2, request_fields()), "even stream id"),
        (lambda p: p.headers(1, request_fields(), end_stream=True) + p.data(1, b""), "already closed"),
        (lambda p: Peer.raw(0x1, 0x0, 1, p.block(request_fields())) + p.ping(), "expected CONTINUATION"),
        (lambda p: Peer.raw(0x1, 0x0, 1, b"") + Peer.raw(0x9, 0x4, 3, b""), "expected CONTINUATION"),
        (lambda p: p.rst(5), "RST_STREAM on an idle stream"),
        (lambda p: p.window_update(5), "WINDOW_UPDATE on an idle stream"),
        (lambda p: p.priority(3, depends_on=3), "depends on itself"),
        (lambda p: p.headers(1, [(":path", "/x")]), "request without :method"),
        (lambda p: p.headers(1, [*request_fields(), (":status", "200")]), "pseudo-header"),
        (lambda p: p.headers(1, [("x", "1"), *request_fields()]), "after a regular header"),
        (lambda p: p.headers(1, [*request_fields(), ("X-Upper", "1")]), "not lowercase"),
        (lambda p: p.headers(1, [*request_fields(), ("connection", "close")]), "connection-specific"),
        (lambda p: p.headers(1, [*request_fields(), ("te", "gzip")]), "connection-specific"),
        (lambda p: Peer.raw(0x1, 0x4, 1, b"\xff\xff\xff\xff"), "HPACK"),
        (lambda p: Peer.raw(0x1, 0x4 | 0x8 | 0x20, 1, b"\x03" + bytes(5)), "padding longer than the frame"),
        (lambda p: Peer.raw(0x0, 0x8, 1, b"\x09abc"), "malformed frame"),
        (lambda p: Peer.raw(0x6, 0, 0, b"short"), "malformed frame"),
        (lambda p: Peer.raw(0x5, 0x4, 1, bytes(4)), "malformed frame|PUSH_PROMISE"),
        (lambda p: Peer.raw(0x5, 0x4, 1, b"\x00\x00\x00\x02"), "PUSH_PROMISE"),
    ],
)
def test_client_protocol_errors(conn: Conn, build: object, match: str) -> None:
    assert callable(build)
    _fails(conn, C2E, build(conn.client), TunnelProtocolError, match)


@pytest.mark.parametrize(
    ("build", "kind", "match"),
    [
        (lambda p: p.data(1, message(b"x")), TunnelProtocolError, "DATA before HEADERS"),
        (lambda p: p.headers(1, [(":status", "ok")]), TunnelProtocolError, ":status"),
        (lambda p: p.headers(1, [(":status", "200"), (":path", "/")]), TunnelProtocolError, ":status"),
        (
            lambda p: p.headers(1, response_fields()) + p.headers(1, [(":status", "200")], end_stream=True),
            TunnelProtocolError,
            "pseudo-headers in trailers",
        ),
        (
            lambda p: p.headers(1, response_fields()) + p.headers(1, [("grpc-status", "0")]),
            TunnelProtocolError,
            "without END_STREAM",
        ),
        (
            lambda p: p.headers(1, response_fields(), end_stream=True) + p.headers(1, response_fields()),
            TunnelProtocolError,
            "already closed",
        ),
        (lambda p: p.rst(1) + p.headers(1, response_fields()), TunnelProtocolError, "already closed"),
        (
            lambda p: p.headers(1, response_fields()) + p.data(1, message(b"x"), end_stream=True),
            GrpcProtocolError,
            "without trailers",
        ),
        (
            lambda p: p.headers(1, response_fields()) + p.data(1, b"\x02\x00\x00\x00\x00"),
            GrpcProtocolError,
            "compressed-flag 2",
        ),
        (
            lambda p: (
                p.headers(1, response_fields())
                + p.data(1, message(b"abc")[:-1])
                + p.headers(1, [("grpc-status", "0")], end_stream=True)
            ),
            GrpcProtocolError,
            "inside a gRPC message",
        ),
        (
            lambda p: p.headers(1, [*response_fields(), ("grpc-status", "OK")], end_stream=True),
            GrpcProtocolError,
            "invalid grpc-status",
        ),
        (
            lambda p: p.headers(1, [*response_fields(), ("x-bin", "not base64!")]),
            GrpcProtocolError,
            "invalid base64",
        ),
    ],
)
def test_exporter_errors(conn: Conn, build: object, kind: type[TunnelError], match: str) -> None:
    assert callable(build)
    conn.open()
    _fails(conn, E2C, build(conn.server), kind, match)


def test_client_grpc_errors(conn: Conn) -> None:
    _fails(
        conn,
        C2E,
        conn.client.headers(1, request_fields(GET_REPORT, ("grpc-timeout", "1 second"))),
        GrpcProtocolError,
        "invalid grpc-timeout",
    )
    other = Conn()
    other.open()
    _fails(other, C2E, other.client.data(1, message(b"abc")[:-1], end_stream=True), GrpcProtocolError, "inside")


# Limits --------------------------------------------------------------------------------------------------------


def test_frame_size_limit_is_checked_from_the_header_alone() -> None:
    conn = Conn(TunnelDecoder(config=DecoderConfig(max_frame_size=1000)))
    conn.open()
    err = _fails(conn, C2E, conn.client.data(1, bytes(2000))[:9], TunnelLimitError, "frame larger than")
    assert err.error_code == ErrorCode.FRAME_SIZE_ERROR


def test_message_size_limit_is_checked_from_the_prefix_alone() -> None:
    conn = Conn(TunnelDecoder(config=DecoderConfig(max_message_size=100)))
    conn.open()
    _fails(conn, C2E, conn.client.data(1, message(bytes(101))[:5]), TunnelLimitError, "exceeds the limit")


def test_header_block_and_list_limits() -> None:
    conn = Conn(TunnelDecoder(config=DecoderConfig(max_header_block_size=200)))
    fields = request_fields(GET_REPORT, *[(f"x-{i}", "v" * 40) for i in range(10)])
    _fails(conn, C2E, conn.client.headers(1, fields, split=4), TunnelLimitError, "header block larger")
    conn = Conn(TunnelDecoder(config=DecoderConfig(max_header_list_size=300)))
    _fails(conn, C2E, conn.client.headers(1, fields), TunnelLimitError, "header list too large")
