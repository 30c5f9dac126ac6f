"""The reader with message references (issue 12, format 2): decoding speed with and without them.

Three files, each read by `CassetteReader` (best of `--rounds`; the files are in the page cache, so this is the
decoder's speed, not the disk's):

- small: `--records` small records (a call start every 10th, the rest 40-byte messages), no references: the hot
  path of show and diff, to compare with earlier versions;
- tunnel, full: one tunnel recorded from both ends, `--frames` frames of `--frame-bytes` each way, every frame
  stored twice (a client message on one call, the same bytes as a server message on the other), as format 1 did;
- tunnel, shared: the same, each server message a reference to the client message it repeats (what the recorder
  writes in format 2). Read in order, and back at random through `event_at` with each record's length.

    python bench/bench_references.py [--records 500000] [--frames 20000] [--frame-bytes 4096]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import msgpack
from bench_hostile import header_bytes, small_records  # same cassettes of small records, from the same script dir

from jsreplay.cassette.format import CassetteReader
from jsreplay.cassette.migrations import FORMAT_VERSION

STREAM = "/jumpstarter.v1.RouterService/Stream"


def tunnel(path: Path, frames: int, frame_bytes: int, *, shared: bool) -> list[tuple[int, int]]:
    """Write the tunnel file; each record's (offset, length)."""
    packer = msgpack.Packer(use_bin_type=True)
    spans: list[tuple[int, int]] = []
    rng = random.Random(1)
    with path.open("wb") as out:
        offset = out.write(header_bytes())

        def put(record: list[object]) -> None:
            nonlocal offset
            data = packer.pack(record)
            spans.append((offset, len(data)))
            offset += out.write(data)

        meta = [["authorization", "Bearer redacted:0123456789ab"]]
        seq = 0
        for call in (1, 2):
            put([1, call, seq, seq, STREAM, "router", meta, "peer", "tgt", None])
            seq += 1
        for i in range(frames):
            sender, receiver = (1, 2) if i % 2 == 0 else (2, 1)
            data = rng.randbytes(frame_bytes)
            put([2, sender, seq, seq, data])
            sent = spans[-1]
            put([4, receiver, seq + 1, seq + 1, list(sent) if shared else data, None])
            seq += 2
    return spans


def best_of(rounds: int, work: Callable[[], int]) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(rounds):
        start = time.perf_counter()
        count = work()
        best = min(best, time.perf_counter() - start)
    return best, count


def read_all(path: Path) -> int:
    with CassetteReader(path) as reader:
        return sum(1 for _ in reader)


def read_at(path: Path, spans: list[tuple[int, int]]) -> int:
    with CassetteReader(path) as reader:
        for offset, length in spans:
            reader.event_at(offset, length)
    return len(spans)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=500_000, help="small records")
    parser.add_argument("--frames", type=int, default=20_000, help="tunnel frames (each way, in total)")
    parser.add_argument("--frame-bytes", type=int, default=4096, help="bytes per tunnel frame")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"format version {FORMAT_VERSION}; load average {os.getloadavg()[0]:.1f}; best of {args.rounds}")
    with tempfile.TemporaryDirectory(prefix="jsreplay-references-") as tmp:
        small = Path(tmp) / "small.msgpack"
        small_records(small, args.records)
        report("small, in order", small, *best_of(args.rounds, partial(read_all, small)))
        kinds = [("full", False), ("shared", True)] if FORMAT_VERSION >= 2 else [("full", False)]
        for label, shared in kinds:
            path = Path(tmp) / f"{label}.msgpack"
            spans = tunnel(path, args.frames, args.frame_bytes, shared=shared)
            report(f"tunnel, {label}, in order", path, *best_of(args.rounds, partial(read_all, path)))
            shuffled = random.Random(2).sample(spans, len(spans))
            report(f"tunnel, {label}, event_at", path, *best_of(args.rounds, partial(read_at, path, shuffled)))


def report(label: str, path: Path, took: float, count: int) -> None:
    size = path.stat().st_size / 1e6
    print(f"{label:<26}{count:>9,} events {size:8.1f} MB {took:7.3f} s {count / took:>11,.0f} ev/s")


if __name__ == "__main__":
    main()
