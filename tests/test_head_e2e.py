"""jsreplay with Jumpstarter's development client and exporter (../shared/jumpstarter-head), across versions.

The development peers run as subprocesses of their own venv (tests/head/venv.py, tests/head/peers.py) against the
project's fake cluster, which speaks 0.9.0: it answers GetServiceEndpoints UNIMPLEMENTED, as an older controller
does, and keeps the new fields as unknown ones. Skipped, with the reason, where the folder is absent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

import jsreplay
from jsreplay.cassette.format import read_cassette
from jsreplay.protocol.schemas import load_schema
from jsreplay.testing import FakeCluster, run_client_scenario
from jsreplay.testing.recording import LABELS, SELECTOR, record_scenario
from jsreplay.verify import Verdict, verifying
from tests.head.runner import head_client, head_exporter
from tests.head.venv import HeadUnavailable, head_python
from tests.inspect.inspect_support import run_cli

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CONTEXT = {"ci.example.com/job": "4711", "team": "qa"}
MOTD = "development exporter: be nice"
GET_SERVICE_ENDPOINTS = "/jumpstarter.v1.ControllerService/GetServiceEndpoints"
RECORD_TIMEOUT_S = 90


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def head() -> None:
    try:
        head_python()
    except HeadUnavailable as exc:
        pytest.skip(str(exc))


@dataclass(frozen=True)
class HeadRun:
    cassette: Path
    result: dict[str, Any]
    tmp: Path


async def record_head(
    cassette: Path, tmp: Path, *, context: dict[str, str] | None = None, log_stream: bool = False
) -> HeadRun:
    """The development exporter and client through `jsreplay.recording(schema=head)` against the fake cluster."""
    with anyio.fail_after(RECORD_TIMEOUT_S):
        async with FakeCluster() as cluster:
            async with jsreplay.recording(
                upstream=cluster.controller_endpoint,
                upstream_ca=cluster.ca_pem,
                cassette=cassette,
                schema=load_schema("head"),
            ) as proxy:
                exporter = cluster.new_exporter("exporter-1", dict(LABELS))
                client = cluster.new_client("alice")
                async with head_exporter(proxy.endpoint, exporter.token, proxy.ca_pem, exporter.name, tmp, motd=MOTD):
                    await cluster.wait_exporter_available(exporter.name, timeout=20)
                    [result] = await head_client(
                        [proxy.endpoint],
                        client.token,
                        proxy.ca_pem,
                        client.name,
                        SELECTOR,
                        tmp,
                        context=context,
                        log_stream=log_stream,
                    )
                    await cluster.wait_exporter_available(exporter.name, timeout=20)
    assert "error" not in result, result
    return HeadRun(cassette, result, tmp)


@pytest.fixture(scope="module")
def plain(head: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadRun]:
    """The 0.9.0 scenario's steps by the development peers: the cross-version and diff cassette."""
    tmp = tmp_path_factory.mktemp("head-plain")
    yield asyncio.run(record_head(tmp / "head.msgpack", tmp))


