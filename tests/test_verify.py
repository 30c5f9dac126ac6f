"""`jsreplay verify` against the real Jumpstarter 0.9.0 exporter: same drivers, changed drivers, no exporter.

The cassette is recorded once per module with the real client and exporter (`record_scenario`); each test
then starts a fresh real exporter against verify, with no cluster and no client.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import AsyncGenerator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from jumpstarter.config.client import ClientConfigV1Alpha1
from jumpstarter.driver import Driver, export
from jumpstarter_driver_network.driver import EchoNetwork
from jumpstarter_driver_power.common import PowerReading
from jumpstarter_driver_power.driver import MockPower

from jsreplay.protocol.registry import Registry
from jsreplay.record import recording
from jsreplay.session.drivers import tree_paths
from jsreplay.testing import DemoRoot, FakeCluster, client_config, leasing, run_client_scenario, run_exporter
from jsreplay.testing.recording import LABELS, SELECTOR, RecordedRun, record_scenario
from jsreplay.verify import (
    CallReport,
    ControllerMiss,
    FieldDifference,
    TunnelReport,
    TunnelState,
    Verdict,
    Verifier,
    VerifyConfig,
    VerifyError,
    VerifyReport,
    verifying,
)
from jsreplay.verify.uuids import UuidMap

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

INNER = (
    "ExporterService/GetReport[0]",
    "ExporterService/DriverCall[0]",
    "ExporterService/DriverCall[1]",
    "ExporterService/StreamingDriverCall[0]",
    "RouterService/Stream[0]",
    "ExporterService/GetStatus[0]",
)
READ_CALL = "RouterService/Stream[0] > ExporterService/StreamingDriverCall[0]"
STEP_TIMEOUT = 10.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedRun]:
    cassette = tmp_path_factory.mktemp("verify") / "session.msgpack"
    yield asyncio.run(record_scenario(cassette))


def _log_stream_scenario(config: ClientConfigV1Alpha1) -> None:
    """LogStream open around the driver calls (cancelled by the client), then EndSession."""
    with leasing(config, selector=SELECTOR, duration=timedelta(minutes=5)) as lease, lease.connect() as root:
        with root.log_stream():
            root.children["power"].on()
            list(root.children["power"].read())
            root.children["power"].off()
        lease.portal.call(root.end_session_async)


async def _record_log_stream(cassette: Path) -> None:
    with anyio.fail_after(60):
        async with FakeCluster() as cluster:
            async with recording(
                upstream=cluster.controller_endpoint, upstream_ca=cluster.ca_pem, cassette=cassette
            ) as proxy:
                exporter = cluster.new_exporter("exporter-1", dict(LABELS))
                client = cluster.new_client("alice")
                async with run_exporter(proxy.endpoint, exporter.token, proxy.ca_pem, exporter.name):
                    await cluster.wait_exporter_available(exporter.name)
                    config = client_config(proxy.endpoint, client.token, proxy.ca_pem, name=client.name)
                    await anyio.to_thread.run_sync(_log_stream_scenario, config)
                    await cluster.wait_exporter_available(exporter.name)


@pytest.fixture(scope="module")
def recorded_log_stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cassette = tmp_path_factory.mktemp("verify") / "log-stream.msgpack"
    asyncio.run(_record_log_stream(cassette))
    return cassette


class HighVoltagePower(MockPower):
    """MockPower whose second reading says 12 V instead of 5 V."""

    @export
    async def read(self) -> AsyncGenerator[PowerReading, None]:
        yield PowerReading(voltage=0.0, current=0.0)
        yield PowerReading(voltage=12.0, current=2.0)


class NoReadPower(Driver):
    """A power driver that lost its `read` method."""

    @classmethod
    def client(cls) -> str:
        return "jumpstarter_driver_power.client.PowerClient"

    @export
    async def on(self) -> None:
        pass

    @export
    async def off(self) -> None:
        pass


async def _record_exporter_side(cassette: Path) -> None:
    """Only the exporter goes through the recorder; the client talks to the cluster directly."""
    with anyio.fail_after(60):
        async with FakeCluster() as cluster:
            async with recording(
                upstream=cluster.controller_endpoint, upstream_ca=cluster.ca_pem, cassette=cassette
            ) as proxy:
                exporter = cluster.new_exporter("exporter-1", dict(LABELS))
                client = cluster.new_client("alice")
                async with run_exporter(proxy.endpoint, exporter.token, proxy.ca_pem, exporter.name):
                    await cluster.wait_exporter_available(exporter.name)
                    await run_client_scenario(
                        client.endpoint, client.token, client.ca_pem, name=client.name, selector=SELECTOR
                    )
                    await cluster.wait_exporter_available(exporter.name)


@pytest.fixture(scope="module")
def recorded_exporter_side(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cassette = tmp_path_factory.mktemp("verify") / "exporter-side.msgpack"
    asyncio.run(_record_exporter_side(cassette))
    return cassette


class HangingPower(MockPower):
    """MockPower whose `on` never returns."""

    @export
    async def on(self) -> None:
        await anyio.sleep_forever()


def hanging_drivers() -> Driver:
    return DemoRoot(children={"power": HangingPower(), "echo": EchoNetwork()})  # type: ignore[abstract]


def high_voltage_drivers() -> Driver:
    return DemoRoot(children={"power": HighVoltagePower(), "echo": EchoNetwork()})  # type: ignore[abstract]


def no_read_drivers() -> Driver:
    return DemoRoot(children={"power": NoReadPower(), "echo": EchoNetwork()})  # type: ignore[abstract]


async def verify_with(cassette: Path, **exporter: Any) -> VerifyReport:
    """Verify `cassette` against a fresh real exporter started with `exporter` keyword arguments."""
    with anyio.fail_after(30):
        async with verifying(cassette, timeout=STEP_TIMEOUT) as v:
            assert v.ca_pem is not None and v.ca_file is not None and v.ca_file.read_bytes() == v.ca_pem
            async with run_exporter(v.endpoint, "any-token", v.ca_pem, "exporter-1", **exporter):
                report = await v.wait()
    return report


def by_path(report: VerifyReport) -> dict[str, CallReport]:
    return {c.path: c for c in report.calls}


# ---------------------------------------------------------------------------------------------------- real peers


async def test_same_drivers_verify_clean(recorded: RecordedRun) -> None:
    started = time.monotonic()
    report = await verify_with(recorded.cassette)
    assert report.same, report.render_text()
    assert report.exit_code == 0
    assert [c.path for c in report.calls] == [f"RouterService/Stream[0] > {p}" for p in INNER]
    assert all(c.verdict is Verdict.SAME for c in report.calls)
    assert report.exporter == "default/exporter-1"
    # The main tunnel was driven; the readiness probe (its Dial races the main one) was accepted and closed.
    assert sorted((t.kind, t.state.value) for t in report.tunnels) == [("probe", "driven"), ("session", "driven")]
    assert not report.misses
    # Register, ReportStatus (available, lease ready, available again), Status, Listen.
    assert report.controller_calls >= 5
    assert time.monotonic() - started < 20
    document = report.to_json()
    assert document["format"] == "jsreplay-verify/1"
    assert document["result"] == "same"
    assert document["counts"] == {"same": 6, "different": 0, "missing": 0, "extra": 0, "controller_misses": 0}
    json.dumps(document)


async def test_changed_reading_is_a_difference(recorded: RecordedRun) -> None:
    report = await verify_with(recorded.cassette, drivers=high_voltage_drivers)
    assert report.exit_code == 1
    calls = by_path(report)
    assert calls[READ_CALL].verdict is Verdict.DIFFERENT
    assert [(d.kind, d.path, d.recorded, d.live) for d in calls[READ_CALL].differences] == [
        ("field_changed", READ_CALL + ".responses[1].result.voltage", 5.0, 12.0)
    ]
    others = [c for c in report.calls if c.path != READ_CALL]
    assert all(c.verdict is Verdict.SAME for c in others), report.render_text()
    text = report.render_text()
    assert "different " + READ_CALL in text
    assert ".responses[1].result.voltage: recorded 5.0, got 12.0" in text
    assert "result: DIFFERENT" in text


async def test_removed_method_is_a_difference(recorded: RecordedRun) -> None:
    report = await verify_with(recorded.cassette, drivers=no_read_drivers)
    assert report.exit_code == 1
    read = by_path(report)[READ_CALL]
    assert read.verdict is Verdict.DIFFERENT
    changes = {d.path.removeprefix(READ_CALL): (d.recorded, d.live) for d in read.differences}
    assert changes[".outcome"] == ("OK", "NOT_FOUND")
    assert ".responses[0]" in changes and ".responses[1]" in changes
    # The calls after it still ran, in order, and still match.
    assert by_path(report)["RouterService/Stream[0] > ExporterService/GetStatus[0]"].verdict is Verdict.SAME


async def test_unanswered_call_is_missing_after_the_timeout(recorded: RecordedRun) -> None:
    started = time.monotonic()
    with anyio.fail_after(30):
        async with verifying(recorded.cassette, timeout=1.0) as v:
            async with run_exporter(v.endpoint, "any-token", v.ca_pem, "exporter-1", drivers=hanging_drivers):
                report = await v.wait()
    assert report.exit_code == 1
    on = by_path(report)["RouterService/Stream[0] > ExporterService/DriverCall[0]"]
    assert on.verdict is Verdict.MISSING
    assert on.reason == "no status within 1s"
    # verify gave up on it and went on with the calls after it.
    assert by_path(report)[READ_CALL].verdict is Verdict.SAME
    assert time.monotonic() - started < 15


async def test_unexpected_controller_call_is_reported(recorded: RecordedRun) -> None:
    # The recorded exporter registered without labels; this one sends some: Register no longer matches.
    report = await verify_with(recorded.cassette, labels={"example.com/extra": "yes"})
    assert report.exit_code == 1
    assert [m.method for m in report.misses] == ["/jumpstarter.v1.ControllerService/Register"]
    assert "labels" in report.misses[0].explanation
    # It was answered anyway, so the session went on: GetReport shows the labels too, the rest still match.
    assert report.misses[0].served is not None
    report_call = "RouterService/Stream[0] > ExporterService/GetReport[0]"
    assert [(d.kind, d.path, d.live) for d in by_path(report)[report_call].differences] == [
        ("field_added", report_call + ".responses[0].labels", {"example.com/extra": "yes"})
    ]
    assert all(c.verdict is Verdict.SAME for c in report.calls if c.path != report_call)


async def test_stream_open_across_calls_and_end_session(recorded_log_stream: Path) -> None:
    # LogStream stays open while the driver calls run and is cancelled by the client after them: verify keeps
    # it open in the same way (it would deadlock or cancel early if it sent the calls one after another).
    report = await verify_with(recorded_log_stream)
    assert report.same, report.render_text()
    assert [c.path.split(" > ")[1] for c in report.calls] == [
        "ExporterService/GetReport[0]",
        "ExporterService/LogStream[0]",
        "ExporterService/DriverCall[0]",
        "ExporterService/StreamingDriverCall[0]",
        "ExporterService/DriverCall[1]",
        "ExporterService/EndSession[0]",
    ]


async def test_report_when_the_exporter_never_came(recorded: RecordedRun) -> None:
    verifier = Verifier(VerifyConfig(cassette=recorded.cassette, timeout=1))
    await verifier.start()
    try:
        assert verifier.handler is not None
        report = verifier.handler.report()
    finally:
        await verifier.stop()
    assert report.exit_code == 1
    assert {c.verdict for c in report.calls} == {Verdict.MISSING}
    assert all("Listen message was never sent" in c.reason for c in report.calls)
    assert {t.state for t in report.tunnels} == {TunnelState.NOT_OPENED}
    assert report.counts()["missing"] == len(INNER) + 1  # the calls, and the probe


async def test_cassette_recorded_from_the_exporter_side_only(recorded_exporter_side: Path) -> None:
    # The inner calls come from the exporter's end of the tunnel: what an exporter developer can record alone.
    report = await verify_with(recorded_exporter_side)
    assert report.same, report.render_text()
    assert [c.path.split(" > ")[1] for c in report.calls] == list(INNER)


async def test_no_exporter_is_an_error(recorded: RecordedRun) -> None:
    with anyio.fail_after(10):
        async with verifying(recorded.cassette, timeout=0.5) as v:
            with pytest.raises(VerifyError, match=r"no exporter connected to 127\.0\.0\.1:\d+ within 0\.5s"):
                await v.wait()


# ---------------------------------------------------------------------------------------------------- CLI


async def _cli(cassette: Path, tmp_path: Path, *args: str, exporter: dict[str, Any] | None) -> tuple[int, str, str]:
    """Run `jsreplay verify` as a process; start a real exporter at the address it prints (unless None)."""
    ca_file = tmp_path / "ca.pem"
    command = [sys.executable, "-m", "jsreplay", "verify", str(cassette), "--ca-out", str(ca_file), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with anyio.fail_after(40):
        process = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
        )
        assert process.stdout is not None and process.stderr is not None
        banner = (await process.stderr.readline()).decode()
        found = re.search(r"listening on (\S+) \(CA file (\S+)\)", banner)
        assert found, banner
        endpoint = found.group(1)
        assert Path(found.group(2)) == ca_file
        if exporter is None:
            stdout, stderr = await process.communicate()
        else:
            # The verify process is gone before the exporter stops: stop it without Unregister.
            async with run_exporter(endpoint, "t", ca_file.read_bytes(), "exporter-1", unregister=False, **exporter):
                stdout, stderr = await process.communicate()
        code = await process.wait()
    return code, stdout.decode(), banner + stderr.decode()


async def test_cli_same_drivers_exit_0(recorded: RecordedRun, tmp_path: Path) -> None:
    code, stdout, stderr = await _cli(recorded.cassette, tmp_path, "--format", "json", "--timeout", "15", exporter={})
    assert code == 0, stdout + stderr
    document = json.loads(stdout)
    assert document["result"] == "same"
    assert [c["path"].split(" > ")[1] for c in document["calls"]] == list(INNER)
    assert {c["verdict"] for c in document["calls"]} == {"same"}
    assert "Traceback" not in stderr


async def test_cli_changed_driver_exit_1(recorded: RecordedRun, tmp_path: Path) -> None:
    exporter = {"drivers": high_voltage_drivers}
    code, stdout, stderr = await _cli(recorded.cassette, tmp_path, "--timeout", "15", exporter=exporter)
    assert code == 1, stdout + stderr
    assert re.search(r"different +" + re.escape(READ_CALL), stdout)
    assert ".responses[1].result.voltage: recorded 5.0, got 12.0" in stdout
    assert "Traceback" not in stderr


async def test_cli_ignore_turns_the_difference_off(recorded: RecordedRun, tmp_path: Path) -> None:
    exporter = {"drivers": high_voltage_drivers}
    ignore = ("--ignore", "ExporterService/StreamingDriverCall.response.result.voltage")
    code, stdout, stderr = await _cli(recorded.cassette, tmp_path, "--timeout", "15", *ignore, exporter=exporter)
    assert code == 0, stdout + stderr


async def test_cli_no_exporter_exit_2(recorded: RecordedRun, tmp_path: Path) -> None:
    started = time.monotonic()
    code, stdout, stderr = await _cli(recorded.cassette, tmp_path, "--timeout", "1", exporter=None)
    assert code == 2
    assert stdout == ""
    assert re.search(r"jsreplay: error: no exporter connected to 127\.0\.0\.1:\d+ within 1s", stderr), stderr
    assert "Traceback" not in stderr
    assert time.monotonic() - started < 15


# ---------------------------------------------------------------------------------------------------- sans I/O


def _report(uuid: str, parent: str | None, name: str | None) -> dict[str, Any]:
    labels = {"jumpstarter.dev/name": name} if name else {}
    return {"uuid": uuid, **({"parent_uuid": parent} if parent else {}), "labels": labels}


U = [f"00000000-0000-4000-8000-{i:012d}" for i in range(10)]


def test_tree_paths_by_name_and_position() -> None:
    reports = [_report(U[0], None, None), _report(U[1], U[0], "power"), _report(U[2], U[0], None)]
    reports.append(_report(U[3], U[2], "serial"))
    assert tree_paths(reports) == {
        ("#0",): U[0],
        ("#0", "power"): U[1],
        ("#0", "#1"): U[2],
        ("#0", "#1", "serial"): U[3],
    }


def test_uuid_map_rewrites_requests_and_metadata() -> None:
    registry = Registry.default()
    recorded = {"uuid": U[9], "reports": [_report(U[0], None, None), _report(U[1], U[0], "power")]}
    live = {"uuid": U[8], "reports": [_report(U[5], None, None), _report(U[6], U[5], "power")]}
    uuids = UuidMap()
    uuids.learn(recorded, {**live, "reports": [*live["reports"]]})
    assert uuids.mapping == {U[9]: U[8], U[0]: U[5], U[1]: U[6]}
    request = registry.encode("jumpstarter.v1.DriverCallRequest", {"uuid": U[1], "method": "on"})
    rewritten = uuids.message(registry, "jumpstarter.v1.DriverCallRequest", request)
    assert registry.decode("jumpstarter.v1.DriverCallRequest", rewritten) == {"uuid": U[6], "method": "on"}
    # Nothing to rewrite: the very same bytes go out.
    other = registry.encode("jumpstarter.v1.DriverCallRequest", {"uuid": U[7], "method": "on"})
    assert uuids.message(registry, "jumpstarter.v1.DriverCallRequest", other) is other
    metadata = (("request", f'{{"kind":"driver","uuid":"{U[1]}","method":"connect"}}'), ("x-bin", b"\x00"))
    assert uuids.metadata(metadata) == (
        ("request", f'{{"kind":"driver","uuid":"{U[6]}","method":"connect"}}'),
        ("x-bin", b"\x00"),
    )


def test_uuid_map_notes_drivers_that_are_gone() -> None:
    uuids = UuidMap()
    uuids.learn(
        {"reports": [_report(U[0], None, None), _report(U[1], U[0], "power")]},
        {"reports": [_report(U[5], None, None)]},
    )
    assert uuids.unmatched == ["#0/power"]


def test_report_json_and_text() -> None:
    report = VerifyReport(cassette="s.msgpack", exporter="default/e")
    report.calls = [
        CallReport("RouterService/Stream[0] > ExporterService/GetReport[0]", "/x/GetReport", Verdict.SAME),
        CallReport(
            "RouterService/Stream[0] > ExporterService/DriverCall[0]",
            "/x/DriverCall",
            Verdict.DIFFERENT,
            [
                FieldDifference(
                    "field_changed", "RouterService/Stream[0] > ExporterService/DriverCall[0].outcome", "OK", "UNKNOWN"
                )
            ],
        ),
        CallReport(
            "RouterService/Stream[0] > ExporterService/GetStatus[0]",
            "/x/GetStatus",
            Verdict.MISSING,
            reason="no answer",
        ),
    ]
    report.tunnels = [TunnelReport("s.msgpack#12", "session", TunnelState.DRIVEN, "3 inner calls")]
    report.misses = [ControllerMiss("/jumpstarter.v1.ControllerService/Register", "differs at labels", "s.msgpack#1")]
    assert not report.same and report.exit_code == 1
    document = report.to_json()
    assert document["counts"] == {"same": 1, "different": 1, "missing": 1, "extra": 0, "controller_misses": 1}
    assert document["calls"][1]["differences"] == [
        {
            "kind": "field_changed",
            "path": "RouterService/Stream[0] > ExporterService/DriverCall[0].outcome",
            "recorded": "OK",
            "live": "UNKNOWN",
        }
    ]
    assert document["calls"][2]["reason"] == "no answer"
    assert document["controller"]["misses"][0]["served"] == "s.msgpack#1"
    text = report.render_text()
    assert '.outcome: recorded "OK", got "UNKNOWN"' in text
    assert "missing   RouterService/Stream[0] > ExporterService/GetStatus[0]  (no answer)" in text
    assert "ControllerService/Register (answered with s.msgpack#1): differs at labels" in text
    assert text.rstrip().endswith("1 unexpected controller calls of 0)")


async def test_a_cassette_without_tunnels_says_only_controller_calls_were_compared(
    recorded: RecordedRun, tmp_path: Path
) -> None:
    from jsreplay.cassette.format import read_cassette, write_cassette
    from jsreplay.cassette.model import CallStart, Cassette
    from jsreplay.protocol.wire import ROUTER_STREAM

    whole = read_cassette(recorded.cassette)
    router_calls = {e.call_id for e in whole.events if isinstance(e, CallStart) and e.method == ROUTER_STREAM}
    assert router_calls
    cut = tmp_path / "no-tunnels.msgpack"
    kept = tuple(e for e in whole.events if e.call_id not in router_calls)
    write_cassette(cut, Cassette(header=whole.header, events=kept), redactor=None)
    report = await verify_with(cut)
    assert not report.calls  # no driver was called: nothing inside a tunnel to compare
    assert any("only the exporter's controller calls were compared" in n for n in report.notes), report.notes
    full = await verify_with(recorded.cassette)
    assert not any("only the exporter's controller calls" in n for n in full.notes)
