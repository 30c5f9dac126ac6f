"""Benchmark: `jsreplay show --format html` on a 10,000-call cassette, and the page's first paint in Chromium.

The cassette is synthesized as in bench_show_diff.py (copies of a real recording of the scenario). Prints the
best time of `show --format html` over --runs runs, the page's size, and, in headless Chromium (Debian's
`chromium`), when the first rows were in the DOM (`data-first-rows-ms`: from navigation start, so parsing the
HTML and its embedded data included; the paint follows in the same frame) and the whole browser run (start to
DOM dump).

    python bench/bench_show_html.py [--calls 10000] [--runs 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jsreplay.cassette.format import read_cassette, write_cassette
from jsreplay.testing.browser import dump_dom, find_browser
from jsreplay.testing.recording import record_scenario

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_show_diff import synthesize

GOAL_MS = 3000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="keep the cassette and the page in this directory")
    args = parser.parse_args()
    browser = find_browser()
    if browser is None:
        raise SystemExit("no Chromium found: apt-get install chromium (or set JSREPLAY_BROWSER)")
    with tempfile.TemporaryDirectory() as temp:
        where = args.keep or Path(temp)
        where.mkdir(parents=True, exist_ok=True)
        source = where / "source.msgpack"
        source.unlink(missing_ok=True)
        asyncio.run(record_scenario(source))
        big = where / f"calls-{args.calls}.msgpack"
        write_cassette(big, synthesize(read_cassette(source), args.calls), redactor=None, overwrite=True)
        page = where / f"calls-{args.calls}.html"
        show_s = float("inf")
        for _ in range(args.runs):  # the best of a few: the machine is shared
            start = time.perf_counter()
            with page.open("w") as out:
                subprocess.run(
                    [sys.executable, "-m", "jsreplay", "show", "--format", "html", str(big)], stdout=out, check=True
                )
            show_s = min(show_s, time.perf_counter() - start)
        print(
            f"{args.calls} calls: cassette {big.stat().st_size / 2**20:.0f} MiB, "
            f"page {page.stat().st_size / 2**20:.1f} MiB"
        )
        print(f"show --format html: {show_s:.2f} s (best of {args.runs})")
        for _ in range(args.runs):
            start = time.perf_counter()
            dom = dump_dom(browser, page.as_uri(), timeout=240)
            run_s = time.perf_counter() - start
            found = re.search(r'data-first-rows-ms="(\d+)"', dom)
            first = int(found.group(1)) if found else -1
            verdict = "ok" if 0 <= first < GOAL_MS else "OVER GOAL"
            print(
                f"chromium: first rows in the DOM at {first} ms (goal {GOAL_MS} ms: {verdict}); whole run {run_s:.2f} s"
            )


if __name__ == "__main__":
    main()
