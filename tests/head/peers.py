"""Jumpstarter's development exporter and client, run as a script with the development venv's python.

It must not import jsreplay or the 0.9.0 packages: it runs under `tests/head/venv.py`'s python, beside the
development wheels. Two commands:

    python peers.py exporter --endpoint E --token T --ca-file F --name N [--motd TEXT]
        runs the exporter (power + echo) until stdin closes or SIGTERM, then stops it as `jmp run` does (OFFLINE,
        Unregister); prints {"registered": true} once registered.
    python peers.py client --endpoint E [--endpoint E2 ...] --token T --ca-file F --name N --selector S
                           [--context k=v ...] [--log-stream]
        runs the client scenario once per endpoint (lease, connect, power on/off, a power read, 64 KiB echoed,
        GetStatus, release) and prints one JSON line per run: what the client saw, or {"error": ...}.

With `--context`, the lease is made first with `create_lease(context=...)` (`Lease.context`, new in the development
line), then acquired by name and deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path

# The 0.9.0 scenario's (jsreplay.testing.peers): 64 KiB sent 4 KiB at a time, so either client replays the other's.
PAYLOAD = b"".join(i.to_bytes(2, "big") * 2 for i in range(16 * 1024))
CHUNK = 4096
DURATION = timedelta(minutes=10)


def _tls(ca_file: str):  # type: ignore[no-untyped-def]
    from jumpstarter.config.tls import TLSConfigV1Alpha1

    return TLSConfigV1Alpha1(ca=base64.b64encode(Path(ca_file).read_bytes()).decode(), insecure=False)


def _drivers():  # type: ignore[no-untyped-def]
    from jumpstarter.driver import Driver
    from jumpstarter_driver_network.driver import EchoNetwork
    from jumpstarter_driver_power.driver import MockPower

    class DemoRoot(Driver):
        """jsreplay.testing.peers.DemoRoot's twin: the same root (client class) as the 0.9.0 test exporter's."""

        @classmethod
        def client(cls) -> str:
            return "jumpstarter.client.DriverClient"

    return DemoRoot(children={"power": MockPower(), "echo": EchoNetwork()})


async def exporter(args: argparse.Namespace) -> int:
    import anyio
    import grpc
    from jumpstarter.common.grpc import aio_secure_channel, ssl_channel_credentials
    from jumpstarter.config.common import ObjectMeta
    from jumpstarter.config.grpc import call_credentials
    from jumpstarter.exporter import Exporter

    tls = _tls(args.ca_file)
    metadata = ObjectMeta(namespace="default", name=args.name)

    async def channel_factory() -> grpc.aio.Channel:
        credentials = grpc.composite_channel_credentials(
            await ssl_channel_credentials(args.endpoint, tls), call_credentials("Exporter", metadata, args.token)
        )
        return aio_secure_channel(args.endpoint, credentials, {})

    exp = Exporter(
        channel_factory=channel_factory,
        device_factory=_drivers,
        tls=tls,
        grpc_options={},
        motd=args.motd,
        token=args.token,
    )
    stop = anyio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.read(1) or stop.set())
    finished = anyio.Event()

    async def serve() -> None:
        try:
            async with exp:
                await exp.serve()
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        with anyio.fail_after(30):
            while not (exp._registered and exp._tg is not None):
                await anyio.sleep(0.01)
        print(json.dumps({"registered": True}), flush=True)
        await stop.wait()
        with anyio.move_on_after(20):
            exp.stop(should_unregister=True)
            await finished.wait()
        tg.cancel_scope.cancel()
    return 0


def _scenario(config, args: argparse.Namespace) -> dict:  # type: ignore[no-untyped-def]
    context = dict(kv.split("=", 1) for kv in args.context)
    lease_name = None
    if context:
        created = config.create_lease(duration=DURATION, selector=args.selector, context=context)
        lease_name = created.name
    selector = None if lease_name else args.selector
    with config.lease(selector=selector, lease_name=lease_name, duration=DURATION) as lease:
        with lease.connect() as root:
            power = root.children["power"]
            if args.log_stream:
                with root.log_stream():
                    power_on = power.on()
                    power_off = power.off()
                    time.sleep(0.3)  # the exporter polls its log queue every 50 ms: let "power on/off" through
            else:
                power_on = power.on()
                power_off = power.off()
            readings = [[r.voltage, r.current] for r in power.read()]
            echoed = bytearray()
            with root.children["echo"].stream() as stream:
                for offset in range(0, len(PAYLOAD), CHUNK):
                    chunk = PAYLOAD[offset : offset + CHUNK]
                    stream.send(chunk)
                    wanted = len(echoed) + len(chunk)
                    while len(echoed) < wanted:
                        echoed += stream.receive()
            status = lease.portal.call(root.get_status_async)
            drivers = sorted(root.children)
        exporter_name = lease.exporter_name
    if lease_name:
        config.delete_lease(name=lease_name)
    return {
        "exporter_name": exporter_name,
        "drivers": drivers,
        "power_on": power_on,
        "power_off": power_off,
        "readings": readings,
        "echo_ok": bytes(echoed) == PAYLOAD,
        "exporter_status": getattr(status, "name", str(status)),
    }


def client(args: argparse.Namespace) -> int:
    from jumpstarter.config.client import (
        ClientConfigV1Alpha1,
        ClientConfigV1Alpha1Drivers,
        ClientConfigV1Alpha1Lease,
    )
    from jumpstarter.config.common import ObjectMeta

    failed = 0
    for endpoint in args.endpoint:
        config = ClientConfigV1Alpha1(
            alias="jsreplay-head",
            metadata=ObjectMeta(namespace="default", name=args.name),
            endpoint=endpoint,
            token=args.token,
            tls=_tls(args.ca_file),
            drivers=ClientConfigV1Alpha1Drivers(allow=["jumpstarter.client.*", "jumpstarter_driver_*"], unsafe=False),
            leases=ClientConfigV1Alpha1Lease(acquisition_timeout=30, dial_timeout=20.0, retry_timeout=0),
        )
        try:
            result = _scenario(config, args)
        except BaseException as exc:  # report and go on with the next endpoint
            failed += 1
            result = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]}
        print(json.dumps(result, default=str), flush=True)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("exporter", "client"):
        p = sub.add_parser(name)
        p.add_argument("--endpoint", action="append", required=True)
        p.add_argument("--token", required=True)
        p.add_argument("--ca-file", required=True)
        p.add_argument("--name", required=True)
    sub.choices["exporter"].add_argument("--motd", default=None)
    sub.choices["client"].add_argument("--selector", required=True)
    sub.choices["client"].add_argument("--context", action="append", default=[])
    sub.choices["client"].add_argument("--log-stream", action="store_true")
    args = parser.parse_args()
    if args.command == "exporter":
        args.endpoint = args.endpoint[0]
        return asyncio.run(exporter(args))
    return client(args)


if __name__ == "__main__":
    sys.exit(main())
