"""`jsreplay replay` as users run it: the CLI in a process of its own, the real client's steps against it, and
its exit code and stderr once it is stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from jsreplay.testing.drivers import run_steps
from jsreplay.testing.recording import SELECTOR


def replay_cli_exit(cassette: Path, steps: Callable[[Any], Any], *args: str) -> tuple[int, str]:
    """Run `steps` with the real client against `jsreplay replay CASSETTE ARGS`; (exit code, stderr)."""
    with tempfile.TemporaryDirectory() as where:
        ca = Path(where) / "ca.pem"
        process = subprocess.Popen(
            [sys.executable, "-m", "jsreplay", "replay", str(cassette), "--ca-out", str(ca), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            found = re.search(r"listening on (\S+) ", process.stdout.readline())
            assert found, "replay did not start"
            endpoint = found.group(1)

            async def client() -> None:
                with anyio.fail_after(90):
                    try:
                        await run_steps(endpoint, "t", ca.read_bytes(), name="alice", selector=SELECTOR, steps=steps)
                    except Exception:  # replay told the client; the exit code is what is looked at
                        pass

            asyncio.run(client())
        finally:
            process.send_signal(signal.SIGTERM)
            _, err = process.communicate(timeout=60)
    return process.returncode, err
