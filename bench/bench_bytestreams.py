"""Flash-image-sized byte streams (issue 12): an upload and a download through the opendal driver, three ways.

- direct: the real 0.9.0 client and exporter (opendal `fs`) against the fake cluster;
- record: both peers through `jsreplay record` (a subprocess: its peak memory is its own);
- replay: the client alone against `jsreplay replay` of that cassette (a subprocess too).

The client uploads a file of `--mib` MiB (`write_from_path`) and reads it back (`read_into_path`); each is timed on
its own, and so is the whole session (lease, connect, both, release: replay decodes the tunnel when the client
connects). Figures: wall time of each as a ratio to direct, the cassette's size against the download, and the peak
RSS (VmHWM, read from /proc before the process is stopped) of the recorder and the replay server, each against
issue 12's goal of 150 MB.

    python bench/bench_bytestreams.py --mib 256
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsreplay.testing import FakeCluster, run_exporter
from jsreplay.testing.drivers import opendal_drivers, run_steps
from jsreplay.testing.recording import LABELS, SELECTOR


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def steps_for(source: Path, back: Path, timings: dict[str, float]) -> Callable[[Any], Any]:
    def steps(root: Any) -> Any:
        storage = root.children["storage"]
        started = time.perf_counter()
        storage.write_from_path("image.bin", str(source))
        timings["upload"] = time.perf_counter() - started
        started = time.perf_counter()
        storage.read_into_path("image.bin", str(back))
        timings["download"] = time.perf_counter() - started
        return True

    return steps


def digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def start_cli(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "jsreplay", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        found = re.search(r"listening on (\S+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise RuntimeError("the jsreplay command did not start")


def stop_cli(proc: subprocess.Popen[str]) -> float:
    peak = peak_rss_mib(proc.pid)
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
    return peak


async def run(mib: int, work: Path) -> dict[str, Any]:
    source, back = work / "image.bin", work / "back.bin"
    with source.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    want = digest(source)
    results: dict[str, Any] = {}
    cassette = work / "image.msgpack"
    ca_file = work / "ca.pem"
    for mode in ("direct", "record"):
        timings: dict[str, float] = {}
        async with FakeCluster() as cluster:
            exporter = cluster.new_exporter("exporter-1", dict(LABELS))
            client = cluster.new_client("alice")
            endpoint, ca = cluster.controller_endpoint, cluster.ca_pem
            proc = None
            if mode == "record":
                upstream_ca = work / "upstream-ca.pem"
                upstream_ca.write_bytes(cluster.ca_pem)
                proc, endpoint = start_cli(
                    ["record", "--upstream", cluster.controller_endpoint, "--upstream-ca", str(upstream_ca),
                     "--cassette", str(cassette), "--ca-out", str(ca_file), "--overwrite"]
                )  # fmt: skip
                ca = ca_file.read_bytes()
            root = work / f"storage-{mode}"
            root.mkdir()
            async with run_exporter(
                endpoint, exporter.token, ca, exporter.name, drivers=lambda root=root: opendal_drivers(root)
            ):
                await cluster.wait_exporter_available(exporter.name)
                session = await run_steps(
                    endpoint, client.token, ca, name="alice", selector=SELECTOR,
                    steps=steps_for(source, back, timings), timeout=1800,
                )  # fmt: skip
                timings["session"] = session["elapsed"]
            if proc is not None:
                results["recorder_peak_mib"] = stop_cli(proc)
        assert digest(back) == want, f"{mode}: the file read back differs"
        back.unlink()
        results[mode] = timings
    results["cassette_mib"] = cassette.stat().st_size / (1 << 20)
    timings = {}
    proc, endpoint = start_cli(["replay", str(cassette), "--ca-out", str(ca_file)])
    try:
        session = await run_steps(
            endpoint, "t", ca_file.read_bytes(), name="alice", selector=SELECTOR,
            steps=steps_for(source, back, timings), timeout=1800,
        )  # fmt: skip
        timings["session"] = session["elapsed"]
    finally:
        results["replay_peak_mib"] = stop_cli(proc)
    assert digest(back) == want, "replay: the file read back differs"
    results["replay"] = timings
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jsreplay-bench-") as where:
        results = asyncio.run(run(args.mib, Path(where)))
    direct = results["direct"]
    print(f"{args.mib} MiB through opendal; load average {os.getloadavg()[0]:.1f}")
    print(f"{'':10}{'upload s':>10}{'x direct':>10}{'download s':>12}{'x direct':>10}{'session s':>11}{'x direct':>10}")
    for mode in ("direct", "record", "replay"):
        t = results[mode]
        print(
            f"{mode:10}{t['upload']:10.2f}{t['upload'] / direct['upload']:10.2f}"
            f"{t['download']:12.2f}{t['download'] / direct['download']:10.2f}"
            f"{t['session']:11.2f}{t['session'] / direct['session']:10.2f}"
        )
    over = results["cassette_mib"] / args.mib - 1
    print(
        f"cassette: {results['cassette_mib']:.1f} MiB (download {args.mib} MiB, upload {args.mib} MiB): "
        f"{over:+.2%} over the download (goal: +1%)"
    )
    print(
        f"peak RSS: recorder {results['recorder_peak_mib']:.0f} MiB, replay server {results['replay_peak_mib']:.0f} MiB"
    )
    record, replay = results["record"], results["replay"]
    goals = {
        "recording at least 0.5x direct throughput": all(record[k] <= 2 * direct[k] for k in direct),
        "cassette at most the download + 1%": over <= 0.01,
        "replay at least as fast as direct": all(replay[k] <= direct[k] for k in direct),
        "recorder and replay server under 150 MB peak": max(results["recorder_peak_mib"], results["replay_peak_mib"])
        * (1 << 20)
        < 150e6,
    }
    for goal, met in goals.items():
        print(f"goal: {goal}: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
