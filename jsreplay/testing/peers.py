"""Run the REAL Jumpstarter 0.9.0 exporter and client against any endpoint (a fake cluster or a proxy).

Both run in-process, which keeps a scenario around a second instead of paying two interpreter starts
(about 1.5 s each with jumpstarter's imports on this machine):

- the exporter runs on the caller's event loop, as `jumpstarter.exporter.Exporter.serve()`; leaving
  `run_exporter` stops it the way the real `jmp run` does on SIGTERM (stop + Unregister) and waits for it;
- the client scenario runs the client's blocking API (`ClientConfigV1Alpha1.lease`, `lease.connect`,
  driver clients) in a worker thread; the client starts its own event-loop thread (a blocking portal) and
  closes it at the end of the lease, so nothing is shared between runs.

TLS: pass the CA to trust (goes to the config's `tls.ca`, base64 PEM, as in a real client config), or
`insecure=True` (the config's `tls.insecure`, the same switch as JUMPSTARTER_GRPC_INSECURE=1), or neither
and set JUMPSTARTER_GRPC_INSECURE=1 / rely on the system roots.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import anyio
import grpc
from anyio.from_thread import BlockingPortal, start_blocking_portal
from jumpstarter.client import Lease
from jumpstarter.common import ExporterStatus
from jumpstarter.common.grpc import aio_secure_channel, ssl_channel_credentials
from jumpstarter.config.client import (
    ClientConfigV1Alpha1,
    ClientConfigV1Alpha1Drivers,
    ClientConfigV1Alpha1Lease,
)
from jumpstarter.config.common import ObjectMeta
from jumpstarter.config.grpc import call_credentials
from jumpstarter.config.tls import TLSConfigV1Alpha1
from jumpstarter.driver import Driver
from jumpstarter.exporter import Exporter
from jumpstarter_driver_network.driver import EchoNetwork
from jumpstarter_driver_power.driver import MockPower

__all__ = [
    "ECHO_PAYLOAD",
    "DemoRoot",
    "RunningExporter",
    "ScenarioResult",
    "default_drivers",
    "leasing",
    "run_client_scenario",
    "run_exporter",
]

#: 64 KiB, every byte value, not periodic in 4 KiB chunks (so a reordered chunk would be noticed).
ECHO_PAYLOAD: bytes = b"".join(i.to_bytes(2, "big") * 2 for i in range(16 * 1024))
ECHO_CHUNK = 4096

# Driver client classes the scenario lets the client import (the client refuses others by default).
_ALLOWED_DRIVER_CLIENTS = ["jumpstarter.client.*", "jumpstarter_driver_power.*", "jumpstarter_driver_network.*"]


class DemoRoot(Driver):
    """A plain composite root: jumpstarter's own Composite driver lives in a package we don't install."""

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"


def default_drivers() -> Driver:
    """The demo exporter's device tree: `power` (MockPower) and `echo` (EchoNetwork, a byte-stream echo)."""
    # The generated servicer stubs declare every ExporterService method abstract; drivers don't need them.
    return DemoRoot(children={"power": MockPower(), "echo": EchoNetwork()})  # type: ignore[abstract]


@contextmanager
def leasing(
    config: ClientConfigV1Alpha1,
    *,
    selector: str | None = None,
    duration: timedelta = timedelta(minutes=10),
    lease_name: str | None = None,
) -> Iterator[Lease]:
    """`config.lease(...)`, except that the lease's controller channel is closed before its event loop ends.

    jumpstarter 0.9.0's `lease()` never closes that channel: it outlives the client's event-loop thread, and a
    completion gRPC delivers for it afterwards goes to a closed loop (`RuntimeError: Event loop is closed` from
    grpc's completion queue, raised in whichever loop runs it: a test's). Closing it on its own loop, after the
    lease is released, waits for every call on it to end first.
    """
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(
            _lease_closing_channel(config, selector, duration, lease_name, portal)
        ) as lease,
    ):
        yield lease


