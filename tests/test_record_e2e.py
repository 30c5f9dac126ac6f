"""`jsreplay record` with the real Jumpstarter 0.9.0 client and exporter, against the fake cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import warnings
from collections import Counter
from pathlib import Path

import anyio
import pytest
from jumpstarter_protocol.jumpstarter.v1 import router_pb2

from jsreplay.cassette.errors import TruncatedCassetteWarning
from jsreplay.cassette.format import CassetteReader, read_cassette
from jsreplay.cassette.model import CallStart, Role, metadata_get
from jsreplay.testing import FakeCluster, run_client_scenario, run_exporter
from jsreplay.testing.recording import LABELS, SELECTOR, record_scenario
from jsreplay.testing.stopping import EXPORTER_SCRIPT, peer_process, recorder_process

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CONTROLLER = "/jumpstarter.v1.ControllerService/"
CLIENT = "/jumpstarter.client.v1.ClientService/"
ROUTER_STREAM = "/jumpstarter.v1.RouterService/Stream"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def run_direct() -> dict[str, object]:
    with anyio.fail_after(60):
        async with FakeCluster() as cluster:
            exporter = cluster.new_exporter("exporter-1", LABELS)
            client = cluster.new_client("alice")
            async with run_exporter(exporter.endpoint, exporter.token, exporter.ca_pem, exporter.name):
                await cluster.wait_exporter_available(exporter.name)
                result = await run_client_scenario(
                    client.endpoint, client.token, client.ca_pem, name=client.name, selector=SELECTOR
                )
                await cluster.wait_exporter_available(exporter.name)
    return result.comparable()


@pytest.mark.timeout(120)
async def test_real_scenario_through_the_proxy(tmp_path: Path) -> None:
    direct = await run_direct()
    run = await record_scenario(tmp_path / "session.msgpack")

    # The scenario passes exactly as it does without the proxy.
    assert run.result.comparable() == direct
    assert run.result.echoed == run.result.sent

    cassette = read_cassette(run.cassette)
    assert cassette.truncated_at is None
    calls = cassette.calls()
    recorded = Counter(c.method for c in calls)
    # Every call the cluster served went through the proxy and is in the cassette.
    assert recorded == Counter(run.cluster_calls)
    for method in (
        CONTROLLER + "Register",
        CONTROLLER + "ReportStatus",
        CONTROLLER + "Status",
        CONTROLLER + "Listen",
        CLIENT + "CreateLease",
        CLIENT + "GetLease",
        CONTROLLER + "Dial",
        CLIENT + "DeleteLease",
        CONTROLLER + "Unregister",
    ):
        assert recorded[method] >= 1, method

    # Dial/Listen: the original router endpoint is kept, the rewritten one (the proxy) is what peers got.
    for call in calls:
        if call.method in (CONTROLLER + "Dial", CONTROLLER + "Listen"):
            for event in call.events:
                if getattr(event, "forwarded", None) is not None:
                    assert event.data != event.forwarded  # type: ignore[attr-defined]

    # Both ends of each router stream, every frame: what one end sent is what the other end received.
    streams = [c for c in calls if c.method == ROUTER_STREAM]
    assert len(streams) == run.cluster_calls[ROUTER_STREAM] and len(streams) % 2 == 0
    by_token: dict[object, list[object]] = {}
    for call in streams:
        assert call.role is Role.ROUTER
        by_token.setdefault(metadata_get(call.start.metadata, "authorization"), []).append(call)
    assert all(len(pair) == 2 for pair in by_token.values())
    for a, b in by_token.values():  # type: ignore[misc]
        sent_a = [(f.payload, f.frame_type) for f in map(router_pb2.StreamRequest.FromString, a.requests)]
        got_b = [(f.payload, f.frame_type) for f in map(router_pb2.StreamResponse.FromString, b.responses)]
        sent_b = [(f.payload, f.frame_type) for f in map(router_pb2.StreamRequest.FromString, b.requests)]
        got_a = [(f.payload, f.frame_type) for f in map(router_pb2.StreamResponse.FromString, a.responses)]
        for sent, got in ((sent_a, got_b), (sent_b, got_a)):
            # Frame for frame what was received, in order. The client ends its tunnel by cancelling (no
            # half-close), so what a side sent after its peer left is recorded but never arrived.
            assert got == sent[: len(got)]
    main_tunnel = max(streams, key=lambda c: len(c.requests))
    assert len(main_tunnel.requests) > 10

    # No token or authorization value from the run appears anywhere in the file.
    raw = run.cassette.read_bytes()
    assert run.secrets and all(len(s) >= 16 for s in run.secrets)
    for secret in run.secrets:
        assert secret.encode() not in raw
    assert b"Bearer redacted:" in raw


@pytest.mark.timeout(120)
async def test_no_redact_keeps_tokens_and_says_so(tmp_path: Path) -> None:
    run = await record_scenario(tmp_path / "open.msgpack", redact=False)
    cassette = read_cassette(run.cassette)
    assert cassette.header.redaction.enabled is False
    raw = run.cassette.read_bytes()
    assert any(secret.encode() in raw for secret in run.secrets)


def _start_recorder(upstream: str, ca_file: Path, cassette: Path) -> tuple[subprocess.Popen[str], str, Path]:
    process = recorder_process(upstream, ca_file, cassette)
    ca_out = cassette.with_suffix(".ca.pem")
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (\S+) ", line)
    assert match, f"unexpected first line {line!r}; stderr: {process.stderr.read() if process.poll() else ''}"
    return process, match.group(1), ca_out


# The peers run in processes of their own: once their proxy dies they wait on retries (and the exporter's
# teardown raises from callbacks) that only killing them ends cleanly.
CLIENT_SCRIPT = """
import asyncio, sys
from pathlib import Path
from jsreplay.testing import run_client_scenario
from jsreplay.testing.recording import SELECTOR
endpoint, token, ca_file, name = sys.argv[1:5]
asyncio.run(run_client_scenario(endpoint, token, Path(ca_file).read_bytes(), name=name, selector=SELECTOR))
"""


@pytest.mark.timeout(150)
async def test_sigkill_mid_scenario_keeps_every_event_but_the_one_in_flight(tmp_path: Path) -> None:
    cassette = tmp_path / "killed.msgpack"
    peers: list[subprocess.Popen[bytes]] = []
    async with FakeCluster() as cluster:
        ca_file = tmp_path / "cluster-ca.pem"
        ca_file.write_bytes(cluster.ca_pem)
        process, endpoint, ca_out = _start_recorder(cluster.controller_endpoint, ca_file, cassette)
        try:
            exporter = cluster.new_exporter("exporter-1", LABELS)
            client = cluster.new_client("alice")
            peers.append(peer_process(EXPORTER_SCRIPT, endpoint, exporter.token, str(ca_out), exporter.name))
            await cluster.wait_exporter_available(exporter.name, timeout=30)
            peers.append(peer_process(CLIENT_SCRIPT, endpoint, client.token, str(ca_out), client.name))
            # Kill while the session is running: once the tunnel exists and bytes are flowing.
            await cluster.wait_for(lambda: cluster.call_counts()[ROUTER_STREAM] >= 2, timeout=30, what="router streams")
            served = Counter(cluster.call_counts())
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
        finally:
            for peer in (*peers, process):
                if peer.poll() is None:
                    peer.kill()
                peer.wait(10)
    assert process.returncode == -signal.SIGKILL

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always", TruncatedCassetteWarning)
        with CassetteReader(cassette) as reader:
            events = list(reader)
            truncated_at = reader.truncated_at
    size = cassette.stat().st_size
    # At most the event being written is lost: the dropped tail is shorter than one record can be.
    if truncated_at is not None:
        assert size - truncated_at < 80 << 20
    # No gaps: sequence numbers run 0..n-1, so nothing before the kill went missing.
    assert [e.seq for e in events] == list(range(len(events)))
    # Every call the cluster had served when the recorder died was recorded (a CallStart is written before
    # the call is forwarded), except at most the one in flight.
    starts = Counter(e.method for e in events if isinstance(e, CallStart))
    missing = sum(max(0, n - starts[m]) for m, n in served.items())
    assert missing <= 1, (served, starts)
    assert starts[ROUTER_STREAM] >= 2
