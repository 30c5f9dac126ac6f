"""Cassettes for the inspect tests, recorded once per session with the real 0.9.0 client and exporter.

- two baselines of the same scenario (different runs: different UUIDs, tokens, lease names, timings);
- a run whose power driver reads different values (a changed driver result inside the tunnel);
- a run whose client makes one more DriverCall (an added inner call).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from pathlib import Path

import pytest
from jumpstarter.driver import Driver, export
from jumpstarter_driver_network.driver import EchoNetwork
from jumpstarter_driver_power.client import PowerClient
from jumpstarter_driver_power.common import PowerReading
from jumpstarter_driver_power.driver import MockPower

from jsreplay.testing import DemoRoot
from jsreplay.testing.recording import record_scenario


class HighVoltagePower(MockPower):
    """MockPower whose second reading says 12 V instead of 5 V: a driver that changed its result."""

    @export
    async def read(self) -> AsyncGenerator[PowerReading, None]:
        yield PowerReading(voltage=0.0, current=0.0)
        yield PowerReading(voltage=12.0, current=2.0)


def high_voltage_drivers() -> Driver:
    return DemoRoot(children={"power": HighVoltagePower(), "echo": EchoNetwork()})  # type: ignore[abstract]


def _on_after_off(self: PowerClient) -> None:
    # A client that powers off before powering on: one more inner DriverCall ("off") than the baseline.
    self.call("off")
    self.call("on")


@dataclass(frozen=True)
class Recordings:
    baseline: Path
    baseline2: Path
    driver_changed: Path
    extra_call: Path


@pytest.fixture(scope="session")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Recordings:
    root = tmp_path_factory.mktemp("recordings")
    out = Recordings(
        baseline=root / "baseline.msgpack",
        baseline2=root / "baseline2.msgpack",
        driver_changed=root / "driver_changed.msgpack",
        extra_call=root / "extra_call.msgpack",
    )

    async def record_all() -> None:
        await record_scenario(out.baseline)
        await record_scenario(out.baseline2)
        await record_scenario(out.driver_changed, drivers=high_voltage_drivers)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(PowerClient, "on", _on_after_off)
            await record_scenario(out.extra_call)

    asyncio.run(record_all())
    return out
