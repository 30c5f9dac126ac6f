"""Re-record the sample cassettes in cassettes/ with `jsreplay record`.

The real jumpstarter 0.9.0 exporter (MockPower and the network echo driver) and client run through the
recording proxy against jsreplay's fake cluster (jsreplay.testing). Needs the demo extra:
`pip install -e '.[demo]'`. Run: `python scripts/record_samples.py`; tests/test_samples.py checks that the
shipped samples replay with examples/client.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from jsreplay.testing.recording import record_scenario

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = {"power-echo.msgpack": "power on/off, a power read stream, 64 KiB through the echo driver"}


async def record_all(directory: Path) -> None:
    for name, what in SAMPLES.items():
        path = directory / name
        path.unlink(missing_ok=True)
        run = await record_scenario(path)
        print(f"{path}: {what}; {path.stat().st_size} bytes; client saw readings {run.result.readings}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "cassettes")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(record_all(args.dir))


if __name__ == "__main__":
    sys.exit(main())
