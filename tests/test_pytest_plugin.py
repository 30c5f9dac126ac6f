"""The pytest plugin, run the way users run it: test files using the marker and fixture, in a pytest subprocess.

The inner tests drive the real Jumpstarter 0.9.0 client (its blocking API, and `run_client_scenario`) against
the replay server the `jsreplay_server` fixture yields, or through the recording proxy it yields when recording.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from functools import partial
from pathlib import Path

import anyio
import pytest

from jsreplay.cassette.format import read_cassette
from jsreplay.testing import FakeCluster, run_exporter
from jsreplay.testing.recording import LABELS, record_scenario

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.e2e]

RUN_TIMEOUT_S = 60  # one inner pytest run (its interpreter start with jumpstarter's imports is ~1.5-2 s)

# Shared by the inner test files: a client config as a user would write one, for the fixture's endpoint.
CLIENT_CONFIG = """
import base64
import os
from datetime import timedelta

import pytest
from jumpstarter.config.client import ClientConfigV1Alpha1, ClientConfigV1Alpha1Drivers
from jumpstarter.config.common import ObjectMeta
from jumpstarter.config.tls import TLSConfigV1Alpha1

SELECTOR = "example.com/board=demo"
DURATION = timedelta(minutes=10)  # what the recording asked for: requested durations are matched literally


def client_config(server):
    return ClientConfigV1Alpha1(
        alias="test",
        metadata=ObjectMeta(namespace="default", name="alice"),
        endpoint=server.endpoint,
        token=os.environ.get("JSREPLAY_TEST_TOKEN", "replay-ignores-credentials"),
        tls=TLSConfigV1Alpha1(ca=base64.b64encode(server.ca_pem).decode()),
        drivers=ClientConfigV1Alpha1Drivers(allow=["jumpstarter_driver_power.*", "jumpstarter_driver_network.*"]),
    )
"""

REPLAY_TESTS = (
    CLIENT_CONFIG
    + """
from jsreplay.testing import run_client_scenario


@pytest.mark.jsreplay("cassettes/session.msgpack")
def test_blocking_client(jsreplay_server):
    with client_config(jsreplay_server).lease(selector=SELECTOR, duration=DURATION) as lease:
        with lease.connect() as root:
            power = root.children["power"]
            power.on()
            power.off()
            readings = [(r.voltage, r.current) for r in power.read()]
    assert readings == [(0.0, 0.0), (5.0, 2.0)]


@pytest.mark.anyio
@pytest.mark.jsreplay("cassettes/session.msgpack", match="default", allow_repeats=False)
async def test_async_full_scenario(jsreplay_server):
    result = await run_client_scenario(
        jsreplay_server.endpoint, "unused", jsreplay_server.ca_pem, name="alice", selector=SELECTOR, timeout=30
    )
    assert result.echoed == result.sent
    assert result.exporter_status == "LEASE_READY"
"""
)

MISS_TESTS = (
    CLIENT_CONFIG
    + """

@pytest.mark.jsreplay("cassettes/session.msgpack")
def test_unrecorded_call_is_swallowed(jsreplay_server):
    # The recording never listed exporters: the replay answers with an error, which this test ignores.
    # The plugin must fail it anyway.
    with pytest.raises(Exception):
        client_config(jsreplay_server).list_exporters()


@pytest.mark.jsreplay("cassettes/never-recorded.msgpack")
def test_missing_cassette(jsreplay_server):
    pass
"""
)

RECORD_TEST = (
    CLIENT_CONFIG
    + """
from jsreplay.testing import run_client_scenario


@pytest.mark.jsreplay("cassettes/new.msgpack")
def test_session(jsreplay_server):
    import asyncio

    result = asyncio.run(
        run_client_scenario(
            jsreplay_server.endpoint,
            os.environ.get("JSREPLAY_TEST_TOKEN", "unused"),
            jsreplay_server.ca_pem,
            name="alice",
            selector=SELECTOR,
            timeout=30,
        )
    )
    assert result.echoed == result.sent
    assert result.readings == ((0.0, 0.0), (5.0, 2.0))


@pytest.mark.jsreplay("cassettes/failed.msgpack")
def test_fails_while_recording(jsreplay_server):
    assert client_config(jsreplay_server).list_exporters().exporters
    assert False, "this test fails after talking to the upstream"
"""
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def session_cassette(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full scenario, recorded once (real client and exporter through `jsreplay record`, ~0.5 s)."""
    path = tmp_path_factory.mktemp("plugin") / "session.msgpack"
    asyncio.run(record_scenario(path))
    return path


def _install(pytester: pytest.Pytester, cassette: Path) -> None:
    (pytester.path / "cassettes").mkdir()
    shutil.copy(cassette, pytester.path / "cassettes" / "session.msgpack")


def _run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--timeout=45", *args, timeout=RUN_TIMEOUT_S)


@pytest.mark.timeout(90)
def test_replays_for_blocking_and_async_tests(pytester: pytest.Pytester, session_cassette: Path) -> None:
    _install(pytester, session_cassette)
    pytester.makepyfile(test_replayed=REPLAY_TESTS)
    result = _run(pytester, "-v")
    result.assert_outcomes(passed=2)


