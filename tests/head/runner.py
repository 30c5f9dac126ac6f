"""Run the development peers (tests/head/peers.py) as subprocesses of the head venv's python, from async tests."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from tests.head.venv import head_python

PEERS = Path(__file__).with_name("peers.py")


def _ca_file(ca_pem: bytes, directory: Path) -> str:
    fd, path = tempfile.mkstemp(suffix=".pem", dir=directory)
    os.write(fd, ca_pem)
    os.close(fd)
    return path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "JUMPSTARTER_GRPC_INSECURE")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@asynccontextmanager
async def head_exporter(
    endpoint: str, token: str, ca_pem: bytes, name: str, tmp: Path, *, motd: str | None = None, timeout: float = 40
) -> AsyncIterator[asyncio.subprocess.Process]:
    """The development exporter, registered, until the block ends (then stopped: OFFLINE, Unregister)."""
    args = ["exporter", "--endpoint", endpoint, "--token", token, "--ca-file", _ca_file(ca_pem, tmp), "--name", name]
    if motd is not None:
        args += ["--motd", motd]
    log = (tmp / f"exporter-{name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(head_python()),
        str(PEERS),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env=_env(),
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"development exporter exited: {(tmp / f'exporter-{name}.log').read_text()[-3000:]}")
        yield proc
    finally:
        if proc.returncode is None:
            assert proc.stdin is not None
            proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 25)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def head_client(
    endpoints: Sequence[str],
    token: str,
    ca_pem: bytes,
    name: str,
    selector: str,
    tmp: Path,
    *,
    context: dict[str, str] | None = None,
    log_stream: bool = False,
    timeout: float = 120,
) -> list[dict[str, Any]]:
    """Run the development client scenario once per endpoint; what it saw each time (or {"error": ...})."""
    args = ["client", "--token", token, "--ca-file", _ca_file(ca_pem, tmp), "--name", name, "--selector", selector]
    for endpoint in endpoints:
        args += ["--endpoint", endpoint]
    for key, value in (context or {}).items():
        args += ["--context", f"{key}={value}"]
    if log_stream:
        args.append("--log-stream")
    log_path = tmp / f"client-{name}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            str(head_python()), str(PEERS), *args, stdout=asyncio.subprocess.PIPE, stderr=log, env=_env()
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise TimeoutError(f"development client took over {timeout}s: {log_path.read_text()[-3000:]}") from None
    results = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    if len(results) != len(endpoints):
        raise RuntimeError(f"development client printed {len(results)} results: {log_path.read_text()[-3000:]}")
    return results