@asynccontextmanager
async def _lease_closing_channel(
    config: ClientConfigV1Alpha1,
    selector: str | None,
    duration: timedelta,
    lease_name: str | None,
    portal: BlockingPortal,
) -> AsyncIterator[Lease]:
    lease: Lease | None = None
    try:
        async with config.lease_async(selector, None, lease_name, duration, portal) as lease:
            yield lease
    finally:
        if lease is not None:
            with anyio.CancelScope(shield=True):
                await lease.channel.close()


def _tls_config(ca_pem: bytes | None, insecure: bool) -> TLSConfigV1Alpha1:
    ca = base64.b64encode(ca_pem).decode() if ca_pem else ""
    return TLSConfigV1Alpha1(ca=ca, insecure=insecure)


@dataclass
class RunningExporter:
    name: str
    namespace: str
    endpoint: str
    exporter: Exporter

    @property
    def registered(self) -> bool:
        return bool(self.exporter._registered)


@asynccontextmanager
async def run_exporter(
    endpoint: str,
    token: str,
    ca_pem: bytes | None,
    name: str,
    namespace: str = "default",
    *,
    drivers: Callable[[], Driver] = default_drivers,
    labels: Mapping[str, str] | None = None,
    insecure: bool = False,
    grpc_options: Mapping[str, str | int] | None = None,
    unregister: bool = True,
    start_timeout: float = 15.0,
    stop_timeout: float = 20.0,
) -> AsyncIterator[RunningExporter]:
    """Run the real exporter against `endpoint` until the block ends; yields once it has registered.

    `labels` are sent in Register (a real exporter built from its config sends none: the controller keeps
    them). `unregister=False` leaves like a crashed exporter's clean cousin: stop without Unregister.
    """
    tls = _tls_config(ca_pem, insecure)
    metadata = ObjectMeta(namespace=namespace, name=name)
    options: dict[str, Any] = dict(grpc_options or {})

    # What ExporterConfigV1Alpha1.create_exporter would build, minus its composite root (a driver package
    # we don't install): TLS per the config, bearer token plus jumpstarter-kind/namespace/name metadata.
    async def channel_factory() -> grpc.aio.Channel:
        credentials = grpc.composite_channel_credentials(
            await ssl_channel_credentials(endpoint, tls),
            call_credentials("Exporter", metadata, token),
        )
        return aio_secure_channel(endpoint, credentials, options)

    exporter = Exporter(
        channel_factory=channel_factory,
        device_factory=drivers,
        tls=tls,
        grpc_options=options,
        labels=dict(labels or {}),
    )
    finished = anyio.Event()

    async def serve() -> None:
        try:
            async with exporter:  # its exit sends OFFLINE + Unregister when stop() asked for it
                await exporter.serve()
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        # `_registered`/`_tg` are the exporter's own flags; polling them is the only way to know it is up
        # (and can be stopped) without asking the cluster, which may be behind a proxy.
        with anyio.fail_after(start_timeout):
            while not (exporter._registered and exporter._tg is not None):
                await anyio.sleep(0.01)
        try:
            yield RunningExporter(name=name, namespace=namespace, endpoint=endpoint, exporter=exporter)
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(stop_timeout) as stopping:
                exporter.stop(should_unregister=unregister)
                await finished.wait()
            if stopping.cancelled_caught:
                tg.cancel_scope.cancel()
                raise TimeoutError(f"exporter {namespace}/{name} did not stop within {stop_timeout}s")


@dataclass(frozen=True)
class ScenarioResult:
    """What the real client saw in one scenario run."""

    lease_name: str
    exporter_name: str
    exporter_labels: dict[str, str]
    drivers: tuple[str, ...]  # the root's children, sorted
    power_on: Any  # DriverCall results (None for MockPower)
    power_off: Any
    readings: tuple[tuple[float, float], ...]  # (voltage, current) from the power read stream
    sent: bytes
    echoed: bytes
    exporter_status: str | None  # GetStatus through the tunnel, e.g. "LEASE_READY"
    elapsed: float  # seconds, whole scenario
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step

    def comparable(self) -> dict[str, Any]:
        """The parts that must be identical between runs (no lease names, no timings)."""
        return {
            "exporter_name": self.exporter_name,
            "exporter_labels": self.exporter_labels,
            "drivers": self.drivers,
            "power_on": self.power_on,
            "power_off": self.power_off,
            "readings": self.readings,
            "echo_ok": self.echoed == self.sent,
            "echoed_len": len(self.echoed),
            "exporter_status": self.exporter_status,
        }


