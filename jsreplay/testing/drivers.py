"""Real-driver exporter trees and the client steps that use them, for end-to-end tests beyond power and echo.

Each `DriverScenario` is a device tree built from the driver packages of the `test` extra (shell, opendal,
pyserial, composite, with power and network) and the steps a real 0.9.0 client takes on it, through the
driver's own client class. `run_steps` runs the steps with the real client (lease, connect, steps, release);
`record_scenario(..., drivers=s.drivers, client_side=s.client())` records them through `jsreplay record`.

The trees are built fresh for every exporter run (a factory), and a scenario's steps are deterministic: the
same requests, in the same order, with answers that do not depend on time (the shell command sleeps between
its lines, and after the last, so that each line is its own streamed message and the exit code one more).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import anyio
from jumpstarter.client import DriverClient
from jumpstarter.driver import Driver
from jumpstarter_driver_composite.driver import Composite
from jumpstarter_driver_network.driver import EchoNetwork
from jumpstarter_driver_opendal.driver import Opendal
from jumpstarter_driver_power.driver import MockPower
from jumpstarter_driver_pyserial.driver import PySerial
from jumpstarter_driver_shell.driver import Shell

from jsreplay.testing.peers import ECHO_CHUNK, client_config, default_drivers, leasing

__all__ = [
    "ALLOWED_CLIENTS",
    "SCENARIOS",
    "DriverScenario",
    "composite_drivers",
    "opendal_drivers",
    "run_steps",
    "serial_drivers",
    "shell_drivers",
]

#: Driver client classes the scenarios' client may import.
ALLOWED_CLIENTS: tuple[str, ...] = (
    "jumpstarter.client.*",
    "jumpstarter_driver_power.*",
    "jumpstarter_driver_network.*",
    "jumpstarter_driver_shell.*",
    "jumpstarter_driver_opendal.*",
    "jumpstarter_driver_pyserial.*",
    "jumpstarter_driver_composite.*",
)

# The last line is followed by a pause too: the shell driver polls its process every 0.1 s, and a process that exits
# right after printing makes the exit code come with that line or in a message of its own as the poll races the
# exit. With the pause every run streams four messages, the exit code in the last one alone.
SHELL_SCRIPT = "echo one; sleep 0.4; echo two >&2; sleep 0.4; echo three; sleep 0.4"
FILE_CONTENT = b"".join(i.to_bytes(2, "big") for i in range(8192))  # 16 KiB, not periodic in small chunks
SERIAL_MESSAGE = b"hello over loop://\n"
SERIAL_BOOT = b"booting...\nbuildroot login: "  # what the console `expect`s a prompt in (loop:// echoes it)
STEPS_TIMEOUT_S = 60.0


def shell_drivers() -> Driver:
    """`shell` with one method printing three lines (stdout, stderr, stdout) 0.4 s apart, and `power`."""
    shell = Shell(methods={"lines": SHELL_SCRIPT}, shell=["bash", "-c"], timeout=30)
    return Composite(children={"shell": shell, "power": MockPower()})  # type: ignore[abstract]


def opendal_drivers(root: Path | None = None) -> Driver:
    """`storage`: an opendal `fs` operator rooted in `root` (a new temporary directory when None)."""
    where = str(root) if root is not None else tempfile.mkdtemp(prefix="jsreplay-opendal-")
    return Composite(children={"storage": Opendal(scheme="fs", kwargs={"root": where})})  # type: ignore[abstract]


def serial_drivers() -> Driver:
    """`serial`: pyserial on `loop://` (what is written is read back)."""
    return Composite(children={"serial": PySerial(url="loop://", check_present=False)})  # type: ignore[abstract]


def composite_drivers() -> Driver:
    """A nested tree: `board` (a composite) holding `power` and `console` (a composite holding `echo`)."""
    console = Composite(children={"echo": EchoNetwork()})  # type: ignore[abstract]
    board = Composite(children={"power": MockPower(), "console": console})  # type: ignore[abstract]
    return Composite(children={"board": board})  # type: ignore[abstract]


# ---------------------------------------------------------------------------------------------------- client steps


def power_echo_steps(root: Any) -> dict[str, Any]:
    power = root.children["power"]
    on, off = power.on(), power.off()
    readings = [(r.voltage, r.current) for r in power.read()]
    echoed = _echo(root.children["echo"], b"ping" * 1024)
    return {"on": on, "off": off, "readings": readings, "echoed": echoed}


def shell_steps(root: Any) -> dict[str, Any]:
    shell = root.children["shell"]
    methods = shell.call("get_methods")
    chunks = [tuple(chunk) for chunk in shell.streamingcall("call_method", "lines", {})]
    root.children["power"].on()
    return {"methods": methods, "chunks": chunks}


def opendal_steps(root: Any) -> dict[str, Any]:
    storage = root.children["storage"]
    storage.write_bytes("dir-a/file.bin", FILE_CONTENT)  # open -> fd, a resource stream, file_write(fd, handle)
    back = storage.read_bytes("dir-a/file.bin")
    exists = storage.exists("dir-a/file.bin")
    return {"read_back": back == FILE_CONTENT, "exists": exists}


def serial_steps(root: Any) -> dict[str, Any]:
    with root.children["serial"].stream() as stream:
        stream.send(SERIAL_MESSAGE)
        got = b""
        while len(got) < len(SERIAL_MESSAGE):
            got += stream.receive()
    with root.children["serial"].pexpect() as console:  # a second stream: a console waiting for its prompt
        console.send(SERIAL_BOOT)
        console.expect("login: ", timeout=10)
        before = console.before
    return {"echoed": got, "before_prompt": before}


def composite_steps(root: Any) -> dict[str, Any]:
    board = root.children["board"]
    on = board.children["power"].on()
    readings = [(r.voltage, r.current) for r in board.children["power"].read()]
    echoed = _echo(board.children["console"].children["echo"], b"nested" * 512)
    return {"on": on, "readings": readings, "echoed": echoed}


def _echo(echo: Any, payload: bytes) -> bytes:
    echoed = bytearray()
    with echo.stream() as stream:
        for offset in range(0, len(payload), ECHO_CHUNK):
            chunk = payload[offset : offset + ECHO_CHUNK]
            stream.send(chunk)
            wanted = len(echoed) + len(chunk)
            while len(echoed) < wanted:
                echoed += stream.receive()
    return bytes(echoed)


@dataclass(frozen=True)
class DriverScenario:
    name: str
    drivers: Callable[[], Driver]  # a fresh device tree per exporter run
    steps: Callable[[DriverClient], Any]  # the client's steps on the connected root; returns what it saw

    def client(self, *, timeout: float = STEPS_TIMEOUT_S) -> Callable[..., Awaitable[Any]]:
        """The client side for `record_scenario(client_side=...)`."""
        return partial(run_steps, steps=self.steps, timeout=timeout)


SCENARIOS: dict[str, DriverScenario] = {
    s.name: s
    for s in (
        DriverScenario("power-echo", default_drivers, power_echo_steps),
        DriverScenario("shell", shell_drivers, shell_steps),
        DriverScenario("opendal", opendal_drivers, opendal_steps),
        DriverScenario("serial", serial_drivers, serial_steps),
        DriverScenario("composite", composite_drivers, composite_steps),
    )
}


async def run_steps(
    endpoint: str,
    token: str,
    ca_pem: bytes | None,
    *,
    name: str,
    selector: str,
    steps: Callable[[DriverClient], Any],
    allow: Sequence[str] = ALLOWED_CLIENTS,
    namespace: str = "default",
    timeout: float = STEPS_TIMEOUT_S,
) -> Any:
    """Lease an exporter with the real client, connect, run `steps` on the root driver client, release.

    Raises TimeoutError after `timeout` seconds (the worker thread is then abandoned).
    """
    config = client_config(endpoint, token, ca_pem, name=name, namespace=namespace, timeout=timeout, allow=allow)

    def blocking() -> Any:
        started = time.perf_counter()
        with leasing(config, selector=selector, duration=timedelta(minutes=5)) as lease, lease.connect() as root:
            result = steps(root)
        return {"result": result, "elapsed": time.perf_counter() - started}

    with anyio.fail_after(timeout):
        return await anyio.to_thread.run_sync(blocking, abandon_on_cancel=True)
