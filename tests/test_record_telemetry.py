"""Telemetry (the development line): record points GetServiceEndpoints' endpoints at itself and relays PushLogs to
the endpoint the upstream named to that caller, and nowhere else; replay serves PushLogs as recorded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

import jsreplay
from jsreplay.cassette.format import read_cassette
from jsreplay.grpc_options import SERVER_OPTIONS
from jsreplay.protocol.registry import Registry
from jsreplay.protocol.wire import GET_SERVICE_ENDPOINTS, PUSH_LOGS
from jsreplay.tls import CertificateAuthority, server_credentials

pytestmark = [pytest.mark.anyio]
REGISTRY = Registry.default()  # the union: knows the development line's telemetry types
ENDPOINTS_RESPONSE = REGISTRY.message_class("jumpstarter.v1.GetServiceEndpointsResponse")
PUSH_REQUEST = REGISTRY.message_class("jumpstarter.v1.PushLogsRequest")
PUSH_RESPONSE = REGISTRY.message_class("jumpstarter.v1.PushLogsResponse")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Served:
    endpoint: str = ""
    ca_pem: bytes = b""
    pushed: list[tuple[Any, tuple[tuple[str, Any], ...]]] = field(default_factory=list)
    telemetry_endpoint: str = ""  # what GetServiceEndpoints names
    telemetry_ca: bytes = b""


@asynccontextmanager
async def tls_server(handler: grpc.GenericRpcHandler, state: Served) -> AsyncIterator[Served]:
    ca = CertificateAuthority.generate()
    cert = ca.issue(["127.0.0.1"])
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_secure_port("127.0.0.1:0", server_credentials(cert))
    state.endpoint, state.ca_pem = f"127.0.0.1:{port}", cert.ca_pem
    await server.start()
    try:
        yield state
    finally:
        await server.stop(None)


class Telemetry(grpc.GenericRpcHandler):
    def __init__(self, state: Served) -> None:
        self.state = state

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != PUSH_LOGS:
            return None

        async def push(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            message = PUSH_REQUEST.FromString(request)
            self.state.pushed.append((message, tuple(context.invocation_metadata() or ())))
            return PUSH_RESPONSE(accepted=len(message.entries)).SerializeToString()

        return grpc.unary_unary_rpc_method_handler(push)


class Controller(grpc.GenericRpcHandler):
    def __init__(self, state: Served) -> None:
        self.state = state

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != GET_SERVICE_ENDPOINTS:
            return None

        async def endpoints(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            response = ENDPOINTS_RESPONSE()
            item = response.telemetry_endpoints.add()
            item.endpoint = self.state.telemetry_endpoint
            item.certificate = self.state.telemetry_ca.decode()
            item.min_severity = "info"
            return response.SerializeToString()

        return grpc.unary_unary_rpc_method_handler(endpoints)


def entries(stamp: int) -> bytes:
    request = PUSH_REQUEST()
    for n, text in enumerate(("power on", "power off")):
        entry = request.entries.add(severity="info", message=text, component="exporter")
        entry.timestamp.seconds = stamp + n
    return request.SerializeToString()


async def call(endpoint: str, ca_pem: bytes | None, method: str, data: bytes, token: str) -> bytes:
    credentials = grpc.ssl_channel_credentials(ca_pem)
    async with grpc.aio.secure_channel(endpoint, credentials) as channel:
        rpc = channel.unary_unary(method)
        result: bytes = await rpc(data, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
        return result


@pytest.mark.timeout(60)
async def test_push_logs_go_through_the_proxy_to_the_named_endpoint_and_replay(tmp_path: Path) -> None:
    cassette = tmp_path / "telemetry.msgpack"
    telemetry_state, controller_state = Served(), Served()
    async with tls_server(Telemetry(telemetry_state), telemetry_state) as telemetry:
        controller_state.telemetry_endpoint, controller_state.telemetry_ca = telemetry.endpoint, telemetry.ca_pem
        async with tls_server(Controller(controller_state), controller_state) as controller:
            async with jsreplay.recording(
                upstream=controller.endpoint, upstream_ca=controller.ca_pem, cassette=cassette
            ) as proxy:
                got = ENDPOINTS_RESPONSE.FromString(
                    await call(proxy.endpoint, proxy.ca_pem, GET_SERVICE_ENDPOINTS, b"", "exporter-token")
                )
                [named] = got.telemetry_endpoints
                # The exporter is sent to the proxy, trusting the proxy's CA; the rest is kept.
                assert named.endpoint == proxy.endpoint
                assert proxy.ca_pem is not None and named.certificate == proxy.ca_pem.decode()
                assert named.min_severity == "info"
                pushed = PUSH_RESPONSE.FromString(
                    await call(named.endpoint, named.certificate.encode(), PUSH_LOGS, entries(1000), "exporter-token")
                )
                assert pushed.accepted == 2
                # Another caller's token: the upstream named it no telemetry endpoint; not relayed.
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await call(proxy.endpoint, proxy.ca_pem, PUSH_LOGS, entries(1000), "someone-else")
                assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert len(telemetry_state.pushed) == 1
    assert [e.message for e in telemetry_state.pushed[0][0].entries] == ["power on", "power off"]

    pushes = [c for c in read_cassette(cassette).calls() if c.method == PUSH_LOGS]
    # Recorded: the relayed one with its real target, the refused one with none.
    assert [c.start.target for c in pushes] == [telemetry.endpoint, ""]

    # Replay: the endpoint points at the replay server; PushLogs is served as recorded, other timestamps or not.
    async with jsreplay.replaying(cassette) as server:
        got = ENDPOINTS_RESPONSE.FromString(
            await call(server.endpoint, server.ca_pem, GET_SERVICE_ENDPOINTS, b"", "any")
        )
        [named] = got.telemetry_endpoints
        assert named.endpoint == server.endpoint
        assert server.ca_pem is not None and named.certificate == server.ca_pem.decode()
        pushed = PUSH_RESPONSE.FromString(
            await call(named.endpoint, named.certificate.encode(), PUSH_LOGS, entries(2_000_000), "any")
        )
        report = server.report
    assert pushed.accepted == 2
    assert report.missed == [], report.summary()


@pytest.mark.timeout(60)
async def test_a_telemetry_endpoint_naming_the_proxy_itself_is_refused(tmp_path: Path) -> None:
    controller_state = Served()
    async with tls_server(Controller(controller_state), controller_state) as controller:
        async with jsreplay.recording(
            upstream=controller.endpoint, upstream_ca=controller.ca_pem, cassette=tmp_path / "loop.msgpack"
        ) as proxy:
            controller_state.telemetry_endpoint = proxy.endpoint
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await call(proxy.endpoint, proxy.ca_pem, GET_SERVICE_ENDPOINTS, b"", "exporter-token")
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "telemetry endpoint" in (refused.value.details() or "")