@pytest.mark.timeout(90)
def test_a_miss_fails_the_test_with_the_explanation(pytester: pytest.Pytester, session_cassette: Path) -> None:
    _install(pytester, session_cassette)
    pytester.makepyfile(test_misses=MISS_TESTS)
    result = _run(pytester)
    result.assert_outcomes(failed=1, errors=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*FAILED test_misses.py::test_unrecorded_call_is_swallowed*",
            "*ERROR test_misses.py::test_missing_cassette*",
        ]
    )
    # The failure names the method the replay could not answer and the cassette it looked in.
    assert "jsreplay: 1 call(s) found no recording in" in out
    assert "/jumpstarter.client.v1.ClientService/ListExporters" in out
    assert "session.msgpack" in out
    # A missing cassette says how to record it.
    assert "never-recorded.msgpack does not exist; record it with --jsreplay-record-mode once" in out


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_record_once_then_replay_without_the_upstream(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_recorded=RECORD_TEST)
    cassette = pytester.path / "cassettes" / "new.msgpack"
    with anyio.fail_after(100):
        async with FakeCluster() as cluster:
            exporter = cluster.new_exporter("exporter-1", LABELS)
            client = cluster.new_client("alice")
            monkeypatch.setenv("JSREPLAY_TEST_TOKEN", client.token)
            ca_file = pytester.path / "cluster-ca.pem"
            ca_file.write_bytes(cluster.ca_pem)
            # The exporter talks to the cluster directly: only the test's client goes through the plugin.
            async with run_exporter(exporter.endpoint, exporter.token, exporter.ca_pem, exporter.name):
                await cluster.wait_exporter_available(exporter.name)
                recording = await anyio.to_thread.run_sync(
                    partial(
                        _run,
                        pytester,
                        "--jsreplay-record-mode=once",
                        f"--jsreplay-upstream={cluster.controller_endpoint}",
                        f"--jsreplay-upstream-ca={ca_file}",
                    )
                )
            served = cluster.call_counts()
    recording.assert_outcomes(passed=1, failed=1)
    # A failed test's recording is kept aside, never where `once` would replay it.
    assert not cassette.with_name("failed.msgpack").exists()
    assert cassette.with_name("failed.msgpack.failed").exists()
    assert "the test failed while recording" in recording.stdout.str()
    assert served["/jumpstarter.client.v1.ClientService/CreateLease"] == 1
    assert served["/jumpstarter.v1.ControllerService/Dial"] >= 1

    assert cassette.exists() and not cassette.with_name("new.msgpack.partial").exists()
    recorded = read_cassette(cassette)
    assert recorded.truncated_at is None
    methods = {c.method for c in recorded.calls()}
    assert {
        "/jumpstarter.client.v1.ClientService/CreateLease",
        "/jumpstarter.v1.ControllerService/Dial",
        "/jumpstarter.v1.RouterService/Stream",
    } <= methods
    assert "/jumpstarter.v1.ControllerService/Register" not in methods  # the exporter was not recorded
    written = cassette.stat().st_mtime_ns

    # The cluster is gone: `once` finds the cassette and replays it.
    monkeypatch.delenv("JSREPLAY_TEST_TOKEN")
    replaying = await anyio.to_thread.run_sync(
        partial(_run, pytester, "--jsreplay-record-mode=once", "-k", "test_session")
    )
    replaying.assert_outcomes(passed=1)
    assert cassette.stat().st_mtime_ns == written


SKIPPING_TESTS = (
    CLIENT_CONFIG
    + """

@pytest.mark.jsreplay("cassettes/session.msgpack", fail_unused=True)
def test_skips_power_off(jsreplay_server):
    with client_config(jsreplay_server).lease(selector=SELECTOR, duration=DURATION) as lease:
        with lease.connect() as root:
            root.children["power"].on()  # the recording also turned it off, read it, echoed, asked GetStatus


@pytest.mark.jsreplay("cassettes/session.msgpack", faults=["ExporterService/DriverCall[power.on]#1=UNAVAILABLE:busy"])
def test_fault_from_the_marker(jsreplay_server):
    with client_config(jsreplay_server).lease(selector=SELECTOR, duration=DURATION) as lease:
        with lease.connect() as root:
            with pytest.raises(Exception, match="UNAVAILABLE: busy"):
                root.children["power"].on()
"""
)


@pytest.mark.timeout(120)
def test_fail_unused_names_the_skipped_step(pytester: pytest.Pytester, session_cassette: Path) -> None:
    _install(pytester, session_cassette)
    pytester.makepyfile(test_skipping=SKIPPING_TESTS)
    result = _run(pytester, "-rA")
    result.assert_outcomes(passed=2, errors=1)  # the unused recordings fail the first test's teardown
    out = result.stdout.str()
    assert "recording(s) never used (fail_unused)" in out
    assert "ExporterService/DriverCall [power.off]" in out and "ExporterService/GetStatus" in out
    assert "ClientService/GetLease" not in out.split("never used")[1].split("=====")[0]  # polls do not trip it
    assert "jsreplay coverage" in out and "fault 'ExporterService/DriverCall[power.on]#1" in out


@pytest.mark.timeout(180)
def test_xdist_workers_serve_on_their_own_ports_and_combine_one_report(
    pytester: pytest.Pytester, session_cassette: Path
) -> None:
    _install(pytester, session_cassette)
    pytester.makepyfile(test_replayed=REPLAY_TESTS, test_skipping=SKIPPING_TESTS)
    coverage = pytester.path / "coverage.json"
    result = _run(pytester, "-n", "2", f"--jsreplay-coverage={coverage}")
    result.assert_outcomes(passed=4, errors=1)
    out = result.stdout.str()
    assert "2 workers" in out
    combined = json.loads(coverage.read_text())
    assert combined["runs"] == 4  # one replay server per test, on whichever worker ran it
    [cassette] = combined["cassettes"]
    drivers = {d["driver_call"]: d for d in cassette["driver_methods"]}
    assert drivers["power.on"]["served"] == 3 and drivers["power.off"]["left"] == 0  # the faulted call is not a serve
    assert [i["kind"] for i in combined["injected"]] == ["fault"]
