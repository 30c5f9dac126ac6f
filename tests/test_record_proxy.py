"""The recording proxy against a fake TLS upstream: every stream kind, errors, deadlines, cancels, routing."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import grpc
import pytest
from jumpstarter_protocol.jumpstarter.v1 import jumpstarter_pb2, router_pb2
from upstream_fake import (
    CLIENT_STREAM,
    DIAL,
    INITIAL,
    ROUTER,
    SERVER_STREAM,
    TRAILING,
    UNARY,
    UNKNOWN_BIDI,
    FakeUpstream,
    fake_upstream,
)

import jsreplay
from jsreplay.cassette.format import read_cassette
from jsreplay.cassette.model import Call, CancelSource, ClientHalfClose, Role
from jsreplay.grpc_options import CHANNEL_OPTIONS
from jsreplay.record import RecordConfig, RecordingProxy, UpstreamTrust

pytestmark = pytest.mark.anyio
WAIT_S = 30


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as state:
        yield state


@pytest.fixture
async def proxy(upstream: FakeUpstream, tmp_path: Path) -> AsyncIterator[RecordingProxy]:
    async with jsreplay.recording(
        upstream=upstream.endpoint, cassette=tmp_path / "c.msgpack", upstream_ca=upstream.ca_pem
    ) as p:
        yield p


@pytest.fixture
async def channel(proxy: RecordingProxy) -> AsyncIterator[grpc.aio.Channel]:
    assert proxy.ca_pem is not None
    credentials = grpc.ssl_channel_credentials(root_certificates=proxy.ca_pem)
    async with grpc.aio.secure_channel(proxy.endpoint, credentials, options=CHANNEL_OPTIONS) as ch:
        yield ch


def calls_of(proxy: RecordingProxy) -> list[Call]:
    return read_cassette(proxy.config.cassette).calls()


async def test_unary_call_metadata_trailers_and_recording(proxy: RecordingProxy, channel: grpc.aio.Channel) -> None:
    call = channel.unary_unary(UNARY)(b"abc", metadata=(("x-custom", "v1"), ("x-raw-bin", b"\x01\x02")))
    with anyio.fail_after(WAIT_S):
        assert await call == b"cba"
        assert tuple(await call.initial_metadata()) == INITIAL
        assert tuple(await call.trailing_metadata()) == TRAILING
    await proxy.stop()
    [recorded] = calls_of(proxy)
    assert recorded.method == UNARY and recorded.role is Role.CONTROLLER
    assert ("x-custom", "v1") in recorded.start.metadata and ("x-raw-bin", b"\x01\x02") in recorded.start.metadata
    assert recorded.requests == [b"abc"] and recorded.half_closed
    assert recorded.responses == [b"cba"]
    assert recorded.initial_metadata == INITIAL
    assert recorded.status is not None and recorded.status.code == 0
    assert recorded.status.trailing_metadata == TRAILING
    seqs = [recorded.start.seq, *(e.seq for e in recorded.events)]
    assert seqs == sorted(seqs)


async def test_error_status_details_and_trailers_pass_through(proxy: RecordingProxy, channel: grpc.aio.Channel) -> None:
    with anyio.fail_after(WAIT_S), pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(UNARY)(b"fail")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == "no such lease: ünïcode %"
    assert tuple(raised.value.trailing_metadata()) == TRAILING
    await proxy.stop()
    [recorded] = calls_of(proxy)
    assert recorded.status is not None
    assert (recorded.status.code, recorded.status.details) == (5, "no such lease: ünïcode %")
    assert recorded.status.trailing_metadata == TRAILING
    assert recorded.responses == []


async def test_server_streaming(proxy: RecordingProxy, channel: grpc.aio.Channel) -> None:
    with anyio.fail_after(WAIT_S):
        call = channel.unary_stream(SERVER_STREAM)(b"5")
        got = [m async for m in call]
        assert tuple(await call.trailing_metadata()) == TRAILING
    assert got == [b"msg-%d" % i for i in range(5)]
    await proxy.stop()
    [recorded] = calls_of(proxy)
    assert recorded.responses == got and recorded.initial_metadata == INITIAL
    assert recorded.status is not None and recorded.status.code == 0


async def test_client_streaming_and_its_errors(proxy: RecordingProxy, channel: grpc.aio.Channel) -> None:
    with anyio.fail_after(WAIT_S):
        assert await channel.stream_unary(CLIENT_STREAM)(iter([b"a", b"b", b"c"])) == b"got:abc"
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await channel.stream_unary(CLIENT_STREAM)(iter([b"ab", b"ort"]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await proxy.stop()
    ok, failed = calls_of(proxy)
    assert ok.requests == [b"a", b"b", b"c"] and ok.half_closed and ok.responses == [b"got:abc"]
    assert failed.requests == [b"ab", b"ort"] and failed.status is not None and failed.status.code == 3


async def test_unknown_method_is_forwarded_as_bidi(proxy: RecordingProxy, channel: grpc.aio.Channel) -> None:
    with anyio.fail_after(WAIT_S):
        call = channel.stream_stream(UNKNOWN_BIDI)()
        replies = []
        for word in (b"one", b"two", b"x" * (16 << 20)):  # 16 MiB: the largest message the issue asks for
            await call.write(word)
            replies.append(await call.read())
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        assert tuple(await call.trailing_metadata()) == TRAILING
    assert replies == [b"echo:one", b"echo:two", b"echo:" + b"x" * (16 << 20)]
    await proxy.stop()
    [recorded] = calls_of(proxy)
    assert recorded.requests == [b"one", b"two", b"x" * (16 << 20)] and recorded.responses == replies
    kinds = [type(e).__name__ for e in recorded.events]
    assert kinds.index("ClientHalfClose") > kinds.index("ServerMessage")  # order as it happened


async def test_deadline_expires_upstream(
    proxy: RecordingProxy, channel: grpc.aio.Channel, upstream: FakeUpstream
) -> None:
    with anyio.fail_after(WAIT_S), pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(UNARY)(b"sleep", timeout=0.5)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with anyio.fail_after(WAIT_S):
        while UNARY not in upstream.cancelled:  # the upstream saw the deadline too
            await asyncio.sleep(0.05)
    await proxy.stop()
    [recorded] = calls_of(proxy)
    assert recorded.start.timeout_ns is not None and 0 < recorded.start.timeout_ns <= 500_000_000
    ended = recorded.status or recorded.cancel
    assert ended is not None


async def test_client_cancel_mid_stream(
    proxy: RecordingProxy, channel: grpc.aio.Channel, upstream: FakeUpstream
) -> None:
    with anyio.fail_after(WAIT_S):
        call = channel.unary_stream(SERVER_STREAM)(b"39")  # 39 messages, then stays open
        for _ in range(3):
            await call.read()
        call.cancel()
        while SERVER_STREAM not in upstream.cancelled:
            await asyncio.sleep(0.05)
    await proxy.stop()
    [recorded] = calls_of(proxy)
    assert recorded.cancel is not None and recorded.cancel.by is CancelSource.CLIENT
    assert len(recorded.responses) >= 3


async def test_upstream_down_is_unavailable_naming_it(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    async with jsreplay.recording(upstream=dead, cassette=tmp_path / "c.msgpack") as proxy:
        assert proxy.ca_pem is not None
        creds = grpc.ssl_channel_credentials(root_certificates=proxy.ca_pem)
        async with grpc.aio.secure_channel(proxy.endpoint, creds) as ch:
            with anyio.fail_after(WAIT_S), pytest.raises(grpc.aio.AioRpcError) as raised:
                await ch.unary_unary(UNARY)(b"x", timeout=10)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert dead in (raised.value.details() or "")
    [recorded] = calls_of(proxy)
    assert recorded.status is not None and recorded.status.code == grpc.StatusCode.UNAVAILABLE.value[0]
    assert dead in recorded.status.details


async def test_stream_with_unknown_token_is_refused_and_recorded(
    proxy: RecordingProxy, channel: grpc.aio.Channel
) -> None:
    with anyio.fail_after(WAIT_S):
        call = channel.stream_stream(ROUTER)(metadata=(("authorization", "Bearer never-issued"),))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await proxy.stop()
    [recorded] = calls_of(proxy)
    assert recorded.role is Role.ROUTER and recorded.status is not None
    assert recorded.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert recorded.start.target == ""  # it went nowhere


def _frame(payload: bytes) -> bytes:
    return router_pb2.StreamRequest(payload=payload, frame_type=router_pb2.FRAME_TYPE_DATA).SerializeToString()


async def test_64_concurrent_router_streams_of_4_mib_are_byte_exact(
    proxy: RecordingProxy, channel: grpc.aio.Channel, upstream: FakeUpstream
) -> None:
    pairs, chunk, size = 32, 64 << 10, 4 << 20
    tokens: list[str] = []

    for _ in range(pairs):
        raw = await channel.unary_unary(DIAL)(jumpstarter_pb2.DialRequest(lease_name="l").SerializeToString())
        response = jumpstarter_pb2.DialResponse.FromString(raw)
        assert response.router_endpoint == proxy.endpoint  # rewritten to the proxy
        tokens.append(response.router_token)

    async def side(token: str, data: bytes) -> bytes:
        call = channel.stream_stream(ROUTER)(metadata=(("authorization", f"Bearer {token}"),))

        async def send() -> None:
            for i in range(0, len(data), chunk):
                await call.write(_frame(data[i : i + chunk]))
            await call.done_writing()

        sender = asyncio.create_task(send())
        received = bytearray()
        while len(received) < len(data):
            message = await call.read()
            assert message is not grpc.aio.EOF
            received += router_pb2.StreamResponse.FromString(message).payload
        await sender
        assert await call.read() is grpc.aio.EOF  # the router ends each side after both half-closed
        assert await call.code() == grpc.StatusCode.OK
        return bytes(received)

    payloads = {t: (os.urandom(size), os.urandom(size)) for t in tokens}
    with anyio.fail_after(120):
        results = await asyncio.gather(
            *(side(t, payloads[t][0]) for t in tokens), *(side(t, payloads[t][1]) for t in tokens)
        )
    for i, token in enumerate(tokens):
        assert results[i] == payloads[token][1]  # a got what b sent
        assert results[pairs + i] == payloads[token][0]
    await proxy.stop()
    streams = [c for c in calls_of(proxy) if c.method == ROUTER]
    assert len(streams) == 2 * pairs
    for c in streams:
        sent = b"".join(router_pb2.StreamRequest.FromString(m).payload for m in c.requests)
        got = b"".join(router_pb2.StreamResponse.FromString(m).payload for m in c.responses)
        assert (sent, got) in {(a, b) for a, b in payloads.values()} | {(b, a) for a, b in payloads.values()}
        assert c.start.target == upstream.endpoint
        assert any(isinstance(e, ClientHalfClose) for e in c.events)


async def test_stop_ends_every_open_call_with_a_cancel_by_the_proxy(
    upstream: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Open server and bidi streams and a unary call in flight: stop() ends each one and records it."""
    cassette = tmp_path / "stopped.msgpack"
    proxy = RecordingProxy(
        RecordConfig(
            upstream=upstream.endpoint, cassette=cassette, upstream_trust=UpstreamTrust(ca_pem=upstream.ca_pem)
        )
    )
    await proxy.start()
    assert proxy.ca_pem is not None
    credentials = grpc.ssl_channel_credentials(root_certificates=proxy.ca_pem)
    async with grpc.aio.secure_channel(proxy.endpoint, credentials, options=CHANNEL_OPTIONS) as ch:
        with anyio.fail_after(WAIT_S):
            stream = ch.unary_stream(SERVER_STREAM)(b"39")  # 39 messages, then stays open
            for _ in range(39):
                await stream.read()
            chat = ch.stream_stream(UNKNOWN_BIDI)()
            await chat.write(b"one")
            assert await chat.read() == b"echo:one"
            slow = ch.unary_unary(UNARY)(b"sleep")  # the upstream sleeps 30 s
            while proxy.stats.open_calls < 3:
                await asyncio.sleep(0.01)
            await proxy.stop(grace=0.2, reason="test stopped")
            for call in (stream, chat, slow):
                assert await call.code() == grpc.StatusCode.UNAVAILABLE  # the peers get a status, not a reset
                assert "test stopped" in (await call.details() or "")
            while not {SERVER_STREAM, UNARY} <= set(upstream.cancelled):  # upstream calls cancelled too
                await asyncio.sleep(0.05)
    size = cassette.stat().st_size
    await asyncio.sleep(0.2)
    assert cassette.stat().st_size == size  # nothing written after the stop
    assert proxy.error is None  # no write after close ("writer is closed")
    assert proxy.stats.open_calls == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    calls = calls_of(proxy)
    assert [c.method for c in calls] == [SERVER_STREAM, UNKNOWN_BIDI, UNARY]
    for recorded in calls:
        assert recorded.status is None
        assert recorded.cancel is not None, recorded.method
        assert (recorded.cancel.by, recorded.cancel.reason) == (CancelSource.PROXY, "test stopped")
        assert recorded.events[-1] is recorded.cancel  # the end is the call's last event
    assert len(calls[0].responses) == 39 and calls[1].requests == [b"one"]


async def test_leaving_record_block_ends_open_streams_and_stop_twice_is_one_stop(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    async with jsreplay.recording(
        upstream=upstream.endpoint, cassette=tmp_path / "c.msgpack", upstream_ca=upstream.ca_pem
    ) as proxy:
        assert proxy.ca_pem is not None
        credentials = grpc.ssl_channel_credentials(root_certificates=proxy.ca_pem)
        async with grpc.aio.secure_channel(proxy.endpoint, credentials, options=CHANNEL_OPTIONS) as ch:
            with anyio.fail_after(WAIT_S):
                chat = ch.stream_stream(UNKNOWN_BIDI)()
                await chat.write(b"one")
                assert await chat.read() == b"echo:one"
                await asyncio.gather(proxy.stop(), proxy.stop())  # concurrent stops: one stop, both wait for it
                assert await chat.code() == grpc.StatusCode.UNAVAILABLE
    # ...and the block's own stop is a no-op.
    assert proxy.error is None
    [recorded] = calls_of(proxy)
    assert recorded.cancel is not None and recorded.cancel.by is CancelSource.PROXY
    assert recorded.cancel.reason == "jsreplay record stopped"
