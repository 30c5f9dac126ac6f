"""Stop `jsreplay record` by SIGINT and by SIGTERM in the middle of a real session, N times each; print the tally.

The issue 10 acceptance check: the real jumpstarter 0.9.0 exporter and a client holding a lease (connected,
a byte stream open through the tunnel) go through `jsreplay record` against jsreplay's fake cluster; the
recorder gets the signal; each trial passes when it exits 0, prints no traceback and no "writer is closed", and
its cassette reads back whole with an end event (status or cancel) for every call. Needs the demo extra.

Run: `python scripts/stop_trials.py [--count 20]` (exit 1 if any trial failed).
"""

from __future__ import annotations

import sys

from jsreplay.testing.stopping import main

if __name__ == "__main__":
    sys.exit(main())
