"""`jsreplay replay` with the real Jumpstarter 0.9.0 client, offline: the cluster is gone when it runs."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import anyio
import grpc
import pytest
from jumpstarter_protocol.jumpstarter.client.v1 import client_pb2

import jsreplay
from jsreplay.cassette.format import CassetteReader, read_cassette
from jsreplay.replay import ReplayReport
from jsreplay.testing import FakeCluster, client_config, leasing, run_client_scenario
from jsreplay.testing.recording import SELECTOR, RecordedRun, record_scenario

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
GET_LEASE = "/jumpstarter.client.v1.ClientService/GetLease"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedRun]:
    cassette = tmp_path_factory.mktemp("replay") / "session.msgpack"
    # Recorded against a fake cluster that is stopped before any replay runs.
    yield asyncio.run(record_scenario(cassette))


async def replay_once(cassette: Path) -> tuple[dict[str, object], bytes, ReplayReport]:
    async with jsreplay.replaying(cassette) as server:
        result = await run_client_scenario(
            server.endpoint, "any-token", server.ca_pem, name="alice", selector=SELECTOR, timeout=30
        )
        report = server.report
    # A tunnel's decoded inner calls are held while it is open, not for the server's life.
    assert not any(t.decoded for t in server.library.tunnels.values())
    return result.comparable(), result.echoed, report


@pytest.mark.timeout(240)
async def test_real_client_replays_offline_twenty_times(recorded: RecordedRun) -> None:
    for _ in range(20):
        with anyio.fail_after(60):
            seen, echoed, report = await replay_once(recorded.cassette)
        assert seen == recorded.result.comparable()  # same driver results, readings, exporter status
        assert echoed == recorded.result.sent  # the same streamed bytes
        assert report.missed == [] and report.causal_timeouts == []
        inner = {method.rsplit("/", 1)[1] for _, method, n in report.inner if n}
        assert inner >= {"GetReport", "DriverCall", "StreamingDriverCall", "Stream", "GetStatus"}


def _call_driver_with_unrecorded_argument(endpoint: str, ca_pem: bytes) -> str:
    config = client_config(endpoint, "any-token", ca_pem, name="alice", timeout=20)
    # The same lease request as the recording (a different duration would itself be a miss).
    with leasing(config, selector=SELECTOR, duration=timedelta(minutes=10)) as lease, lease.connect() as root:
        power = root.children["power"]
        power.on()  # recorded: served
        try:
            power.call("on", 42)  # never recorded with an argument
        except Exception as err:  # the client wraps the gRPC error in its own exception type
            return str(err)
    raise AssertionError("the unrecorded call did not fail")


@pytest.mark.timeout(90)
async def test_unrecorded_call_gets_a_clear_miss_inside_the_clients_exception(
    recorded: RecordedRun, tmp_path: Path
) -> None:
    async with jsreplay.replaying(recorded.cassette) as server:
        assert server.ca_pem is not None
        with anyio.fail_after(60):
            message = await anyio.to_thread.run_sync(
                _call_driver_with_unrecorded_argument, server.endpoint, server.ca_pem, abandon_on_cancel=True
            )
        report = server.report
    assert "no recording matches /jumpstarter.v1.ExporterService/DriverCall" in message
    assert "args[0]: recorded '<absent>', got 42.0" in message
    [miss] = report.missed
    assert miss.method == "/jumpstarter.v1.ExporterService/DriverCall" and "args[0]" in miss.reason


async def test_timestamps_are_shifted_to_now(recorded: RecordedRun) -> None:
    calls = [c for c in read_cassette(recorded.cassette).calls() if c.method == GET_LEASE]
    request = calls[0].requests[0]
    async with jsreplay.replaying(recorded.cassette) as server:
        assert server.ca_pem is not None
        creds = grpc.ssl_channel_credentials(root_certificates=server.ca_pem)
        async with grpc.aio.secure_channel(server.endpoint, creds) as channel:
            with anyio.fail_after(10):
                raw = await channel.unary_unary(GET_LEASE)(request)
    lease = client_pb2.Lease.FromString(raw)
    recorded_lease = client_pb2.Lease.FromString(calls[0].responses[0])
    now = time.time()
    # It began "just now", not when it was recorded; every timestamp moved by the same amount.
    assert abs(lease.effective_begin_time.seconds - now) < 60
    shift = lease.effective_begin_time.seconds - recorded_lease.effective_begin_time.seconds
    assert shift >= 0
    for live, old in zip(lease.conditions, recorded_lease.conditions, strict=True):
        assert live.lastTransitionTime.seconds - old.lastTransitionTime.seconds == shift


async def test_a_cassette_changed_while_served_fails_the_call_clearly(recorded: RecordedRun, tmp_path: Path) -> None:
    # Responses are read from the file when sent: a file rewritten under the server must give a clear error
    # naming it, not a wrong answer or a traceback.
    cassette = tmp_path / "changing.msgpack"
    data = recorded.cassette.read_bytes()
    cassette.write_bytes(data)
    with CassetteReader(cassette) as reader:
        first_event = next(offset for offset, _ in reader.iter_with_offsets())
    request = next(c for c in read_cassette(cassette).calls() if c.method == GET_LEASE).requests[0]
    async with jsreplay.replaying(cassette) as server:
        assert server.ca_pem is not None
        cassette.write_bytes(data[:first_event] + bytes(len(data) - first_event))
        creds = grpc.ssl_channel_credentials(root_certificates=server.ca_pem)
        async with grpc.aio.secure_channel(server.endpoint, creds) as channel:
            with anyio.fail_after(10), pytest.raises(grpc.aio.AioRpcError) as failed:
                await channel.unary_unary(GET_LEASE)(request)
        report = server.report
    assert failed.value.code() == grpc.StatusCode.DATA_LOSS
    assert str(cassette) in (failed.value.details() or "") and GET_LEASE in (failed.value.details() or "")
    [error] = report.errors
    assert error.method == GET_LEASE and str(cassette) in error.reason
    assert report.to_json()["errors"][0]["method"] == GET_LEASE


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "jsreplay", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (\S+) ", line)
    assert match, f"unexpected first line {line!r}"
    return process, match.group(1)


CLIENT_SCRIPT = """
import asyncio, os
from pathlib import Path
from jsreplay.testing import run_client_scenario
from jsreplay.testing.recording import SELECTOR
result = asyncio.run(run_client_scenario(os.environ["JSREPLAY_ENDPOINT"], "t",
    Path(os.environ["JSREPLAY_CA_FILE"]).read_bytes(), name="alice", selector=SELECTOR, timeout=30))
