"""Stop `jsreplay record` with a signal in the middle of a real session, and check what it left behind.

Used by tests/test_record_stop.py and scripts/stop_trials.py (the issue's 20 + 20 trials). The recorder and
both real peers run as processes of their own: the recorder because the signal must reach a real
`jsreplay record`, the peers because once their proxy is gone they wait on retries that only killing ends.
The fake cluster runs on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from jsreplay.cassette.errors import TruncatedCassetteWarning
from jsreplay.cassette.format import read_cassette
from jsreplay.cassette.model import CallStart, Cancel, CancelSource, Status
from jsreplay.testing.cluster import FakeCluster
from jsreplay.testing.recording import LABELS

ROUTER_STREAM = "/jumpstarter.v1.RouterService/Stream"

# Lease, connect, power on, then open the echo byte stream and hold everything open (mid-session) until killed.
CLIENT_HOLDING_SCRIPT = """
import sys, time
from datetime import timedelta
from pathlib import Path
from jsreplay.testing import client_config
from jsreplay.testing.recording import SELECTOR
endpoint, token, ca_file, name, ready = sys.argv[1:6]
config = client_config(endpoint, token, Path(ca_file).read_bytes(), name=name, timeout=30)
with config.lease(selector=SELECTOR, duration=timedelta(minutes=10)) as lease:
    with lease.connect() as root:
        root.children["power"].on()
        with root.children["echo"].stream() as stream:
            stream.send(b"hello")
            got = b""
            while len(got) < 5:
                got += stream.receive()
            Path(ready).write_text("mid-session")
            time.sleep(120)
"""
EXPORTER_SCRIPT = """
import asyncio, sys
from pathlib import Path
from jsreplay.testing import run_exporter
endpoint, token, ca_file, name = sys.argv[1:5]
async def main():
    async with run_exporter(endpoint, token, Path(ca_file).read_bytes(), name):
        await asyncio.sleep(120)
asyncio.run(main())
"""


@dataclass
class StopTrial:
    """What one signalled stop left: the recorder's exit code and stderr, and the cassette's state."""

    signal_name: str
    returncode: int | None
    stderr: str
    calls: int = 0
    open_calls: list[str] = field(default_factory=list)  # methods of calls with no end event
    proxy_cancels: int = 0
    cancel_reasons: set[str] = field(default_factory=set)
    truncated: bool = False
    gaps: bool = False  # sequence numbers not 0..n-1
    read_error: str | None = None
    stop_seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        found = []
        if self.returncode != 0:
            found.append(f"exit {self.returncode}")
        if "Traceback" in self.stderr:
            found.append("traceback")
        if "writer is closed" in self.stderr:
            found.append("writer is closed")
        if self.read_error:
            found.append(f"cassette unreadable: {self.read_error}")
        if self.truncated:
            found.append("cassette truncated")
        if self.gaps:
            found.append("sequence gaps")
        if self.open_calls:
            found.append(f"{len(self.open_calls)} calls without an end: {sorted(Counter(self.open_calls).items())}")
        return found

    @property
    def ok(self) -> bool:
        return not self.problems


def recorder_process(upstream: str, ca_file: Path, cassette: Path, *extra: str) -> subprocess.Popen[str]:
    """`jsreplay record` in a process of its own, its CA written beside the cassette (`.ca.pem`)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jsreplay",
            "record",
            "--upstream",
            upstream,
            "--upstream-ca",
            str(ca_file),
            "--cassette",
            str(cassette),
            "--ca-out",
            str(cassette.with_suffix(".ca.pem")),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def peer_process(script: str, *args: str) -> subprocess.Popen[bytes]:
    """A real peer in a process of its own, running `script` (e.g. EXPORTER_SCRIPT) with `args`."""
    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _readline(stream: object, timeout: float) -> str:
    return await asyncio.wait_for(asyncio.to_thread(stream.readline), timeout)  # type: ignore[attr-defined]


async def _wait_exit(process: subprocess.Popen[str], timeout: float) -> int | None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return process.poll()


