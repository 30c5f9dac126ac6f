"""Replay as a test tool: --fail-unused, coverage, injected faults against the real 0.9.0 client, health and
reflection. Uses the shipped sample cassette (the real client and exporter, recorded through jsreplay)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import grpc
import jsonschema
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

import jsreplay
from jsreplay.replay import ReplayReport
from jsreplay.replay.faults import FaultPlan, FaultSpecError, parse_cut, parse_delay, parse_fault, parse_plan
from jsreplay.testing import client_config, leasing, run_client_scenario
from jsreplay.testing.recording import SELECTOR

ROOT = Path(__file__).resolve().parent.parent
CASSETTE = ROOT / "cassettes" / "power-echo.msgpack"
SCHEMA = ROOT / "jsreplay" / "schemas" / "coverage.schema.json"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ---------------------------------------------------------------------------------------------- spec parsing


def test_fault_specs_parse_into_typed_selectors() -> None:
    fault = parse_fault("ExporterService/DriverCall[power.on]#1=UNAVAILABLE:board busy")
    assert (fault.selector.method, fault.selector.driver, fault.selector.driver_method) == (
        "ExporterService/DriverCall",
        "power",
        "on",
    )
    assert (fault.selector.first, fault.selector.last, fault.code, fault.details) == (1, 1, "UNAVAILABLE", "board busy")
    assert fault.selector.matches_call("/jumpstarter.v1.ExporterService/DriverCall", "power.on")
    assert not fault.selector.matches_call("/jumpstarter.v1.ExporterService/DriverCall", "power.off")
    assert parse_fault("/jumpstarter.v1.ControllerService/Dial#2-=permission_denied").selector.last is None
    assert parse_delay("ExporterService/DriverCall[on]=250ms").seconds == 0.25
    assert parse_cut("after=4096").after_bytes == 4096
    assert parse_cut("at=ExporterService/DriverCall[power.off]").at is not None


@pytest.mark.parametrize(
    ("parse", "spec", "says"),
    [
        (parse_fault, "ExporterService/DriverCall=NOPE", "not a gRPC error code"),
        (parse_fault, "ExporterService/DriverCall=OK", "not a gRPC error code"),
        (parse_fault, "DriverCall=UNAVAILABLE", "expected Service/Method"),
        (parse_fault, "ControllerService/Dial[power.on]=UNAVAILABLE", "names a driver method"),
        (parse_fault, "ControllerService/Dial#0=UNAVAILABLE", "count from 1"),
        (parse_fault, "ControllerService/Dial#3-2=UNAVAILABLE", "empty range"),
        (parse_delay, "ControllerService/Dial=fast", "not a duration"),
        (parse_cut, "before=10", "after=BYTES or at=SELECTOR"),
        (parse_cut, "at=ControllerService/Dial", "names an inner call"),
    ],
)
def test_bad_specs_say_what_is_wrong(parse: Callable[[str], Any], spec: str, says: str) -> None:
    with pytest.raises(FaultSpecError, match=says):
        parse(spec)


@pytest.mark.parametrize("flag", ["--fault=ExporterService/DriverCall=NOPE", "--delay=x", "--cut-tunnel=after=lots"])
def test_a_bad_spec_on_the_command_line_is_one_line_and_exit_2(flag: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "jsreplay", "replay", str(CASSETTE), flag],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("jsreplay: error: --"), run.stderr
    assert "Traceback" not in run.stderr + run.stdout


# ---------------------------------------------------------------------------------------------- the real client


def _power(endpoint: str, ca_pem: bytes, steps: Callable[[Any], object]) -> tuple[object, dict[str, float]]:
    """Lease, connect, run `steps(power)` with the real client; what it returned or raised, and timings."""
    config = client_config(endpoint, "any-token", ca_pem, name="alice", timeout=20)
    timings: dict[str, float] = {}
    try:
        with leasing(config, selector=SELECTOR, duration=timedelta(minutes=10)) as lease, lease.connect() as root:
            start = time.perf_counter()
            result = steps(root.children["power"])
            timings["steps"] = time.perf_counter() - start
            return result, timings
    except BaseException as err:  # the client raises exception groups from its portal
        return err, timings


async def _replay(
    steps: Callable[[Any], object], faults: FaultPlan | None = None
) -> tuple[object, dict[str, float], ReplayReport]:
    async with jsreplay.replaying(CASSETTE, faults=faults) as server:
        assert server.ca_pem is not None
        with anyio.fail_after(90):
            result, timings = await anyio.to_thread.run_sync(
                _power, server.endpoint, server.ca_pem, steps, abandon_on_cancel=True
            )
    return result, timings, server.report


def _messages(err: object) -> str:
    """Every message in an exception and the groups and causes around it."""
    seen: list[str] = []
    todo = [err]
    while todo:
        item = todo.pop()
        if isinstance(item, BaseException):
            seen.append(f"{type(item).__name__}: {item}")
            todo.extend(getattr(item, "exceptions", ()))
            todo.extend(x for x in (item.__cause__, item.__context__) if x is not None)
    return "\n".join(seen)


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_full_scenario_leaves_nothing_and_polls_do_not_count() -> None:
    async with jsreplay.replaying(CASSETTE) as server:
        result = await run_client_scenario(
            server.endpoint, "any-token", server.ca_pem, name="alice", selector=SELECTOR, timeout=60
        )
    report = server.report
    assert result.echoed == result.sent
    assert report.left == []
    exempt = {r.recording: r.exempt for r in report.recordings if r.exempt}
    # The exporter's ReportStatus polls and Register/Listen: recorded, never asked for by a client-only replay.
    assert set(exempt.values()) <= {"peer", "poll"} and exempt
    coverage = report.coverage().to_json()
    jsonschema.validate(coverage, json.loads(SCHEMA.read_text()))
    [cassette] = coverage["cassettes"]
    drivers = {d["driver_call"]: d for d in cassette["driver_methods"]}
    assert drivers["power.on"]["served"] == 1 and drivers["power.read"]["left"] == 0


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_a_skipped_step_is_left_and_named() -> None:
    result, _, report = await _replay(lambda power: power.on())  # never power.off, read, echo or GetStatus
    assert result is None
    left = {(r.recording, r.driver_call) for r in report.left}
    assert ("power-echo.msgpack#12/stream 5", "power.off") in left
    assert ("power-echo.msgpack#12/stream 7", "power.read") in left
    assert not any(r.method.endswith(("/GetLease", "/ReportStatus")) for r in report.left)


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_injected_unavailable_reaches_the_client_and_the_retry_gets_the_recording() -> None:
    def steps(power: Any) -> object:
        try:
            power.on()
        except Exception as err:
            first = str(err)
        else:
            raise AssertionError("the injected fault did not reach the client")
        power.on()  # the client's retry: served from the recording the fault did not use up
        power.off()
        return first

    plan = parse_plan(faults=("ExporterService/DriverCall[power.on]#1=UNAVAILABLE:board busy",))
    result, _, report = await _replay(steps, plan)
    assert isinstance(result, str) and result.startswith("DriverCall 'on' failed with gRPC UNAVAILABLE: board busy")
    assert report.missed == []
    [injected] = report.injected
    assert (injected.kind, injected.driver_call, injected.occurrence) == ("fault", "power.on", 1)
    assert injected.recording == "power-echo.msgpack#12/stream 3"
    assert report.to_json()["injected"][0]["spec"].startswith("ExporterService/DriverCall[power.on]#1")


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_a_tunnel_cut_at_an_inner_call_gives_the_clients_lost_connection_error() -> None:
    def steps(power: Any) -> object:
        power.on()
        try:
            power.off()
        except Exception as err:
            return err
        raise AssertionError("power.off went through a cut tunnel")

    result, _, report = await _replay(steps, parse_plan(cuts=("at=ExporterService/DriverCall[power.off]",)))
    text = _messages(result)
    assert "DriverCall 'off' failed with gRPC UNAVAILABLE" in text, text
    assert report.missed == []
    assert [(i.kind, i.driver_call) for i in report.injected] == [("cut", "power.off")]


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_a_tunnel_cut_after_bytes_ends_the_session_mid_stream() -> None:
    # The 64 KiB echo goes through the tunnel: 20,000 bytes in, the router stream ends under the client.
    async with jsreplay.replaying(CASSETTE, faults=parse_plan(cuts=("after=20000",))) as server:
        with pytest.raises(BaseException) as raised:
            await run_client_scenario(
                server.endpoint, "any-token", server.ca_pem, name="alice", selector=SELECTOR, timeout=60
            )
    assert "UNAVAILABLE" in _messages(raised.value), _messages(raised.value)
    report = server.report
    [cut] = report.injected
    assert cut.kind == "cut" and "after 20000 bytes" in cut.detail
    assert report.missed == []


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_an_injected_delay_shows_in_the_clients_timing() -> None:
    def steps(power: Any) -> object:
        power.on()
        power.off()
        return None

    _, timings, report = await _replay(steps, parse_plan(delays=("ExporterService/DriverCall[power.off]=1.5s",)))
    assert timings["steps"] >= 1.5
    assert [(i.kind, i.driver_call, i.detail) for i in report.injected] == [("delay", "power.off", "1.5s")]
    assert report.missed == []


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_a_refused_dial_gives_the_clients_own_message(caplog: pytest.LogCaptureFixture) -> None:
    plan = parse_plan(faults=("ControllerService/Dial=PERMISSION_DENIED:no dial for you",))
    result, _, report = await _replay(lambda power: power.on(), plan)
    assert "Exporter did not respond to initial connection" in _messages(result)
    assert "Connection to exporter lost: no dial for you" in caplog.text
    assert {i.kind for i in report.injected} == {"fault"} and report.missed == []
    # Each Dial the fault answered displaced its own recording: none is left.
    assert not any(r.method.endswith("/Dial") for r in report.left)


# ---------------------------------------------------------------------------------------------- health, reflection


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_health_and_reflection_are_served() -> None:
    async with jsreplay.replaying(CASSETTE) as server:
        assert server.ca_pem is not None
        creds = grpc.ssl_channel_credentials(root_certificates=server.ca_pem)
        async with grpc.aio.secure_channel(server.endpoint, creds) as channel:
            with anyio.fail_after(20):
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
                controller = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="jumpstarter.v1.ControllerService")
                )
        assert health.status == controller.status == health_pb2.HealthCheckResponse.SERVING

        def reflect() -> tuple[list[str], list[str]]:
            with grpc.secure_channel(server.endpoint, creds) as sync_channel:
                database = ProtoReflectionDescriptorDatabase(sync_channel)
                services = list(database.get_services())
                pool = descriptor_pool.DescriptorPool(database)
                dial = pool.FindServiceByName("jumpstarter.v1.ControllerService").FindMethodByName("Dial")
                return services, [dial.input_type.full_name, dial.output_type.full_name]

        with anyio.fail_after(30):
            services, dial = await anyio.to_thread.run_sync(reflect, abandon_on_cancel=True)
    assert {
        "jumpstarter.v1.ControllerService",
        "jumpstarter.client.v1.ClientService",
        "jumpstarter.v1.RouterService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(services)
    assert dial == ["jumpstarter.v1.DialRequest", "jumpstarter.v1.DialResponse"]
