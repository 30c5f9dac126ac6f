"""A small TLS gRPC upstream for proxy tests: every stream kind, errors, trailers, deadlines, and a router.

It speaks raw bytes (identity serializers): the proxy must not care what the messages mean. Method paths are
Jumpstarter's where the kind matters (the proxy forwards known methods with their own kind) plus one method
the schema does not know (forwarded as a generic bidi stream).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from jumpstarter_protocol.jumpstarter.v1 import jumpstarter_pb2

from jsreplay.grpc_options import SERVER_OPTIONS
from jsreplay.tls import CertificateAuthority, server_credentials

UNARY = "/jumpstarter.v1.ControllerService/GetLease"
SERVER_STREAM = "/jumpstarter.v1.ControllerService/Status"
CLIENT_STREAM = "/jumpstarter.v1.ControllerService/AuditStream"
DIAL = "/jumpstarter.v1.ControllerService/Dial"
ROUTER = "/jumpstarter.v1.RouterService/Stream"
UNKNOWN_BIDI = "/test.v1.Echo/Chat"

INITIAL = (("x-initial", "hello"),)
TRAILING = (("x-trailing", "bye"), ("x-blob-bin", b"\x00\xffbin"))


@dataclass
class FakeUpstream:
    endpoint: str = ""
    ca_pem: bytes = b""
    tokens: dict[str, list[asyncio.Queue[bytes | None]]] = field(default_factory=dict)
    pairs: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    seen_metadata: list[tuple[tuple[str, Any], ...]] = field(default_factory=list)
    router_endpoint: str = ""  # what Dial names as the router; default: this upstream
    dial_response: bytes | None = None  # raw bytes Dial answers with instead, when set
    seen_methods: list[str] = field(default_factory=list)  # every call that reached this upstream


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, state: FakeUpstream) -> None:
        self.state = state
        self.waiting: dict[str, tuple[asyncio.Queue[bytes | None], asyncio.Future[asyncio.Queue[bytes | None]]]] = {}

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        self.state.seen_methods.append(details.method)
        match details.method:
            case "/jumpstarter.v1.ControllerService/GetLease":
                return grpc.unary_unary_rpc_method_handler(self.unary)
            case "/jumpstarter.v1.ControllerService/Dial":
                return grpc.unary_unary_rpc_method_handler(self.dial)
            case "/jumpstarter.v1.ControllerService/Status":
                return grpc.unary_stream_rpc_method_handler(self.server_stream)
            case "/jumpstarter.v1.ControllerService/AuditStream":
                return grpc.stream_unary_rpc_method_handler(self.client_stream)
            case "/jumpstarter.v1.RouterService/Stream":
                return grpc.stream_stream_rpc_method_handler(self.router)
            case "/test.v1.Echo/Chat":
                return grpc.stream_stream_rpc_method_handler(self.chat)
        return None

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.state.seen_metadata.append(tuple(context.invocation_metadata() or ()))
        if request.startswith(b"fail"):
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such lease: ünïcode %", trailing_metadata=TRAILING)
        if request.startswith(b"sleep"):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.state.cancelled.append(UNARY)
                raise
        await context.send_initial_metadata(INITIAL)
        context.set_trailing_metadata(TRAILING)
        return request[::-1]

    async def dial(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.state.seen_metadata.append(tuple(context.invocation_metadata() or ()))
        if self.state.dial_response is not None:
            return self.state.dial_response
        token = secrets.token_hex(16)
        endpoint = self.state.router_endpoint or self.state.endpoint
        return jumpstarter_pb2.DialResponse(router_endpoint=endpoint, router_token=token).SerializeToString()

    async def server_stream(self, request: bytes, context: grpc.aio.ServicerContext) -> None:
        await context.send_initial_metadata(INITIAL)
        count = int(request or b"0")
        try:
            for i in range(count):
                await context.write(b"msg-%d" % i)
            if request.endswith(b"9"):  # "...9": stay open until cancelled
                await asyncio.sleep(30)
        except asyncio.CancelledError:
            self.state.cancelled.append(SERVER_STREAM)
            raise
        context.set_trailing_metadata(TRAILING)

    async def client_stream(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        total = b""
        async for message in request_iterator:
            total += message
        if total == b"abort":
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "aborted on request")
        return b"got:" + total

    async def chat(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        async for message in request_iterator:
            await context.write(b"echo:" + message)
        context.set_trailing_metadata(TRAILING)

    async def router(self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        """Pipe the two callers presenting the same bearer token into each other."""
        metadata = dict(context.invocation_metadata() or ())
        token = str(metadata.get("authorization", "")).removeprefix("Bearer ")
        inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        if token in self.waiting:
            peer_inbox, future = self.waiting.pop(token)
            future.set_result(inbox)
        else:
            future = asyncio.get_running_loop().create_future()
            self.waiting[token] = (inbox, future)
            try:
                peer_inbox_or = await asyncio.wait_for(future, 20)
            except TimeoutError:
                self.waiting.pop(token, None)
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "no peer")
            peer_inbox = peer_inbox_or

        async def pump() -> None:
            async for message in request_iterator:
                await peer_inbox.put(message)
            await peer_inbox.put(None)

        task = asyncio.create_task(pump())
        try:
            while (message := await inbox.get()) is not None:
                await context.write(message)
            # A server cannot half-close: end this side only once its caller has half-closed too, as a real
            # router does, or the caller's last writes race the status.
            await task
        finally:
            task.cancel()


@asynccontextmanager
async def fake_upstream() -> AsyncIterator[FakeUpstream]:
    ca = CertificateAuthority.generate()
    cert = ca.issue(["127.0.0.1"])
    state = FakeUpstream(ca_pem=cert.ca_pem)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((_Handler(state),))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(cert))
    state.endpoint = f"127.0.0.1:{port}"
    await server.start()
    try:
        yield state
    finally:
        await server.stop(None)