async def _wait_file(path: Path, timeout: float, peer: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if peer.poll() is not None:
            raise RuntimeError(f"the client exited ({peer.returncode}) before it was mid-session")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the client was not mid-session within {timeout}s")
        await asyncio.sleep(0.05)


def check_cassette(trial: StopTrial, cassette: Path) -> StopTrial:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TruncatedCassetteWarning)
            loaded = read_cassette(cassette)
    except Exception as err:  # reported, not raised: the tally counts it
        trial.read_error = f"{type(err).__name__}: {err}"
        return trial
    trial.truncated = loaded.truncated_at is not None or any(
        issubclass(w.category, TruncatedCassetteWarning) for w in caught
    )
    trial.gaps = [e.seq for e in loaded.events] != list(range(len(loaded.events)))
    ended: dict[int, Status | Cancel] = {}
    starts: dict[int, CallStart] = {}
    for event in loaded.events:
        if isinstance(event, CallStart):
            starts[event.call_id] = event
        elif isinstance(event, Status | Cancel):
            ended.setdefault(event.call_id, event)
    trial.calls = len(starts)
    trial.open_calls = [start.method for call_id, start in starts.items() if call_id not in ended]
    for end in ended.values():
        if isinstance(end, Cancel) and end.by is CancelSource.PROXY:
            trial.proxy_cancels += 1
            trial.cancel_reasons.add(end.reason)
    return trial


async def stop_mid_session(
    workdir: Path,
    signum: int = signal.SIGINT,
    *,
    with_client: bool = True,
    twice: bool = False,
    timeout: float = 60.0,
) -> StopTrial:
    """Record a real exporter (and a client holding a lease mid-session), then stop the recorder by `signum`.

    `twice`: send the signal a second time right after the first (a user pressing Ctrl-C again).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    cassette = workdir / "stopped.msgpack"
    ready = workdir / "client-ready"
    peers: list[subprocess.Popen[bytes]] = []
    process: subprocess.Popen[str] | None = None
    deadline = time.monotonic() + timeout
    async with FakeCluster() as cluster:
        ca_file = workdir / "cluster-ca.pem"
        ca_file.write_bytes(cluster.ca_pem)
        try:
            process = recorder_process(cluster.controller_endpoint, ca_file, cassette)
            line = await _readline(process.stdout, 30)
            match = re.search(r"listening on (\S+) ", line)
            if not match:
                process.kill()
                raise RuntimeError(f"recorder did not start: {line!r} {process.communicate(timeout=10)[1]}")
            endpoint, ca_out = match.group(1), str(cassette.with_suffix(".ca.pem"))
            exporter = cluster.new_exporter("exporter-1", LABELS)
            peers.append(peer_process(EXPORTER_SCRIPT, endpoint, exporter.token, ca_out, exporter.name))
            if with_client:
                client = cluster.new_client("alice")
                peers.append(
                    peer_process(CLIENT_HOLDING_SCRIPT, endpoint, client.token, ca_out, client.name, str(ready))
                )
                await _wait_file(ready, max(1.0, deadline - time.monotonic()), peers[-1])
            else:
                # The exporter's Status stream is open once it is available (Listen only comes with a lease).
                await cluster.wait_exporter_available(exporter.name, timeout=max(1.0, deadline - time.monotonic()))
            started = time.monotonic()
            process.send_signal(signum)
            if twice:
                await asyncio.sleep(0.05)
                if process.poll() is None:
                    process.send_signal(signum)
            returncode = await _wait_exit(process, 20)
            stop_seconds = time.monotonic() - started
        finally:
            for peer in peers:
                if peer.poll() is None:
                    peer.kill()
                peer.wait(10)
            if process is not None and process.poll() is None:
                process.kill()
    assert process is not None
    _, stderr = process.communicate(timeout=10)
    trial = StopTrial(signal.Signals(signum).name, returncode, stderr, stop_seconds=stop_seconds)
    return check_cassette(trial, cassette)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20, help="trials per signal (default 20)")
    args = parser.parse_args(argv)
    tally: dict[str, list[StopTrial]] = {}
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    async def go() -> None:
        with tempfile.TemporaryDirectory(prefix="jsreplay-stop-") as tmp:
            for signum in (signal.SIGINT, signal.SIGTERM):
                name = signal.Signals(signum).name
                for i in range(args.count):
                    trial = await stop_mid_session(Path(tmp) / f"{name}-{i}", signum)
                    tally.setdefault(name, []).append(trial)
                    verdict = "ok" if trial.ok else "; ".join(trial.problems)
                    print(
                        f"{name} #{i + 1}: exit {trial.returncode}, {trial.calls} calls, "
                        f"{trial.proxy_cancels} cancelled by the proxy, "
                        f"stopped in {trial.stop_seconds:.2f}s: {verdict}",
                        flush=True,
                    )
                    if not trial.ok and trial.stderr.strip():
                        print("    stderr: " + trial.stderr.strip().replace("\n", "\n    "), flush=True)

    asyncio.run(go())
    failed = 0
    for name, trials in tally.items():
        good = sum(t.ok for t in trials)
        failed += len(trials) - good
        print(f"{name}: {good}/{len(trials)} exit 0, no traceback, every open call ended in the cassette")
    return 1 if failed else 0
