"""The README's main job: replay the shipped sample cassette and run the example client against it, offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jsreplay.cassette.format import read_cassette

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "cassettes" / "power-echo.msgpack"

pytestmark = pytest.mark.e2e


def test_sample_is_a_redacted_recording_of_the_real_peers() -> None:
    cassette = read_cassette(SAMPLE)
    assert cassette.truncated_at is None and cassette.header.redaction.enabled
    methods = {c.method.rsplit("/", 1)[1] for c in cassette.calls()}
    assert {"Register", "CreateLease", "GetLease", "Dial", "Stream", "DeleteLease", "Unregister"} <= methods
    user_agents = {str(v) for c in cassette.calls() for k, v in c.start.metadata if k == "user-agent"}
    assert any("grpc-python" in ua for ua in user_agents)


@pytest.mark.timeout(120)
def test_readme_main_job_replays_the_sample_with_the_example_client() -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "jsreplay", "replay", str(SAMPLE)),
            *("--exec", f"{sys.executable} {ROOT / 'examples' / 'client.py'}"),
        ],
        capture_output=True,
        text=True,
        timeout=100,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "lease acquired on exporter exporter-1" in lines
    assert "power reading: 5.0 V, 2.0 A" in lines
    assert any(line.startswith("echo: sent 65536 bytes, got 65536 back (identical") for line in lines)
    assert lines[-1] == "lease released"
    assert "0 missed" in done.stderr
