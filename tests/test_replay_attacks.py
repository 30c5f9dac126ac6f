"""Replay under attack (issue 10): cut cassettes, garbage in tunnels, files changed while served, the mock exporter.

Every test here uses the shipped sample cassette (recorded from the real 0.9.0 client and exporter) so no
recording is needed first.
"""

from __future__ import annotations

import io
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import grpc
import msgpack
import pytest
from jumpstarter_protocol.jumpstarter.v1 import router_pb2

import jsreplay
from jsreplay.cassette.format import MAGIC, CassetteReader, read_cassette
from jsreplay.cassette.model import ClientMessage, ServerMessage
from jsreplay.cli.replay import exit_code
from jsreplay.replay import ReplayReport
from jsreplay.testing import client_config, leasing
from jsreplay.testing.peers import ECHO_PAYLOAD, _scenario
from jsreplay.testing.recording import SELECTOR
from jsreplay.tunnel import DecoderConfig

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

SAMPLE = Path(__file__).resolve().parent.parent / "cassettes" / "power-echo.msgpack"
GET_LEASE = "/jumpstarter.client.v1.ClientService/GetLease"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "jsreplay", "replay", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"listening on (\S+) ", line)
    assert match, f"unexpected first line {line!r}"
    return process, match.group(1)


def _stop_cli(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def _header_span(data: bytes) -> tuple[dict[str, object], int]:
    unpacker = msgpack.Unpacker(io.BytesIO(data[len(MAGIC) :]), raw=False)
    header = unpacker.unpack()
    return header, len(MAGIC) + unpacker.tell()


@pytest.mark.timeout(60)
async def test_a_header_changed_while_served_gives_data_loss_and_exit_2(tmp_path: Path) -> None:
    # The header is read again when the first response is read back: a format version changed under the server
    # must give DATA_LOSS naming the file and where, be listed under errors, and make the command exit 2.
    cassette = tmp_path / "changing.msgpack"
    shutil.copyfile(SAMPLE, cassette)
    data = cassette.read_bytes()
    header, end = _header_span(data)
    request = next(c for c in read_cassette(cassette).calls() if c.method == GET_LEASE).requests[0]
    report = tmp_path / "report.json"
    process, endpoint = _start_cli(str(cassette), "--plaintext", "--report", str(report))
    try:
        changed = msgpack.packb({**header, "format_version": 0})
        cassette.write_bytes(data[: len(MAGIC)] + changed + data[end:])
        async with grpc.aio.insecure_channel(endpoint) as channel:
            with anyio.fail_after(10), pytest.raises(grpc.aio.AioRpcError) as failed:
                await channel.unary_unary(GET_LEASE)(request)
    finally:
        code, err = _stop_cli(process)
    assert failed.value.code() == grpc.StatusCode.DATA_LOSS, failed.value
    details = failed.value.details() or ""
    assert str(cassette) in details and "byte" in details and GET_LEASE in details
    assert code == 2, err
    assert "Traceback" not in err and f"jsreplay: error: jsreplay: cannot serve {GET_LEASE}" in err
    assert '"errors": [' in report.read_text() and str(cassette) in report.read_text()


# ------------------------------------------------------------------------------------------ cut cassettes

CUT_RUN_BOUND_S = 40.0  # far above the client's own timeouts below: a run still going then has hung
CLIENT_TIMEOUT_S = 5.0  # the client's lease acquisition and dial timeouts


@dataclass
class CutRun:
    events: int  # events kept
    outcome: str  # "ok", "hung" or the client's error
    seconds: float
    exit_code: int
    report: ReplayReport


async def _replay_cut(cassette: Path, events: int) -> CutRun:
    started = time.monotonic()
    async with jsreplay.replaying(cassette, causal_timeout=2.0) as server:
        config = client_config(server.endpoint, "t", server.ca_pem, name="alice", timeout=CLIENT_TIMEOUT_S)
        outcome = "hung"
        with anyio.move_on_after(CUT_RUN_BOUND_S):
            try:
                await anyio.to_thread.run_sync(
                    partial(_scenario, config, SELECTOR, timedelta(minutes=10), ECHO_PAYLOAD), abandon_on_cancel=True
                )
                outcome = "ok"
            except Exception as err:  # the client's own exception, whatever its type: a clear end
                outcome = f"{type(err).__name__}: {err}"[:300]
        seconds = time.monotonic() - started
        report = server.report
    return CutRun(events, outcome, seconds, exit_code(report, None), report)


def _cuts(cassette: Path) -> list[int]:
    """Every record boundary: the offset of each event's record (keeping the events before it), and the end."""
    with CassetteReader(cassette) as reader:
        offsets = [offset for offset, _ in reader.iter_with_offsets()]
    return [*offsets, cassette.stat().st_size]


async def replay_cuts(tmp_path: Path, which: list[int] | None = None, parallel: int = 3) -> list[CutRun]:
    data = SAMPLE.read_bytes()
    cuts = _cuts(SAMPLE)
    chosen = range(len(cuts)) if which is None else which
    runs: list[CutRun] = []
    limit = anyio.Semaphore(parallel)

    async def one(events: int) -> None:
        path = tmp_path / f"cut-{events:04d}.msgpack"
        path.write_bytes(data[: cuts[events]])
        async with limit:
            runs.append(await _replay_cut(path, events))

    async with anyio.create_task_group() as group:
        for events in chosen:
            group.start_soon(one, events)
    return sorted(runs, key=lambda r: r.events)


def _unanswered(report: ReplayReport) -> int:
    return len(report.missed) + len(report.unfinished) + len(report.errors)


@pytest.mark.timeout(1200)
async def test_a_cassette_cut_at_every_record_boundary_never_hangs_the_real_client(tmp_path: Path) -> None:
    # A recorder killed mid-session leaves a cassette that ends after any event. Each cut is replayed to the real
    # 0.9.0 client (every boundary: 232 cuts of the sample, a few seconds each, three at a time).
    runs = await replay_cuts(tmp_path)
    lines = [
        f"{r.events:4d} events: {r.seconds:5.1f}s exit {r.exit_code} {len(r.report.missed)} missed "
        f"{len(r.report.unfinished)} unfinished: {r.outcome[:120]}"
        for r in runs
    ]
    print("\n".join(lines))
    hung = [line for r, line in zip(runs, lines, strict=True) if r.outcome == "hung"]
    assert not hung, "\n".join(hung)
    # A client that did not get through saw a call that could not be answered: the report lists it and the
    # command's exit code is not 0.
    silent = [line for r, line in zip(runs, lines, strict=True) if r.outcome != "ok" and not _unanswered(r.report)]
    assert not silent, "\n".join(silent)
    assert all((r.exit_code != 0) == bool(_unanswered(r.report)) for r in runs)
    for r in runs:
        for unfinished in r.report.unfinished:
            assert "has no end: the cassette ends at byte" in unfinished.reason, unfinished.reason
    assert runs[-1].outcome == "ok" and runs[-1].exit_code == 0  # the whole cassette still replays cleanly
    print(
        f"{len(runs)} cuts: {sum(r.outcome == 'ok' for r in runs)} ok, "
        f"{sum(r.outcome != 'ok' for r in runs)} clear client errors, max {max(r.seconds for r in runs):.1f}s, "
        f"exit codes {sorted({r.exit_code for r in runs})}"
    )


# ------------------------------------------------------------------------------------------ garbage in a tunnel

ROUTER_STREAM = "/jumpstarter.v1.RouterService/Stream"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# A SETTINGS frame on stream 1: HTTP/2 says a connection error (PROTOCOL_ERROR); gRPC's server drops the connection.
BAD_FRAME = b"\x00\x00\x00\x04\x00\x00\x00\x00\x01"


async def _into_tunnel(messages: list[bytes]) -> tuple[grpc.aio.AioRpcError, float, ReplayReport]:
    async with jsreplay.replaying(SAMPLE) as server:
        assert server.ca_pem is not None
        [token] = [t for t, tunnel in server.library.tunnels.items() if tunnel.carries_calls]
        creds = grpc.ssl_channel_credentials(root_certificates=server.ca_pem)
        started = time.monotonic()
        async with grpc.aio.secure_channel(server.endpoint, creds) as channel:
            call = channel.stream_stream(ROUTER_STREAM)(metadata=(("authorization", f"Bearer {token}"),))
            for message in messages:
                await call.write(message)
            with anyio.fail_after(10), pytest.raises(grpc.aio.AioRpcError) as failed:
                async for _ in call:  # what the mock exporter says before it gives up (SETTINGS, GOAWAY)
                    pass
        seconds = time.monotonic() - started
        report = server.report
    return failed.value, seconds, report


async def test_a_first_tunnel_message_that_is_not_a_stream_request_is_refused(
    capfd: pytest.CaptureFixture[str],
) -> None:
    failed, seconds, report = await _into_tunnel([b"\xff\xff\xff\xff"])
    assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT, failed
    assert "not a jumpstarter.v1.StreamRequest" in (failed.details() or "") and seconds < 5
    [error] = report.errors
    assert error.method == ROUTER_STREAM and "StreamRequest" in error.reason
    assert "Traceback" not in capfd.readouterr().err


async def test_a_bad_http2_frame_in_a_tunnel_ends_the_call_promptly(capfd: pytest.CaptureFixture[str]) -> None:
    request = router_pb2.StreamRequest
    frames = [request(payload=PREFACE, frame_type=router_pb2.FRAME_TYPE_DATA).SerializeToString()]
    frames.append(request(payload=BAD_FRAME, frame_type=router_pb2.FRAME_TYPE_DATA).SerializeToString())
    failed, seconds, report = await _into_tunnel(frames)
    assert failed.code() == grpc.StatusCode.INVALID_ARGUMENT, failed
    details = failed.details() or ""
    assert "HTTP/2" in details and "the last frame header: SETTINGS on stream 1, 0 bytes" in details, details
    assert seconds < 5
    [error] = report.errors
    assert error.method == ROUTER_STREAM and "SETTINGS on stream 1" in error.reason
    assert report.missed == [] and "Traceback" not in capfd.readouterr().err


# ------------------------------------------------------------------------------------------ the mock exporter

GET_REPORT = "/jumpstarter.v1.ExporterService/GetReport"


def _session_with_a_second_connection(endpoint: str, ca_pem: bytes, exporters: Callable[[], list[Any]]) -> str:
    config = client_config(endpoint, "t", ca_pem, name="alice", timeout=20)
    with leasing(config, selector=SELECTOR, duration=timedelta(minutes=10)) as lease, lease.connect() as root:
        power = root.children["power"]
        power.on()
        [exporter] = exporters()
        used = [n for _, n in exporter.matcher.scripts()]
        # Another local process connects to where the tunnel's mock exporter listens, and asks what the client asks.
        with grpc.insecure_channel(exporter.address) as channel:
            try:
                channel.unary_unary(GET_REPORT)(b"", timeout=3)
                outcome = "answered"
            except grpc.RpcError as err:
                outcome = err.code().name  # type: ignore[attr-defined]
        assert [n for _, n in exporter.matcher.scripts()] == used, "the second connection used up a recording"
        power.off()  # the client's own calls go on as recorded
        return outcome


@pytest.mark.timeout(90)
async def test_the_mock_exporter_refuses_a_second_local_connection() -> None:
    async with jsreplay.replaying(SAMPLE) as server:
        assert server.ca_pem is not None and server.handler is not None
        handler = server.handler
        with anyio.fail_after(60):
            outcome = await anyio.to_thread.run_sync(
                _session_with_a_second_connection,
                server.endpoint,
                server.ca_pem,
                lambda: list(handler.exporters),
                abandon_on_cancel=True,
            )
        report = server.report
    assert outcome == "UNAVAILABLE"  # could not connect at all
    assert report.missed == [] and report.errors == []


def _power_on_after(change: Callable[[], None], endpoint: str, ca_pem: bytes) -> str:
    config = client_config(endpoint, "t", ca_pem, name="alice", timeout=20)
    with leasing(config, selector=SELECTOR, duration=timedelta(minutes=10)) as lease, lease.connect() as root:
        change()  # the tunnel was decoded when the client connected (GetReport)
        try:
            root.children["power"].on()
        except Exception as err:  # the client's own exception, carrying the status
            return f"{type(err).__name__}: {err}"
        return "answered"


@pytest.mark.timeout(90)
async def test_a_tunnel_record_changed_while_served_gives_data_loss(tmp_path: Path) -> None:
    # Inner messages located in the file are read when sent: one whose record is no longer the tunnel's (here: the
    # same record, of another call) must give DATA_LOSS naming the file and the record's offset, and be an error.
    cassette = tmp_path / "changing.msgpack"
    shutil.copyfile(SAMPLE, cassette)
    async with jsreplay.replaying(cassette, decoder=DecoderConfig(locate_over=0)) as server:
        assert server.ca_pem is not None
        [tunnel] = [t for t in server.library.tunnels.values() if t.carries_calls]
        data = bytearray(cassette.read_bytes())
        for offset, length, event in tunnel.records():
            if isinstance(event, ClientMessage | ServerMessage):
                record = msgpack.unpackb(data[offset : offset + length], raw=False)
                record[1] += 1
                data[offset : offset + length] = msgpack.packb(record, use_bin_type=True)
        assert len(data) == cassette.stat().st_size
        with anyio.fail_after(60):
            outcome = await anyio.to_thread.run_sync(
                _power_on_after,
                lambda: cassette.write_bytes(bytes(data)),
                server.endpoint,
                server.ca_pem,
                abandon_on_cancel=True,
            )
        report = server.report
    assert outcome != "answered"
    [error] = [e for e in report.errors if e.method.endswith("/DriverCall")]
    assert "cannot serve /jumpstarter.v1.ExporterService/DriverCall inside the tunnel" in error.reason
    assert str(cassette) in error.reason and "byte" in error.reason, error.reason
    assert "the file changed since loading" in error.reason, error.reason


CUT_CLIENT = """
import asyncio, os
from pathlib import Path
from jsreplay.testing import run_client_scenario
from jsreplay.testing.recording import SELECTOR
try:
    asyncio.run(run_client_scenario(os.environ["JSREPLAY_ENDPOINT"], "t",
        Path(os.environ["JSREPLAY_CA_FILE"]).read_bytes(), name="alice", selector=SELECTOR, timeout=10))
except Exception as err:
    print("client failed:", type(err).__name__)
    raise SystemExit(3)
"""


@pytest.mark.timeout(90)
def test_cli_on_a_cut_cassette_says_unfinished_and_exits_2(tmp_path: Path) -> None:
    cassette = tmp_path / "cut.msgpack"
    cassette.write_bytes(SAMPLE.read_bytes()[: _cuts(SAMPLE)[20]])  # cut during the lease's first calls
    script = tmp_path / "client.py"
    script.write_text(CUT_CLIENT)
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "jsreplay", "replay", str(cassette), "--report", str(report)]
    done = subprocess.run(
        [*command, "--exec", f"{sys.executable} {script}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "1 unfinished (their recording has no end)" in done.stderr
    assert "jsreplay: unfinished: jsreplay: recording of /jumpstarter" in done.stderr
    assert "has no end: the cassette ends at byte" in report.read_text()
    assert "client failed" in done.stdout and "Traceback" not in done.stderr
