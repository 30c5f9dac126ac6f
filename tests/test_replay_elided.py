"""An upload recorded as length and SHA-256 (issue 12), end to end with the real 0.9.0 client, exporter and opendal.

The client uploads 3 MiB and reads it back through `jsreplay record --elide-above 1MiB`-equivalent settings; the
cassette then holds the download but not the upload, show/textconv print the upload's length and digest, replay
checks the upload by hashing what the client sends (a changed byte is a miss naming the stream, and `jsreplay
replay` exits 1), and verify says it cannot send the upload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import jsreplay
from jsreplay.testing import run_exporter
from jsreplay.testing.drivers import opendal_drivers, run_steps
from jsreplay.testing.recording import SELECTOR, record_scenario
from jsreplay.verify import verifying
from tests.replay_cli import replay_cli_exit

UPLOAD_SIZE = 3 << 20
THRESHOLD = 1 << 20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def steps_for(source: Path) -> Callable[[Any], Any]:
    def steps(root: Any) -> Any:
        storage = root.children["storage"]
        storage.write_from_path("image.bin", str(source))
        with tempfile.TemporaryDirectory() as where:
            back = Path(where) / "back.bin"
            storage.read_into_path("image.bin", str(back))
            return hashlib.sha256(back.read_bytes()).hexdigest()

    return steps


def client_side(source: Path) -> Callable[..., Awaitable[Any]]:
    async def run(endpoint: str, token: str, ca_pem: bytes, *, name: str, selector: str) -> Any:
        return (await run_steps(endpoint, token, ca_pem, name=name, selector=selector, steps=steps_for(source)))[
            "result"
        ]

    return run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, bytes]]:
    where = tmp_path_factory.mktemp("elided")
    upload = os.urandom(UPLOAD_SIZE)
    source = where / "image.bin"
    source.write_bytes(upload)
    cassette = where / "elided.msgpack"
    storage = where / "storage"
    storage.mkdir()
    run = asyncio.run(
        record_scenario(
            cassette,
            drivers=lambda: opendal_drivers(storage),
            client_side=client_side(source),
            elide_above=THRESHOLD,
        )
    )
    assert run.result == hashlib.sha256(upload).hexdigest()
    yield cassette, source, upload


def changed_copy(source: Path, at: int) -> Path:
    data = bytearray(source.read_bytes())
    data[at] ^= 0x01
    out = source.with_name(f"changed-{at}.bin")
    out.write_bytes(data)
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jsreplay", *args], capture_output=True, text=True, timeout=120)


def test_the_cassette_keeps_the_download_not_the_upload(recorded: tuple[Path, Path, bytes]) -> None:
    cassette, _, upload = recorded
    stored = cassette.read_bytes()
    # The same bytes went up and came back: the download is in the file, so a slice of it is; the upload's own
    # frames are not (an upload slice is found once per copy of the download).
    probe = upload[2_000_000:2_000_064]
    copies = stored.count(probe)
    assert 1 <= copies <= 2, copies  # one per recorded end of the tunnel
    digest = hashlib.sha256(upload).hexdigest()
    shown = cli("show", str(cassette))
    assert shown.returncode == 0, shown.stderr
    assert f"upload kept as length and digest only: {UPLOAD_SIZE} bytes, sha256:{digest}" in shown.stdout
    as_json = json.loads(cli("show", "--format", "json", str(cassette)).stdout)
    inner = [c for call in as_json["calls"] for c in call.get("tunnel") or [] if "elided" in c]
    assert [c["elided"] for c in inner] == [{"length": UPLOAD_SIZE, "sha256": digest}]
    page = cli("show", "--format", "html", str(cassette)).stdout  # the page's details data, which page.js shows
    assert f'"elided":{{"length":{UPLOAD_SIZE},"sha256":"{digest}"}}' in page
    text = cli("textconv", str(cassette)).stdout
    assert re.search(rf"> \{{elided: \{{length: {UPLOAD_SIZE}, sha256: \"{digest}\"\}}\}}", text), text


async def replay_with(cassette: Path, source: Path) -> tuple[Any, Any]:
    async with jsreplay.replaying(cassette) as server:
        result: Any = None
        with anyio.fail_after(90):
            try:
                run = await run_steps(
                    server.endpoint, "t", server.ca_pem, name="alice", selector=SELECTOR, steps=steps_for(source)
                )
                result = run["result"]
            except Exception as err:  # the client is told when its upload differs
                result = err
        report = server.report
    return result, report


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_replay_checks_the_elided_upload_by_its_digest(recorded: tuple[Path, Path, bytes]) -> None:
    cassette, source, upload = recorded
    result, report = await replay_with(cassette, source)
    assert result == hashlib.sha256(upload).hexdigest()
    assert report.missed == [] and report.unchecked_streams == {}
    result, report = await replay_with(cassette, changed_copy(source, 2_500_000))
    reasons = " | ".join(m.reason for m in report.missed)
    assert re.search(
        r"byte stream resource storage \(elided\.msgpack#\d+/stream \d+\) differs from the recording in its bytes: "
        r"recorded sha256:[0-9a-f]{64}, got sha256:[0-9a-f]{64} \(same length \(3145728 bytes\)",
        reasons,
    ), reasons


@pytest.mark.timeout(180)
def test_jsreplay_replay_exits_1_when_the_upload_differs(recorded: tuple[Path, Path, bytes]) -> None:
    cassette, source, _ = recorded
    code, err = replay_cli_exit(cassette, steps_for(changed_copy(source, 10)))
    assert code == 1, err
    assert "differs from the recording" in err and "sha256:" in err and "Traceback" not in err


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_verify_says_it_cannot_send_an_elided_upload(recorded: tuple[Path, Path, bytes], tmp_path: Path) -> None:
    cassette, _, _ = recorded
    storage = tmp_path / "storage"
    storage.mkdir()
    with anyio.fail_after(90):
        async with verifying(cassette, timeout=10) as v:
            async with run_exporter(
                v.endpoint, "any-token", v.ca_pem, "exporter-1", drivers=lambda: opendal_drivers(storage)
            ):
                report = await v.wait()
    text = report.render_text()
    assert re.search(
        r"note: tunnel elided\.msgpack#\d+ not verified: it uploads bytes the recording kept as length and SHA-256 "
        rf"only \(stream \d+: {UPLOAD_SIZE} bytes; jsreplay record --elide-above\), which verify cannot send; record "
        r"with --keep-payloads",
        text,
    ), text
    assert "Traceback" not in text


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_an_upload_elided_after_its_start_replays_and_checks_both_parts(
    recorded: tuple[Path, Path, bytes], tmp_path: Path
) -> None:
    # A hold of 256 KiB runs out long before the upload passes 1 MiB (a slow link does that): its first bytes are in
    # the cassette, the rest is elided; replay checks the start byte by byte and all of it by the digest.
    _, source, upload = recorded
    cassette = tmp_path / "late.msgpack"
    storage = tmp_path / "storage"
    storage.mkdir()
    run = await record_scenario(
        cassette,
        drivers=lambda: opendal_drivers(storage),
        client_side=client_side(source),
        elide_above=THRESHOLD,
        elision_hold_bytes=256 << 10,
    )
    assert run.result == hashlib.sha256(upload).hexdigest()
    stored = cassette.read_bytes()
    assert stored.count(upload[100_000:100_064]) == 2  # the kept start: once in the upload, once in the download
    assert stored.count(upload[2_000_000:2_000_064]) == 1  # past the threshold: only the download has it
    result, report = await replay_with(cassette, source)
    assert result == hashlib.sha256(upload).hexdigest() and report.missed == []
    result, report = await replay_with(cassette, changed_copy(source, 1000))  # in the kept start: the exact byte
    reasons = " | ".join(m.reason for m in report.missed)
    assert re.search(r"differs from the recording at byte 1000: recorded \w+\|\w+", reasons), reasons
    result, report = await replay_with(cassette, changed_copy(source, 3_000_000))  # past it: the digest
    reasons = " | ".join(m.reason for m in report.missed)
    assert "differs from the recording in its bytes: recorded sha256:" in reasons, reasons