def client_config(
    endpoint: str,
    token: str,
    ca_pem: bytes | None,
    *,
    name: str,
    namespace: str = "default",
    insecure: bool = False,
    grpc_options: Mapping[str, str | int] | None = None,
    timeout: float = 60.0,
    allow: Sequence[str] | None = None,
) -> ClientConfigV1Alpha1:
    """A real client config for `endpoint`, allowing the power, network and core driver clients (or `allow`)."""
    return ClientConfigV1Alpha1(
        alias="jsreplay",
        metadata=ObjectMeta(namespace=namespace, name=name),
        endpoint=endpoint,
        token=token,
        tls=_tls_config(ca_pem, insecure),
        grpcOptions=dict(grpc_options or {}),
        drivers=ClientConfigV1Alpha1Drivers(allow=list(allow or _ALLOWED_DRIVER_CLIENTS), unsafe=False),
        leases=ClientConfigV1Alpha1Lease(
            acquisition_timeout=max(5, int(timeout)), dial_timeout=min(30.0, timeout), retry_timeout=0
        ),
    )


async def run_client_scenario(
    endpoint: str,
    token: str,
    ca_pem: bytes | None,
    *,
    name: str,
    selector: str,
    namespace: str = "default",
    insecure: bool = False,
    grpc_options: Mapping[str, str | int] | None = None,
    duration: timedelta = timedelta(minutes=10),
    payload: bytes = ECHO_PAYLOAD,
    timeout: float = 60.0,
) -> ScenarioResult:
    """Drive the real client: lease, connect, power on/off, read power, echo `payload`, GetStatus, release.

    Raises TimeoutError after `timeout` seconds (the worker thread is then abandoned; the client's own
    timeouts end it eventually).
    """
    config = client_config(
        endpoint,
        token,
        ca_pem,
        name=name,
        namespace=namespace,
        insecure=insecure,
        grpc_options=grpc_options,
        timeout=timeout,
    )
    with anyio.fail_after(timeout):
        return await anyio.to_thread.run_sync(
            partial(_scenario, config, selector, duration, payload), abandon_on_cancel=True
        )


def _scenario(config: ClientConfigV1Alpha1, selector: str, duration: timedelta, payload: bytes) -> ScenarioResult:
    start = time.perf_counter()
    steps: dict[str, float] = {}
    mark = start

    def step(label: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        steps[label] = now - mark
        mark = now

    with leasing(config, selector=selector, duration=duration) as lease:
        step("lease")
        with lease.connect() as root:
            step("connect")
            power = root.children["power"]
            power_on = power.on()
            power_off = power.off()
            step("power on/off")
            readings = tuple((r.voltage, r.current) for r in power.read())
            step("power read")
            echoed = bytearray()
            with root.children["echo"].stream() as stream:
                # One chunk at a time: the echo driver holds only 32 items, and this keeps the byte stream's
                # framing the same in every run.
                for offset in range(0, len(payload), ECHO_CHUNK):
                    chunk = payload[offset : offset + ECHO_CHUNK]
                    stream.send(chunk)
                    wanted = len(echoed) + len(chunk)
                    while len(echoed) < wanted:
                        echoed += stream.receive()  # b"" for a router PING frame
            step("echo")
            status = lease.portal.call(root.get_status_async)
            step("status")
            drivers = tuple(sorted(root.children))
        lease_name = str(lease.name)
        exporter_name = lease.exporter_name
        exporter_labels = dict(lease.exporter_labels)
    step("release")
    return ScenarioResult(
        lease_name=lease_name,
        exporter_name=exporter_name,
        exporter_labels=exporter_labels,
        drivers=drivers,
        power_on=power_on,
        power_off=power_off,
        readings=readings,
        sent=bytes(payload),
        echoed=bytes(echoed),
        exporter_status=ExporterStatus(status).name if status is not None else None,
        elapsed=time.perf_counter() - start,
        steps=steps,
    )
