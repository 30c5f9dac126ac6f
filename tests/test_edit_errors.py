"""Bad input to redact, trim and cat: one line, exit 2, no traceback, inputs untouched."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parent.parent / "cassettes" / "power-echo.msgpack"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jsreplay", *map(str, args)], capture_output=True, text=True, timeout=60
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.msgpack"
    data = SAMPLE.read_bytes()
    path.write_bytes(data[:200] + b"\xc1" * 64 + data[264:])  # 0xc1 is never valid msgpack
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["redact", "{corrupt}", "{out}"],
        ["trim", "{corrupt}", "{out}", "--method", "*"],
        ["cat", "{corrupt}", "{sample}", "{out}"],
        ["redact", "{sample}", "{existing}"],
        ["trim", "{sample}", "{existing}"],
        ["cat", "{sample}", "{corrupt}", "{existing}"],
        ["redact", "{sample}", "{out}", "--no-such-flag"],
        ["trim", "{sample}", "{out}", "--call", "x"],
        ["redact", "{sample}", "{out}", "--scrub", "short"],
        ["redact", "{sample}", "{sample}"],
        ["cat", "{sample}", "{out}"],
        ["trim", "{sample}", "{out}", "--method", "NoSuchMethod"],
    ],
)
def test_bad_input_is_one_line_exit_2_and_touches_nothing(command: list[str], corrupt: Path, tmp_path: Path) -> None:
    existing = tmp_path / "existing.msgpack"
    existing.write_bytes(b"keep me")
    sample = tmp_path / "sample.msgpack"
    sample.write_bytes(SAMPLE.read_bytes())
    before = {p: digest(p) for p in (corrupt, existing, sample)}
    names = {"corrupt": corrupt, "out": tmp_path / "out.msgpack", "existing": existing, "sample": sample}
    done = run(*(part.format(**names) for part in command))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines and ("jsreplay: error:" in lines[-1] or lines[-1].startswith("Error:")), done.stderr
    if lines[-1].startswith("jsreplay: error:"):
        assert len(lines) == 1, done.stderr
    assert {p: digest(p) for p in before} == before
    assert not (tmp_path / "out.msgpack").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corrupt.msgpack", "existing.msgpack", "sample.msgpack"]
