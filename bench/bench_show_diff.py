"""Benchmark: `jsreplay show` and `jsreplay diff` on two cassettes of 10,000 calls each (goal: under 5 s each).

The cassettes are synthesized from two real recordings of the scenario (the real 0.9.0 client and exporter
through `jsreplay record` against the fake cluster): each recording's calls are repeated, renumbered and
shifted in time until there are 10,000; each copy's tokens are made distinct so its tunnels pair as recorded.

    python bench/bench_show_diff.py [--calls 10000] [--keep DIR]

Prints the cassette sizes and, for each command run as a subprocess the way a user runs it (interpreter start
included, output to /dev/null), the best wall time of a few runs and its CPU time (on a shared machine the
wall time also measures the neighbours).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jsreplay.cassette.format import read_cassette, write_cassette
from jsreplay.cassette.model import AnyEvent, CallStart, Cassette, Metadata
from jsreplay.testing.recording import record_scenario

GOAL_S = 5.0


def _retoken(metadata: Metadata, copy: int) -> Metadata:
    # Tunnel ends pair by their (redacted) token: give every copy its own, the same for both ends.
    out = []
    for key, value in metadata:
        if key == "authorization" and isinstance(value, str) and "redacted:" in value:
            value = f"{value}-{copy}"
        out.append((key, value))
    return tuple(out)


def synthesize(source: Cassette, calls: int) -> Cassette:
    """`calls` calls made of copies of `source`'s calls, renumbered and shifted in time."""
    starts = [e for e in source.events if isinstance(e, CallStart)]
    per_copy = len(starts)
    span = max(e.t_ns for e in source.events) + 1_000_000
    max_id = max(e.call_id for e in source.events)
    events: list[AnyEvent] = []
    copy = 0
    while copy * per_copy < calls:
        keep = {s.call_id for s in starts[: calls - copy * per_copy]}
        for event in source.events:
            if event.call_id not in keep:
                continue
            changed = dataclasses.replace(
                event,
                call_id=event.call_id + copy * (max_id + 1),
                seq=len(events),
                t_ns=event.t_ns + copy * span,
            )
            if isinstance(changed, CallStart):
                changed = dataclasses.replace(changed, metadata=_retoken(changed.metadata, copy))
            events.append(changed)
        copy += 1
    return dataclasses.replace(source, events=tuple(events), truncated_at=None)


def timed(args: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its children) for one run that exits with a code in `ok`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode not in ok or "Traceback" in result.stderr:
        raise SystemExit(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--keep", type=Path, help="Write the cassettes here and keep them.")
    parser.add_argument("--repeat", type=int, default=2, help="Runs per command; the best is reported.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        where = args.keep or Path(scratch)
        where.mkdir(parents=True, exist_ok=True)
        recordings = [where / "recording-a.msgpack", where / "recording-b.msgpack"]

        async def record() -> None:
            for path in recordings:
                path.unlink(missing_ok=True)
                await record_scenario(path)

        asyncio.run(record())
        cassettes = []
        for name, recording in zip(("old", "new"), recordings, strict=True):
            path = where / f"{name}-{args.calls}.msgpack"
            started = time.perf_counter()
            write_cassette(path, synthesize(read_cassette(recording), args.calls), redactor=None, overwrite=True)
            size, took = path.stat().st_size / 2**20, time.perf_counter() - started
            print(f"{path.name}: {args.calls} calls, {size:.1f} MiB (built in {took:.1f} s)")
            cassettes.append(path)

        jsreplay = [sys.executable, "-m", "jsreplay"]
        old, new = (str(p) for p in cassettes)
        runs = {
            "show (text)": [*jsreplay, "show", old],
            "show --format json": [*jsreplay, "show", "--format", "json", old],
            "show --format mermaid": [*jsreplay, "show", "--format", "mermaid", old],
            "diff (text)": [*jsreplay, "diff", old, new],
            "diff --format json": [*jsreplay, "diff", "--format", "json", old, new],
            "textconv": [*jsreplay, "textconv", old],
        }
        baseline, _ = timed([*jsreplay, "--version"])
        print(f"interpreter start + imports (jsreplay --version): {baseline:.2f} s")
        print(f"best of {args.repeat} runs, wall time (CPU time of the process and its children):")
        worst = 0.0
        for label, command in runs.items():
            ok = (0, 1) if label.startswith("diff") else (0,)  # diff exits 1 when the cassettes differ
            elapsed, cpu = min(timed(command, ok) for _ in range(args.repeat))
            worst = max(worst, elapsed)
            verdict = "ok" if elapsed < GOAL_S else f"OVER the {GOAL_S:.0f} s goal"
            print(f"  {label:<24} {elapsed:6.2f} s  (CPU {cpu:5.2f} s)  {verdict}")
        print(f"slowest: {worst:.2f} s (goal: under {GOAL_S:.0f} s each)")


if __name__ == "__main__":
    main()
