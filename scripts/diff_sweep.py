"""Record each sweep scenario N times with the real peers and diff every pair; print a tally per scenario.

    PYTHONPATH=. python scripts/diff_sweep.py [--count 5] [--rounds 1] [--scenario NAME]... [--keep DIR]

Two recordings of one session must diff as "no difference": a pair that differs is printed with its
differences. With `--count 5`, 10 pairs per scenario per round. Exit status 1 when any pair differed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

from jsreplay.cassette.format import read_cassette
from jsreplay.inspect.diff import diff_views
from jsreplay.inspect.diff_output import render_text
from jsreplay.inspect.view import CassetteView, build_view
from jsreplay.testing.sweeps import SWEEP_NAMES, record_sweep


def load(path: Path) -> CassetteView:
    cassette = read_cassette(path)
    return build_view(cassette.header, cassette.calls(), events=len(cassette.events))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5, help="recordings per scenario and round")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--scenario", action="append", choices=SWEEP_NAMES, help="default: all")
    parser.add_argument("--keep", type=Path, help="record into this directory (kept) instead of a temporary one")
    args = parser.parse_args()
    names = args.scenario or list(SWEEP_NAMES)
    failed = False
    with tempfile.TemporaryDirectory(prefix="jsreplay-sweep-") as temporary:
        root = args.keep or Path(temporary)
        for name in names:
            pairs = differing = 0
            started = time.perf_counter()
            for round_ in range(args.rounds):
                directory = root / name / str(round_)
                directory.mkdir(parents=True, exist_ok=True)
                paths = asyncio.run(record_sweep(name, directory, args.count))
                views = [load(p) for p in paths]
                for (i, a), (j, b) in itertools.combinations(enumerate(views), 2):
                    pairs += 1
                    report = diff_views(a, b)
                    if report.differences:
                        differing += 1
                        print("\n".join(render_text(report, str(paths[i]), str(paths[j]))), flush=True)
            failed |= differing > 0
            took = time.perf_counter() - started
            print(f"{name}: {pairs - differing}/{pairs} pairs no difference ({took:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
