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
from pathlib import Path

import anyio
import grpc
import msgpack
import pytest

from jsreplay.cassette.format import MAGIC, read_cassette

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
