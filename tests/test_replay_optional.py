"""Replay answers an optional RPC the cassette never recorded as a controller older than the caller does."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

import jsreplay

pytestmark = [pytest.mark.anyio]
SAMPLE = Path(__file__).resolve().parents[1] / "cassettes" / "power-echo.msgpack"  # recorded with 0.9.0 peers
GET_SERVICE_ENDPOINTS = "/jumpstarter.v1.ControllerService/GetServiceEndpoints"
AUDIT_STREAM = "/jumpstarter.v1.ControllerService/AuditStream"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _call(server: jsreplay.ReplayServer, method: str) -> grpc.aio.AioRpcError:
    credentials = grpc.ssl_channel_credentials(server.ca_pem)
    async with grpc.aio.secure_channel(server.endpoint, credentials) as channel:
        call = channel.unary_unary(method)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(b"", timeout=10)
    return caught.value


@pytest.mark.timeout(60)
async def test_unrecorded_get_service_endpoints_is_unimplemented_and_a_note() -> None:
    async with jsreplay.replaying(SAMPLE) as server:
        err = await _call(server, GET_SERVICE_ENDPOINTS)
        report = server.report
    assert err.code() is grpc.StatusCode.UNIMPLEMENTED
    assert report.missed == []
    assert len(report.notes) == 1 and "GetServiceEndpoints" in report.notes[0]
    assert "GetServiceEndpoints" in report.summary()
    assert report.to_json()["notes"] == report.notes


@pytest.mark.timeout(60)
async def test_an_unrecorded_method_that_is_not_optional_is_still_a_miss() -> None:
    async with jsreplay.replaying(SAMPLE) as server:
        err = await _call(server, AUDIT_STREAM)
        report = server.report
    assert err.code() is grpc.StatusCode.UNKNOWN
    assert [m.method for m in report.missed] == [AUDIT_STREAM]
    assert report.notes == []


@pytest.mark.timeout(60)
async def test_an_unrecorded_optional_call_inside_a_tunnel_is_unimplemented_and_a_note() -> None:
    from jsreplay.replay.exporter import MockExporter
    from jsreplay.replay.library import load_library
    from jsreplay.replay.matching import MatchMode

    library = load_library([SAMPLE])
    tunnel = next(t for t in library.tunnels.values() if t.carries_calls)
    assert not any(s.method.endswith("/EndSession") for s in tunnel.inner)  # the 0.9.0 client never called it
    misses: list[str] = []
    notes: list[str] = []
    exporter = MockExporter(
        lambda: tunnel.inner,
        tunnel.registry,
        mode=MatchMode.DEFAULT,
        ignores=(),
        allow_repeats=False,
        on_miss=lambda method, why: misses.append(method),
        on_note=notes.append,
        on_error=lambda method, why: misses.append(method),
    )
    await exporter.start()
    try:
        async with grpc.aio.insecure_channel(exporter.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await channel.unary_unary("/jumpstarter.v1.ExporterService/EndSession")(b"", timeout=10)
            assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
            with pytest.raises(grpc.aio.AioRpcError) as other:  # not optional: still a miss
                await channel.unary_unary("/jumpstarter.v1.ExporterService/Reset")(b"", timeout=10)
            assert other.value.code() is grpc.StatusCode.UNKNOWN
    finally:
        await exporter.stop()
        library.close()
    assert len(notes) == 1 and "EndSession" in notes[0]
    assert misses == ["/jumpstarter.v1.ExporterService/Reset"]
