"""Scenarios recorded several times and diffed pair by pair: two runs of one session must diff as equivalent.

`SWEEP_SCENARIOS` holds the driver scenarios of `jsreplay.testing.drivers` plus two more that bring their own
noise: `logstream` (the 0.9.0 client's `log_stream()` around driver calls, with a driver whose log lines carry
a time, a temporary path and the proxy's address) and `two-sessions` (two leases, each with its own
connection, in one recording). `record_sweep` records a scenario N times; `tests/inspect/test_diff_noise.py`
and `scripts/diff_sweep.py` diff every pair.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from jumpstarter.driver import Driver, export
from jumpstarter_driver_composite.driver import Composite
from jumpstarter_driver_power.common import PowerReading
from jumpstarter_driver_power.driver import MockPower

from jsreplay.record import recording
from jsreplay.testing.cluster import FakeCluster
from jsreplay.testing.drivers import SCENARIOS, run_steps
from jsreplay.testing.peers import default_drivers, run_exporter
from jsreplay.testing.recording import LABELS, SCENARIO_TIMEOUT_S, SELECTOR, record_scenario

__all__ = ["SWEEP_NAMES", "SWEEP_SCENARIOS", "LoggingPower", "logging_drivers", "record_sweep", "sweep_cassettes"]

#: How long the client keeps its log stream open after the last call, so the exporter's 50 ms log poll has
#: sent every line (the stream is then cancelled by the client, as `jmp shell` does).
LOG_SETTLE_S = 0.4


class LoggingPower(MockPower):
    """MockPower whose log lines carry volatile parts, as real exporters' do: wall-clock times, a temporary
    socket path, and the address the client came through (`connected`)."""

    @export
    def connected(self, endpoint: str) -> None:
        self.logger.info("client connected through %s (port %s)", endpoint, endpoint.rsplit(":", 1)[-1])

    @export
    def on(self) -> None:
        now = datetime.now(UTC)
        sock = tempfile.mktemp(prefix="jumpstarter-", suffix=".sock")
        self.logger.info("power on at %s, socket %s", now.isoformat(), sock)
        self.logger.info("console ready at unix://%s", sock)

    @export
    async def read(self) -> AsyncGenerator[PowerReading, None]:
        self.logger.info("reading power at %s", datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3])
        yield PowerReading(voltage=0.0, current=0.0)
        yield PowerReading(voltage=5.0, current=2.0)


def logging_drivers() -> Driver:
    return Composite(children={"power": LoggingPower()})  # type: ignore[abstract]


def logstream_steps(root: Any, *, endpoint: str = "") -> dict[str, Any]:
    """Driver calls inside the client's `log_stream()`: the exporter's log lines come back on a LogStream."""
    with root.log_stream():
        power = root.children["power"]
        power.call("connected", endpoint)
        power.on()
        readings = [(r.voltage, r.current) for r in power.read()]
        power.off()
        time.sleep(LOG_SETTLE_S)
    return {"readings": readings}


async def _logstream_client(endpoint: str, token: str, ca_pem: bytes | None, *, name: str, selector: str) -> Any:
    steps = partial(logstream_steps, endpoint=endpoint)
    return await run_steps(endpoint, token, ca_pem, name=name, selector=selector, steps=steps)


def _power_only(root: Any) -> dict[str, Any]:
    power = root.children["power"]
    return {"on": power.on(), "readings": [(r.voltage, r.current) for r in power.read()]}


async def record_two_sessions(cassette: Path) -> None:
    """Two client sessions in one recording, one after the other, each with its own lease: the shell steps,
    then power on and a reading. The second lease is asked for once the exporter is available again (as
    `record_scenario` waits at the end), or the cluster answers it Pending, a race of its own."""
    shell = SCENARIOS["shell"]
    with anyio.fail_after(SCENARIO_TIMEOUT_S):
        async with FakeCluster() as cluster:
            async with recording(
                upstream=cluster.controller_endpoint, upstream_ca=cluster.ca_pem, cassette=cassette
            ) as proxy:
                exporter = cluster.new_exporter("exporter-1", dict(LABELS))
                client = cluster.new_client("alice")
                async with run_exporter(
                    proxy.endpoint, exporter.token, proxy.ca_pem, exporter.name, drivers=shell.drivers
                ):
                    for steps in (shell.steps, _power_only):
                        await cluster.wait_exporter_available(exporter.name)
                        await run_steps(
                            proxy.endpoint, client.token, proxy.ca_pem, name=client.name, selector=SELECTOR, steps=steps
                        )
                    await cluster.wait_exporter_available(exporter.name)


#: name -> (device tree factory, client side); `None` as client side: `run_client_scenario` (power + echo).
SWEEP_SCENARIOS: dict[str, tuple[Callable[[], Driver], Callable[..., Any] | None]] = {
    "power-echo": (default_drivers, None),
    "shell": (SCENARIOS["shell"].drivers, SCENARIOS["shell"].client()),
    "serial": (SCENARIOS["serial"].drivers, SCENARIOS["serial"].client()),
    "opendal": (SCENARIOS["opendal"].drivers, SCENARIOS["opendal"].client()),
    "composite": (SCENARIOS["composite"].drivers, SCENARIOS["composite"].client()),
    "logstream": (logging_drivers, _logstream_client),
}
#: Every scenario a sweep records: the driver scenarios and `two-sessions` (`record_two_sessions`).
SWEEP_NAMES: tuple[str, ...] = (*SWEEP_SCENARIOS, "two-sessions")


@contextmanager
def _grpc_logs_kept_from_the_exporter() -> Iterator[None]:
    """The exporter's LogStream sends what reaches the root logger of its process. Here the fake cluster, the proxy
    and the exporter share one process (in a lab they do not), so a gRPC core error of the cluster's or the
    proxy's servers at a probe's teardown (`ExecuteBatchError raised in core by servicer method
    [/jumpstarter.v1.RouterService/Stream]`, now and then) would show up as an exporter log line in one recording
    of a session and not in the next. gRPC's own log lines are kept off the root logger while a sweep records
    (Python's last-resort handler still prints warnings and errors)."""
    grpc_logger = logging.getLogger("grpc._cython.cygrpc")
    before = grpc_logger.propagate
    grpc_logger.propagate = False
    try:
        yield
    finally:
        grpc_logger.propagate = before


async def record_sweep(name: str, directory: Path, count: int) -> list[Path]:
    """Record scenario `name` `count` times into `directory` (`0.msgpack`, `1.msgpack`, ...)."""
    with _grpc_logs_kept_from_the_exporter():
        return await _record_sweep(name, directory, count)


async def _record_sweep(name: str, directory: Path, count: int) -> list[Path]:
    paths = []
    for i in range(count):
        cassette = directory / f"{i}.msgpack"
        cassette.unlink(missing_ok=True)
        if name == "two-sessions":
            await record_two_sessions(cassette)
        else:
            drivers, client_side = SWEEP_SCENARIOS[name]
            await record_scenario(cassette, drivers=drivers, client_side=client_side)
        paths.append(cassette)
    return paths


def sweep_cassettes(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.msgpack"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
