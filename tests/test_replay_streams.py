"""Byte streams inside a replayed tunnel: chosen by identity, checked by content (issue 12).

End to end with the real 0.9.0 client and exporter and real drivers (shell, opendal, pyserial on loop://, a nested
composite), recorded through the recording proxy against a fake cluster that is gone when replay runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

import jsreplay
from jsreplay.replay import ReplayReport
from jsreplay.replay.library import load_library
from jsreplay.replay.script import InnerMessages, InnerResponses
from jsreplay.replay.streams import ByteCheck, Elided
from jsreplay.session.streams import StreamIdentity, driver_paths, resource_handle, stream_identity
from jsreplay.testing.drivers import (
    FILE_CONTENT,
    SCENARIOS,
    SERIAL_BOOT,
    SERIAL_MESSAGE,
    opendal_drivers,
    run_steps,
)
from jsreplay.testing.recording import SELECTOR, RecordedRun, record_scenario
from jsreplay.tunnel import DecoderConfig
from tests.replay_cli import replay_cli_exit

# ---------------------------------------------------------------------------------------------------- units


def test_identity_from_request_metadata_names_the_driver_by_its_path() -> None:
    report = {
        "reports": [
            {"uuid": "r", "labels": {}},
            {"uuid": "b", "parent_uuid": "r", "labels": {"jumpstarter.dev/name": "board"}},
            {"uuid": "c", "parent_uuid": "b", "labels": {"jumpstarter.dev/name": "console"}},
            {"uuid": "e", "parent_uuid": "c", "labels": {"jumpstarter.dev/name": "echo"}},
        ]
    }
    names = driver_paths(report)
    assert names == {"r": "(root)", "b": "board", "c": "board/console", "e": "board/console/echo"}
    driver = stream_identity((("request", '{"kind":"driver","uuid":"e","method":"connect"}'),), names)
    assert driver == StreamIdentity("driver", "board/console/echo", "connect")
    assert str(driver) == "driver board/console/echo.connect"
    assert driver.path == "RouterService/Stream.bytes.driver.board/console/echo.connect"
    resource = stream_identity((("request", '{"kind":"resource","uuid":"b","x_jmp_content_encoding":null}'),), names)
    assert str(resource) == "resource board"
    unknown = stream_identity((("request", '{"kind":"driver","uuid":"zz","method":"connect"}'),), names)
    assert unknown.target == "zz"
    assert resource_handle((("resource", '{"kind":"client_stream","uuid":"h-1"}'),)) == "h-1"


@pytest.mark.parametrize("chunking", [1, 3, 7, 1000])
def test_byte_check_finds_the_first_difference_whatever_the_chunking(chunking: int) -> None:
    recorded = [b"hello ", b"over ", b"loop://\n"]
    live = b"hello ovEr loop://\n"
    check = ByteCheck(recorded)
    found = None
    for i in range(0, len(live), chunking):
        found = check.feed(live[i : i + chunking]) or found
    assert found is not None and found.offset == 8
    text = str(found)
    assert text.startswith("at byte 8: recorded 68656c6c6f206f76|6572206c6f6f703a2f2f0a 'hello ov|er loop://.', got ")
    assert "got 68656c6c6f206f76|45" in text and "'hello ov|E" in text  # as much of the client's bytes as came


def test_byte_check_same_bytes_in_other_chunks_is_no_difference() -> None:
    check = ByteCheck([b"abc", b"def"])
    assert check.feed(b"a") is None and check.feed(b"bcde") is None and check.feed(b"f") is None
    assert check.end() is None


def test_byte_check_longer_and_shorter() -> None:
    longer = ByteCheck([b"abc"])
    difference = longer.feed(b"abcd")
    assert difference is not None and difference.offset == 3 and "<end>" in difference.recorded
    shorter = ByteCheck([b"abcdef"])
    assert shorter.feed(b"abc") is None
    difference = shorter.end()
    assert difference is not None and difference.offset == 3 and "ended its stream after 3 of 6" in str(difference)


def test_byte_check_of_an_elided_recording_hashes_what_comes() -> None:
    data = bytes(range(256)) * 64
    elided = Elided(len(data), hashlib.sha256(data).hexdigest())
    same = ByteCheck([], elided)
    for i in range(0, len(data), 1000):
        assert same.feed(data[i : i + 1000]) is None
    assert same.end() is None
    other = ByteCheck([], elided)
    other.feed(data[:-1] + b"\x00")
    difference = other.end()
    assert difference is not None and "SHA-256" in str(difference)
    longer = ByteCheck([], elided)
    difference = longer.feed(data + b"x")
    assert difference is not None and difference.offset == len(data)


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


NAMES = ("serial", "opendal", "shell", "composite")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RecordedRun]]:
    where = tmp_path_factory.mktemp("streams")

    async def record_all() -> dict[str, RecordedRun]:
        runs = {}
        for name in NAMES:
            scenario = SCENARIOS[name]
            runs[name] = await record_scenario(
                where / f"{name}.msgpack", drivers=scenario.drivers, client_side=scenario.client()
            )
        return runs

    yield asyncio.run(record_all())


async def replay_steps(
    cassette: Path, steps: Callable[[Any], Any], **options: Any
) -> tuple[Any, BaseException | None, ReplayReport]:
    """Run `steps` with the real client against a replay of `cassette`: (result or None, error or None, report)."""
    result: Any = None
    error: BaseException | None = None
    async with jsreplay.replaying(cassette, **options) as server:
        try:
            with anyio.fail_after(60):
                run = await run_steps(
                    server.endpoint,
                    "any-token",
                    server.ca_pem,
                    name="alice",
                    selector=SELECTOR,
                    steps=steps,
                    timeout=45,
                )
            result = run["result"]
        except Exception as err:  # the client's exception, carrying the miss
            error = err
        report = server.report
    return result, error, report


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.timeout(600)
async def test_real_drivers_replay_identically_twenty_times(recorded: dict[str, RecordedRun]) -> None:
    for name in NAMES:
        for _ in range(20):
            result, error, report = await replay_steps(recorded[name].cassette, SCENARIOS[name].steps)
            assert error is None, f"{name}: {error}"
            assert result == recorded[name].result["result"], name
            assert report.missed == [] and report.errors == [], name


def _opendal_without_upload(root: Any) -> dict[str, Any]:
    storage = root.children["storage"]
    return {
        "read_back": storage.read_bytes("dir-a/file.bin") == FILE_CONTENT,
        "exists": storage.exists("dir-a/file.bin"),
    }


def _opendal_without_read(root: Any) -> dict[str, Any]:
    storage = root.children["storage"]
    storage.write_bytes("dir-a/file.bin", FILE_CONTENT)
    return {"exists": storage.exists("dir-a/file.bin")}


def _serial_without_echo(root: Any) -> dict[str, Any]:
    with root.children["serial"].pexpect() as console:
        console.send(SERIAL_BOOT)
        console.expect("login: ", timeout=10)
        return {"before_prompt": console.before}


def _serial_without_prompt(root: Any) -> dict[str, Any]:
    return {"echoed": _echo_only(root)}


def _echo_only(root: Any) -> bytes:
    with root.children["serial"].stream() as stream:
        stream.send(SERIAL_MESSAGE)
        got = b""
        while len(got) < len(SERIAL_MESSAGE):
            got += stream.receive()
    return got


def _composite_without_power(root: Any) -> dict[str, Any]:
    board = root.children["board"]
    echo = board.children["console"].children["echo"]
    with echo.stream() as stream:
        stream.send(b"nested" * 512)
        got = b""
        while len(got) < 3072:
            got += stream.receive()
    return {"echoed": got}


def _shell_without_methods(root: Any) -> dict[str, Any]:
    chunks = [tuple(chunk) for chunk in root.children["shell"].streamingcall("call_method", "lines", {})]
    return {"chunks": chunks}


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("name", "steps", "expected"),
    [
        ("opendal", _opendal_without_upload, {"read_back": True, "exists": True}),
        ("opendal", _opendal_without_read, {"exists": True}),
        ("serial", _serial_without_echo, {"before_prompt": b"booting...\nbuildroot "}),
        ("serial", _serial_without_prompt, {"echoed": SERIAL_MESSAGE}),
        ("composite", _composite_without_power, {"echoed": b"nested" * 512}),
        (
            "shell",
            _shell_without_methods,
            {"chunks": [("one\n", "", None), ("", "two\n", None), ("three\n", "", None), ("", "", 0.0)]},
        ),
    ],
    ids=["opendal-no-upload", "opendal-no-read", "serial-no-echo", "serial-no-prompt", "composite-no-power", "shell"],
)
async def test_skipping_a_step_leaves_the_other_steps_bytes_right(
    recorded: dict[str, RecordedRun], name: str, steps: Callable[[Any], Any], expected: dict[str, Any]
) -> None:
    result, error, report = await replay_steps(recorded[name].cassette, steps)
    assert error is None, str(error)
    assert result == expected
    assert report.missed == []


def _opendal_changed_upload(root: Any) -> Any:
    changed = bytearray(FILE_CONTENT)
    changed[5000] ^= 0xFF
    root.children["storage"].write_bytes("dir-a/file.bin", bytes(changed))
    return "uploaded"


def _serial_changed_bytes(root: Any) -> Any:
    with root.children["serial"].stream() as stream:
        stream.send(SERIAL_MESSAGE.replace(b"over", b"OVER"))
        return stream.receive()


def _shell_changed_argument(root: Any) -> Any:
    shell = root.children["shell"]
    shell.call("get_methods")
    return list(shell.streamingcall("call_method", "lines", {"EXTRA": "1"}))


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("name", "steps", "expect"),
    [
        (
            "opendal",
            _opendal_changed_upload,
            r"byte stream resource storage \(opendal\.msgpack#\d+/stream \d+\) differs from the recording at byte "
            r"5000: recorded \w+\|\w+ '.*', got \w+\|\w+",
        ),
        (
            "serial",
            _serial_changed_bytes,
            r"byte stream driver serial\.connect \(serial\.msgpack#\d+/stream \d+\) differs from the recording at "
            r"byte 6: recorded 68656c6c6f20\|6f766572\w* 'hello \|over.*', got 68656c6c6f20\|4f564552\w* 'hello \|OVER",
        ),
        (
            "shell",
            _shell_changed_argument,
            r"no recording matches /jumpstarter\.v1\.ExporterService/StreamingDriverCall .*differs at args\[1\]",
        ),
    ],
    ids=["changed-upload", "changed-serial-bytes", "changed-shell-argument"],
)
async def test_changed_bytes_are_a_miss_naming_the_stream_and_offset(
    recorded: dict[str, RecordedRun], name: str, steps: Callable[[Any], Any], expect: str
) -> None:
    result, error, report = await replay_steps(recorded[name].cassette, steps)
    assert report.missed, f"no miss; the client got {result!r}"
    reasons = " | ".join(m.reason for m in report.missed)
    assert re.search(expect, reasons), reasons
    assert error is not None or name == "opendal"  # the client is told (the upload fails or the stream breaks)


@pytest.mark.e2e
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("name", "steps", "expect"),
    [
        ("opendal", _opendal_changed_upload, "miss: jsreplay: byte stream resource storage"),
        ("serial", _serial_changed_bytes, "miss: jsreplay: byte stream driver serial.connect"),
        ("shell", _shell_changed_argument, "miss: jsreplay: no recording matches"),
    ],
    ids=["changed-upload", "changed-serial-bytes", "changed-shell-argument"],
)
def test_jsreplay_replay_exits_1_on_changed_bytes(
    recorded: dict[str, RecordedRun], name: str, steps: Callable[[Any], Any], expect: str
) -> None:
    code, err = replay_cli_exit(recorded[name].cassette, steps)
    assert code == 1, err
    assert expect in err and "Traceback" not in err


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_ignore_and_order_turn_the_check_off_and_the_report_says_so(recorded: dict[str, RecordedRun]) -> None:
    cassette = recorded["opendal"].cassette
    _, _, report = await replay_steps(
        cassette, _opendal_changed_upload, ignores=("RouterService/Stream.bytes.resource.*",)
    )
    assert report.missed == []
    assert report.unchecked_streams == {"resource storage": "--ignore RouterService/Stream.bytes.resource.*"}
    assert "bytes not checked for resource storage" in report.summary()
    _, _, report = await replay_steps(recorded["serial"].cassette, _serial_changed_bytes, match="order")
    assert report.missed == []
    assert report.unchecked_streams == {"driver serial.connect": "--match order"}


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.timeout(120)
async def test_a_stream_never_recorded_names_its_identity_and_the_nearest(
    recorded: dict[str, RecordedRun], tmp_path: Path
) -> None:
    def other_stream(root: Any) -> Any:
        # the composite's echo, asked of the power driver's uuid: a driver stream recorded for no such driver
        power = root.children["board"].children["power"]
        with power.stream("connect") as stream:
            stream.send(b"x")
            return stream.receive()

    _, error, report = await replay_steps(recorded["composite"].cassette, other_stream)
    assert error is not None
    reasons = " | ".join(m.reason for m in report.missed)
    assert "no recording of byte stream driver board/power.connect" in reasons, reasons
    assert "nearest: driver board/console/echo.connect" in reasons, reasons


# ---------------------------------------------------------------------------------------------------- big streams

IMAGE = random.Random(12).randbytes(3 << 20)  # an image of a few MiB: 48 messages of 64 KiB each way


def _image_steps(where: Path) -> Callable[[Any], Any]:
    """Upload IMAGE from a file and download it into another, as a flashing driver's client does."""

    def steps(root: Any) -> dict[str, Any]:
        storage = root.children["storage"]
        source, back = where / "image.bin", where / f"back-{uuid.uuid4().hex}.bin"
        source.write_bytes(IMAGE)
        storage.write_from_path("image.bin", str(source))
        storage.read_into_path("image.bin", str(back))
        data = back.read_bytes()
        back.unlink()
        return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    return steps


