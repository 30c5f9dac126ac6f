"""A small Jumpstarter test script, written as a user would, run against `jsreplay replay` (or a real cluster).

It leases a board (selector example.com/board=demo), powers it on and off, reads the power meter, sends bytes
through the echo driver and prints what it saw. Endpoint and CA come from the environment that
`jsreplay replay --exec` sets (JSREPLAY_ENDPOINT, JSREPLAY_CA_FILE), or from --endpoint/--ca.

    jsreplay replay cassettes/power-echo.msgpack --exec "python examples/client.py"
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
from datetime import timedelta
from pathlib import Path

from jumpstarter.config.client import ClientConfigV1Alpha1, ClientConfigV1Alpha1Drivers, ClientConfigV1Alpha1Lease
from jumpstarter.config.common import ObjectMeta
from jumpstarter.config.tls import TLSConfigV1Alpha1

# The bytes the sample cassette's session echoed: 64 KiB with a known pattern, sent in 4 KiB chunks.
PAYLOAD = b"".join(i.to_bytes(2, "big") * 2 for i in range(16 * 1024))
CHUNK = 4096


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", default=os.environ.get("JSREPLAY_ENDPOINT"))
    parser.add_argument("--ca", type=Path, default=os.environ.get("JSREPLAY_CA_FILE"))
    parser.add_argument("--token", default="replay-needs-no-real-token")
    args = parser.parse_args()
    if not args.endpoint:
        parser.error("no endpoint: run under `jsreplay replay --exec`, or pass --endpoint")

    config = ClientConfigV1Alpha1(
        alias="example",
        metadata=ObjectMeta(namespace="default", name="alice"),
        endpoint=args.endpoint,
        token=args.token,
        tls=TLSConfigV1Alpha1(ca=base64.b64encode(args.ca.read_bytes()).decode() if args.ca else ""),
        drivers=ClientConfigV1Alpha1Drivers(
            allow=["jumpstarter.client.*", "jumpstarter_driver_power.*", "jumpstarter_driver_network.*"]
        ),
        leases=ClientConfigV1Alpha1Lease(acquisition_timeout=30, dial_timeout=30.0, retry_timeout=0),
    )
    with config.lease(selector="example.com/board=demo", duration=timedelta(minutes=10)) as lease:
        print(f"lease acquired on exporter {lease.exporter_name}")
        with lease.connect() as root:
            power = root.children["power"]
            power.on()
            print("power on: ok")
            power.off()
            print("power off: ok")
            for reading in power.read():
                print(f"power reading: {reading.voltage} V, {reading.current} A")
            echoed = bytearray()
            with root.children["echo"].stream() as stream:
                for offset in range(0, len(PAYLOAD), CHUNK):
                    chunk = PAYLOAD[offset : offset + CHUNK]
                    stream.send(chunk)
                    wanted = len(echoed) + len(chunk)
                    while len(echoed) < wanted:
                        echoed += stream.receive()
            same = "identical" if bytes(echoed) == PAYLOAD else "DIFFERENT"
            print(
                f"echo: sent {len(PAYLOAD)} bytes, got {len(echoed)} back ({same}, sha256 "
                f"{hashlib.sha256(echoed).hexdigest()[:16]})"
            )
    print("lease released")


if __name__ == "__main__":
    main()
