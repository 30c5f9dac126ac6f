"""--speed: 0 replays as fast as causal order allows, 1 at the recorded pace, N times faster."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import grpc
import pytest

import jsreplay
from jsreplay.cassette.format import write_cassette
from jsreplay.cassette.migrations import FORMAT_VERSION
from jsreplay.cassette.model import (
    CallStart,
    Cassette,
    ClientHalfClose,
    ClientMessage,
    Header,
    Role,
    ServerHeaders,
    ServerMessage,
    Status,
)
from jsreplay.protocol.registry import Registry

pytestmark = pytest.mark.anyio
STATUS = "/jumpstarter.v1.ControllerService/Status"
GAP_NS = 300_000_000  # the recorded stream sent a message every 0.3 s


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def cassette(tmp_path: Path) -> Path:
    registry = Registry.default()
    message = registry.encode("jumpstarter.v1.StatusResponse", {"leased": True, "lease_name": "l"})
    events = [
        CallStart(call_id=1, seq=0, t_ns=0, method=STATUS, role=Role.CONTROLLER),
        ClientMessage(call_id=1, seq=1, t_ns=1, data=b""),
        ClientHalfClose(call_id=1, seq=2, t_ns=2),
        ServerHeaders(call_id=1, seq=3, t_ns=3),
        *(ServerMessage(call_id=1, seq=4 + i, t_ns=i * GAP_NS, data=message) for i in range(4)),
        Status(call_id=1, seq=8, t_ns=3 * GAP_NS + 1, code=0),
    ]
    header = Header(
        format_version=FORMAT_VERSION,
        jsreplay_version="test",
        created_unix_ns=time.time_ns(),
        descriptor_set=registry.descriptor_set,
    )
    path = tmp_path / "stream.msgpack"
    write_cassette(path, Cassette(header=header, events=tuple(events)), redactor=None)
    return path


async def stream_duration(cassette: Path, speed: float) -> float:
    async with jsreplay.replaying(cassette, speed=speed) as server:
        assert server.ca_pem is not None
        creds = grpc.ssl_channel_credentials(root_certificates=server.ca_pem)
        async with grpc.aio.secure_channel(server.endpoint, creds) as channel:
            with anyio.fail_after(10):
                start = time.monotonic()
                messages = [m async for m in channel.unary_stream(STATUS)(b"")]
                elapsed = time.monotonic() - start
    assert len(messages) == 4
    return elapsed


async def test_speed_keeps_the_recorded_gaps_scaled(cassette: Path) -> None:
    recorded = 3 * GAP_NS / 1e9  # 0.9 s from the first message to the last
    assert await stream_duration(cassette, 0) < recorded / 3
    paced = await stream_duration(cassette, 1)
    assert recorded <= paced < recorded + 1.0
    doubled = await stream_duration(cassette, 2)
    assert recorded / 2 <= doubled < recorded / 2 + 0.6