@pytest.mark.anyio
@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_a_download_of_megabytes_is_served_from_the_file_byte_for_byte(tmp_path: Path) -> None:
    # Every inner message over 64 bytes stays in the cassette and is read back when sent (or, for the upload,
    # when the check reaches it): the download's replies, the upload's chunks, the driver calls' answers.
    cassette = tmp_path / "image.msgpack"
    steps = _image_steps(tmp_path)
    run = await record_scenario(cassette, drivers=opendal_drivers, client_side=partial(run_steps, steps=steps))
    expected = {"size": len(IMAGE), "sha256": hashlib.sha256(IMAGE).hexdigest()}
    assert run.result["result"] == expected
    located = DecoderConfig(locate_over=64)
    tunnel = next(t for t in load_library([cassette], decoder=located).tunnels.values() if t.carries_calls)
    streams = [s for s in tunnel.inner if s.method.endswith("RouterService/Stream")]
    assert any(isinstance(s.responses, InnerResponses) and len(s.responses) > 40 for s in streams)
    assert any(isinstance(s.requests, InnerMessages) and len(s.requests) > 40 for s in streams)
    tunnel.file.close()
    for _ in range(2):
        result, error, report = await replay_steps(cassette, steps, decoder=located)
        assert error is None, error
        assert result == expected
        assert report.missed == [] and report.errors == []
