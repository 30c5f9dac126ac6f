"""Capture real HTTP/2 gRPC bytes: a grpc.aio client talks to a grpc.aio server through a TCP relay that records
every chunk in each direction, exactly as the router tunnel's payloads would carry them.

The client notes what it sent and received for each call (tagged by an ``x-call-id`` metadata entry), so tests can
check the decoder against grpcio's own view of the same calls.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

from jsreplay.tunnel import Direction

SERVICE = "test.Echo"
BIG = 1 << 20  # spans many 16 KiB DATA frames
# Non-ASCII and '%' characters exercise grpc-message percent-encoding.
FAIL_DETAILS = "kaputt: 100% ü ✓ %41 done"
TRAILING = (("trail-bin", bytes(range(256))), ("trail-text", "done"), ("empty-bin", b""))
INITIAL = (("initial-key", "initial value"),)
WAIT = 10.0  # seconds: the bound on every network wait

Metadata = tuple[tuple[str, str | bytes], ...]


def pattern(index: int, size: int) -> bytes:
    """Deterministic, index-dependent payload bytes."""
    return bytes((index * 31 + i) % 251 for i in range(256)) * (size // 256) + bytes(size % 256)


@dataclass
class ObservedCall:
    """One call as the grpcio client saw it."""

    call_id: str
    method: str
    request_metadata: Metadata
    requests: list[bytes] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)
    initial_metadata: Metadata = ()
    trailing_metadata: Metadata = ()
    code: int = 0
    details: str = ""
    cancelled: bool = False


@dataclass
class Capture:
    chunks: list[tuple[Direction, bytes]]
    calls: dict[str, ObservedCall]


# Server -------------------------------------------------------------------------------------------------------


async def _unary(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    await context.send_initial_metadata(INITIAL)
    context.set_trailing_metadata(TRAILING)
    return b"echo:" + request


async def _server_stream(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
    count, size = struct.unpack(">II", request)
    for index in range(count):
        yield pattern(index, size)


async def _bidi(
    requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    async for request in requests:
        yield request[::-1]
    context.set_trailing_metadata((("count-bin", b"\x00\xff"),))


async def _fail(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    # Nothing sent before the status: grpc answers with a trailers-only response.
    await context.abort(grpc.StatusCode.FAILED_PRECONDITION, FAIL_DETAILS)
    raise AssertionError("abort returned")


async def _fail_late(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
    yield b"first"
    context.set_trailing_metadata((("why-bin", "ünï".encode()),))
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "late 50%")


async def _hang(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> AsyncIterator[bytes]:
    yield b"ready"
    await asyncio.sleep(WAIT)  # the client cancels long before


def _handler() -> grpc.GenericRpcHandler:
    # No serializers anywhere: requests and responses stay raw bytes.
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(_unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(_server_stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(_bidi),
            "Fail": grpc.unary_unary_rpc_method_handler(_fail),
            "FailLate": grpc.unary_stream_rpc_method_handler(_fail_late),
            "Hang": grpc.unary_stream_rpc_method_handler(_hang),
        },
    )


# Relay --------------------------------------------------------------------------------------------------------


class RecordingRelay:
    """Forwards TCP connections to ``upstream_port`` and records every chunk read, in the order read."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections: list[list[tuple[Direction, bytes]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._relay(reader, writer))
        self._tasks.add(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: list[tuple[Direction, bytes]] = []
        self.connections.append(chunks)
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.upstream_port), timeout=WAIT
        )

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, direction: Direction) -> None:
            try:
                while chunk := await src.read(65536):
                    chunks.append((direction, chunk))  # recorded before forwarding: causal order holds
                    dst.write(chunk)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(
            pump(reader, up_writer, Direction.CLIENT_TO_EXPORTER),
            pump(up_reader, writer, Direction.EXPORTER_TO_CLIENT),
        )

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait_for(asyncio.gather(*self._tasks, return_exceptions=True), timeout=WAIT)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


# Client -------------------------------------------------------------------------------------------------------


def _md(metadata: Any) -> Metadata:
    return tuple((key, value) for key, value in (metadata or ()))