@pytest.fixture(scope="module")
def rich(head: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HeadRun]:
    """A lease made with a `context`, a LogStream open around the power calls, an exporter with a motd."""
    tmp = tmp_path_factory.mktemp("head-rich")
    yield asyncio.run(record_head(tmp / "head-rich.msgpack", tmp, context=CONTEXT, log_stream=True))


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The same scenario by the 0.9.0 peers, recorded with --schema v0.9.0."""
    cassette = tmp_path_factory.mktemp("v090") / "v0.9.0.msgpack"
    run = asyncio.run(record_scenario(cassette, schema=load_schema("v0.9.0")))
    yield run.cassette


async def replay_head_client(cassette: Path, tmp: Path, times: int, **kwargs: Any) -> list[Any]:
    """`times` replay servers of `cassette`, one development client run against each; (result, report) pairs."""
    async with AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(jsreplay.replaying(cassette)) for _ in range(times)]
        results = []
        # Each server has its own throw-away CA: one client run per server, each trusting its own CA.
        for server in servers:
            [result] = await head_client(
                [server.endpoint], "any-token", server.ca_pem, "alice", SELECTOR, tmp, timeout=60, **kwargs
            )
            results.append((result, server.report))
    return results


def _comparable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k != "trace"}


# ------------------------------------------------------------------------------------------------ record/replay


@pytest.mark.timeout(600)
async def test_development_client_replays_twenty_of_twenty_with_a_lease_context(rich: HeadRun) -> None:
    # No --ignore: the lease's `context` map matches whatever order its entries are sent in.
    for result, report in await replay_head_client(rich.cassette, rich.tmp, 20, context=CONTEXT, log_stream=True):
        assert _comparable(result) == _comparable(rich.result), result
        assert report.missed == [] and report.errors == [] and report.unfinished == [], report.summary()


@pytest.mark.timeout(300)
async def test_show_names_the_development_fields(rich: HeadRun) -> None:
    out = run_cli("show", rich.cassette)
    assert out.exit_code == 0, out.stderr
    for name in ("motd", "context", "driver_type", "operation", "timestamp", "structured_fields"):
        assert name in out.stdout, name
    assert MOTD in out.stdout and "4711" in out.stdout
    assert "GetServiceEndpoints" in out.stdout  # recorded as the fake (0.9.0) cluster answered it: UNIMPLEMENTED


@pytest.mark.timeout(300)
async def test_verify_a_development_cassette_with_the_development_exporter(plain: HeadRun) -> None:
    with anyio.fail_after(60):
        async with verifying(plain.cassette, timeout=15) as v:
            assert v.ca_pem is not None
            async with head_exporter(v.endpoint, "any-token", v.ca_pem, "exporter-1", plain.tmp, motd=MOTD):
                report = await v.wait()
    assert report.same, report.render_text()
    assert all(c.verdict is Verdict.SAME for c in report.calls)


@pytest.mark.timeout(300)
async def test_verify_a_released_cassette_with_the_development_exporter(released: Path, head: None) -> None:
    with anyio.fail_after(60):
        async with verifying(released, timeout=15) as v:
            assert v.ca_pem is not None
            # No motd: GetReportResponse.motd would be a real difference from the 0.9.0 exporter's answer.
            async with head_exporter(v.endpoint, "any-token", v.ca_pem, "exporter-1", released.parent):
                report = await v.wait()
    text = report.render_text()
    assert report.same, text
    assert "GetServiceEndpoints" in text and "UNIMPLEMENTED" in text


# ------------------------------------------------------------------------------------------------ cross-version


@pytest.mark.timeout(300)
async def test_development_client_replays_a_released_cassette(released: Path, plain: HeadRun) -> None:
    [(result, report)] = await replay_head_client(released, plain.tmp, 1)
    assert _comparable(result) == _comparable(plain.result), result
    assert report.missed == [] and report.errors == [], report.summary()


@pytest.mark.timeout(300)
async def test_released_client_replays_a_development_cassette(plain: HeadRun) -> None:
    with anyio.fail_after(60):
        async with jsreplay.replaying(plain.cassette) as server:
            result = await run_client_scenario(
                server.endpoint, "any-token", server.ca_pem, name="alice", selector=SELECTOR, timeout=40
            )
            report = server.report
    assert result.echoed == result.sent
    assert result.exporter_status == plain.result["exporter_status"]
    assert [list(r) for r in result.readings] == plain.result["readings"]
    assert report.missed == [] and report.errors == [], report.summary()


@pytest.mark.timeout(300)
async def test_a_development_exporter_replayed_from_a_released_cassette_gets_unimplemented(
    released: Path, head: None, tmp_path: Path
) -> None:
    # Replay plays the controller to the exporter too: its GetServiceEndpoints is a note, not a miss.
    with anyio.fail_after(60):
        async with jsreplay.replaying(released) as server:
            async with head_exporter(server.endpoint, "any-token", server.ca_pem, "exporter-1", tmp_path):
                for _ in range(100):
                    if server.report.notes:
                        break
                    await anyio.sleep(0.05)
            report = server.report
    assert report.notes and "GetServiceEndpoints" in report.notes[0]
    assert not [m for m in report.missed if m.method == GET_SERVICE_ENDPOINTS]


# ------------------------------------------------------------------------------------------------ diff


@pytest.mark.timeout(300)
async def test_diff_of_a_released_and_a_development_recording(released: Path, plain: HeadRun) -> None:
    out = run_cli("diff", released, plain.cassette)
    assert out.exit_code == 1, out.stderr
    text = out.stdout
    assert "GetServiceEndpoints" in text and "AuditStream" in text
    for field in ("motd", "context", "driver_type", "operation", "structured_fields"):
        assert field in text, field
    # Nothing about google.* itself (its types appear only as the types of Jumpstarter fields and methods).
    assert not [line for line in text.splitlines() if ":google." in line or "/google." in line]
    assert "schema:field:jumpstarter.v1.LogStreamResponse.timestamp" in text


def _cassette_methods(path: Path) -> list[str]:
    return [c.method for c in read_cassette(path).calls()]


@pytest.mark.timeout(300)
async def test_two_development_recordings_with_log_stream_diff_as_equal(rich: HeadRun, tmp_path: Path) -> None:
    again = await record_head(tmp_path / "again.msgpack", tmp_path, context=CONTEXT, log_stream=True)
    assert sorted(_cassette_methods(again.cassette)) == sorted(_cassette_methods(rich.cassette))
    out = run_cli("diff", rich.cassette, again.cassette)
    assert out.exit_code == 0, out.stdout[-4000:]