print("readings", result.readings, "echo", result.echoed == result.sent)
"""


@pytest.mark.timeout(120)
def test_cli_exec_report_and_exit_codes(recorded: RecordedRun, tmp_path: Path) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    report = tmp_path / "report.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jsreplay",
            "replay",
            str(recorded.cassette),
            "--report",
            str(report),
            "--exec",
            f"{sys.executable} {script}",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert "readings ((0.0, 0.0), (5.0, 2.0)) echo True" in done.stdout
    assert '"missed": []' in report.read_text()

    # A missing cassette, a wrong flag: one line, exit 2.
    bad = subprocess.run(
        [sys.executable, "-m", "jsreplay", "replay", str(tmp_path / "nope.msgpack")], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no such cassette" in bad.stderr and "Traceback" not in bad.stderr
    corrupt = tmp_path / "corrupt.msgpack"
    corrupt.write_bytes(b"garbage")
    bad = subprocess.run([sys.executable, "-m", "jsreplay", "replay", str(corrupt)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a jsreplay cassette" in bad.stderr and "Traceback" not in bad.stderr


GET_EXPORTER = "/jumpstarter.client.v1.ClientService/GetExporter"


async def get_exporter(endpoint: str, ca_pem: bytes, token: str, name: str = "exporter-1") -> client_pb2.Exporter:
    creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
    async with grpc.aio.secure_channel(endpoint, creds) as channel:
        request = client_pb2.GetExporterRequest(name=f"namespaces/default/exporters/{name}")
        raw = await channel.unary_unary(GET_EXPORTER)(
            request.SerializeToString(), metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
    return client_pb2.Exporter.FromString(raw)


async def _through_cli(
    cassette: Path, mode: str, upstream: list[str], ca_out: Path, token: str, names: tuple[str, ...] = ("exporter-1",)
) -> tuple[str, object]:
    process, endpoint = _start_cli("replay", str(cassette), "--mode", mode, "--ca-out", str(ca_out), *upstream)
    try:
        with anyio.fail_after(20):
            exporters = [await get_exporter(endpoint, ca_out.read_bytes(), token, name) for name in names]
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
    return err, exporters[0] if len(exporters) == 1 else exporters


@pytest.mark.timeout(120)
async def test_new_episodes_forwards_misses_and_appends_them(tmp_path: Path) -> None:
    cassette = tmp_path / "episodes.msgpack"
    ca_out = tmp_path / "server-ca.pem"
    async with FakeCluster() as cluster:
        ca_file = tmp_path / "cluster-ca.pem"
        ca_file.write_bytes(cluster.ca_pem)
        cluster.new_exporter("exporter-1", {"board": "one"})
        cluster.new_exporter("exporter-2", {"board": "two"})
        token = cluster.new_client("alice").token
        upstream = ["--upstream", cluster.controller_endpoint, "--upstream-ca", str(ca_file)]
        await _through_cli(cassette, "once", upstream, ca_out, token)
        assert cluster.call_counts()[GET_EXPORTER] == 1
        # exporter-1 is in the cassette (served by replay); exporter-2 is not (forwarded, recorded).
        err, both = await _through_cli(cassette, "new_episodes", upstream, ca_out, token, ("exporter-1", "exporter-2"))
        assert "1 forwarded to the upstream and recorded" in err, err
        assert cluster.call_counts()[GET_EXPORTER] == 2
        assert [dict(e.labels) for e in both] == [{"board": "one"}, {"board": "two"}]  # type: ignore[attr-defined]

    # The cluster is gone: both are replayed from the one cassette now.
    err, both = await _through_cli(cassette, "none", [], ca_out, "t", ("exporter-1", "exporter-2"))
    assert "0 missed" in err and [dict(e.labels) for e in both] == [{"board": "one"}, {"board": "two"}]  # type: ignore[attr-defined]
    events = read_cassette(cassette).events
    assert [e.seq for e in events] == list(range(len(events)))  # numbering went on where it stopped
    assert len({e.call_id for e in events}) == 2


@pytest.mark.timeout(120)
async def test_record_modes_once_and_all(tmp_path: Path) -> None:
    cassette = tmp_path / "modes.msgpack"
    ca_out = tmp_path / "server-ca.pem"
    async with FakeCluster() as cluster:
        ca_file = tmp_path / "cluster-ca.pem"
        ca_file.write_bytes(cluster.ca_pem)
        cluster.new_exporter("exporter-1", {"board": "one"})
        token = cluster.new_client("alice").token
        upstream = ["--upstream", cluster.controller_endpoint, "--upstream-ca", str(ca_file)]
        # once, no cassette yet: records from the upstream.
        err, exporter = await _through_cli(cassette, "once", upstream, ca_out, token)
        assert "recording" in err and cassette.exists()
        assert getattr(exporter, "labels", {}) == {"board": "one"}
        assert cluster.call_counts()[GET_EXPORTER] == 1
    first = cassette.read_bytes()

    # once, cassette present: replays, with the cluster gone.
    err, exporter = await _through_cli(cassette, "once", upstream, ca_out, "another-token")
    assert "0 missed" in err and getattr(exporter, "labels", {}) == {"board": "one"}
    assert cassette.read_bytes() == first

    # all: always re-records, replacing the cassette.
    async with FakeCluster() as cluster:
        ca_file.write_bytes(cluster.ca_pem)
        cluster.new_exporter("exporter-1", {"board": "two"})
        token = cluster.new_client("alice").token
        upstream = ["--upstream", cluster.controller_endpoint, "--upstream-ca", str(ca_file)]
        err, exporter = await _through_cli(cassette, "all", upstream, ca_out, token)
        assert getattr(exporter, "labels", {}) == {"board": "two"}
    assert cassette.read_bytes() != first
    [call] = [c for c in read_cassette(cassette).calls() if c.method == GET_EXPORTER]
    assert client_pb2.Exporter.FromString(call.responses[0]).labels == {"board": "two"}