async def _run_calls(channel: grpc.aio.Channel, big: bool) -> dict[str, ObservedCall]:
    calls: dict[str, ObservedCall] = {}

    def observe(call_id: str, method: str, extra: Metadata = ()) -> tuple[ObservedCall, Metadata]:
        metadata: Metadata = (("x-call-id", call_id), *extra)
        observed = calls[call_id] = ObservedCall(
            call_id=call_id, method=f"/{SERVICE}/{method}", request_metadata=metadata
        )
        return observed, metadata

    async def unary(call_id: str, request: bytes, timeout: float | None = None) -> None:
        extra: Metadata = (("client-bin", b"\x01\x02\xff"), ("client-text", "hello world"))
        observed, metadata = observe(call_id, "Unary", extra)
        call = channel.unary_unary(observed.method)(request, metadata=metadata, timeout=timeout)
        observed.requests.append(request)
        observed.responses.append(await call)
        observed.initial_metadata = _md(await call.initial_metadata())
        observed.trailing_metadata = _md(await call.trailing_metadata())
        observed.code = (await call.code()).value[0]
        observed.details = await call.details() or ""

    async def server_stream(call_id: str, count: int, size: int) -> None:
        observed, metadata = observe(call_id, "ServerStream")
        request = struct.pack(">II", count, size)
        call = channel.unary_stream(observed.method)(request, metadata=metadata, timeout=WAIT)
        observed.requests.append(request)
        async for response in call:
            observed.responses.append(response)
        observed.initial_metadata = _md(await call.initial_metadata())
        observed.trailing_metadata = _md(await call.trailing_metadata())
        observed.code = (await call.code()).value[0]

    async def bidi(call_id: str, requests: list[bytes]) -> None:
        observed, metadata = observe(call_id, "Bidi")
        call = channel.stream_stream(observed.method)(metadata=metadata, timeout=WAIT)
        for request in requests:  # ping-pong: each response arrives before the next request is sent
            await call.write(request)
            observed.requests.append(request)
            observed.responses.append(await call.read())
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF
        observed.trailing_metadata = _md(await call.trailing_metadata())
        observed.code = (await call.code()).value[0]

    async def failing(call_id: str, method: str) -> None:
        observed, metadata = observe(call_id, method)
        if method == "Fail":
            call: Any = channel.unary_unary(observed.method)(b"please", metadata=metadata, timeout=WAIT)
        else:
            call = channel.unary_stream(observed.method)(b"please", metadata=metadata, timeout=WAIT)
        observed.requests.append(b"please")
        try:
            if method == "Fail":
                await call
            else:
                async for response in call:
                    observed.responses.append(response)
        except grpc.aio.AioRpcError as err:
            observed.code = err.code().value[0]
            observed.details = err.details() or ""
            observed.initial_metadata = _md(err.initial_metadata())
            observed.trailing_metadata = _md(err.trailing_metadata())
        else:
            raise AssertionError(f"{method} did not fail")

    async def cancelled(call_id: str) -> None:
        observed, metadata = observe(call_id, "Hang")
        call = channel.unary_stream(observed.method)(b"wait", metadata=metadata, timeout=WAIT)
        observed.requests.append(b"wait")
        observed.responses.append(await call.read())
        call.cancel()
        observed.cancelled = True
        observed.code = grpc.StatusCode.CANCELLED.value[0]

    # Sequential calls first, so the test can check causal order, then a concurrent burst.
    await unary("u0", b"first", timeout=30.0)
    await server_stream("s0", 3, 1000)
    await bidi("b0", [b"abc", b"", b"x" * 70_000])
    await failing("f0", "Fail")
    await failing("f1", "FailLate")
    await cancelled("c0")
    work: list[Awaitable[None]] = [unary(f"u{i}", pattern(i, i * 37)) for i in range(1, 21)]
    work += [server_stream(f"s{i}", i, 5000) for i in range(1, 4)]
    work += [failing("f2", "Fail")]
    if big:
        work += [bidi("b1", [pattern(1, BIG), pattern(2, 10)]), server_stream("s9", 2, BIG)]
    await asyncio.gather(*work)
    return calls


async def capture(big: bool = True) -> Capture:
    """Run the scenario once; return the relay's chunks (one connection) and the client's view of every call."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    relay = RecordingRelay(port)
    try:
        relay_port = await relay.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{relay_port}", options=[("grpc.enable_http_proxy", 0)])
        try:
            calls = await asyncio.wait_for(_run_calls(channel, big), timeout=WAIT)
        finally:
            await channel.close()
        await relay.close()
    finally:
        await server.stop(grace=None)
    assert len(relay.connections) == 1, f"expected one HTTP/2 connection, got {len(relay.connections)}"
    return Capture(chunks=relay.connections[0], calls=calls)


def run_capture(big: bool = True) -> Capture:
    """:func:`capture` from synchronous code (pytest fixtures)."""
    return asyncio.run(asyncio.wait_for(capture(big), timeout=3 * WAIT))
