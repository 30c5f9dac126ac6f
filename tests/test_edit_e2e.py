"""`jsreplay redact`, `trim` and `cat` on recordings of the real scenario, replayed with the real 0.9.0 client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

import jsreplay
from jsreplay.cassette.format import read_cassette
from jsreplay.record import recording
from jsreplay.replay import ReplayReport
from jsreplay.testing import FakeCluster, ScenarioResult, run_client_scenario, run_exporter
from jsreplay.testing.recording import LABELS, SELECTOR, RecordedRun, record_scenario

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]
CREATE_LEASE = "/jumpstarter.client.v1.ClientService/CreateLease"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def jsreplay_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jsreplay", *map(str, args)], capture_output=True, text=True, timeout=120
    )


async def record_two_sessions(cassette: Path) -> list[ScenarioResult]:
    """One recording, one exporter, two client sessions one after the other (two tests of one run)."""
    with anyio.fail_after(120):
        async with FakeCluster() as cluster:
            async with recording(
                upstream=cluster.controller_endpoint, upstream_ca=cluster.ca_pem, cassette=cassette
            ) as proxy:
                exporter = cluster.new_exporter("exporter-1", dict(LABELS))
                client = cluster.new_client("alice")
                results = []
                async with run_exporter(proxy.endpoint, exporter.token, proxy.ca_pem, exporter.name):
                    for _ in range(2):
                        await cluster.wait_exporter_available(exporter.name)
                        results.append(
                            await run_client_scenario(
                                proxy.endpoint, client.token, proxy.ca_pem, name=client.name, selector=SELECTOR
                            )
                        )
                    await cluster.wait_exporter_available(exporter.name)
    return results


async def replay_sessions(cassette: Path, sessions: int = 1) -> tuple[list[ScenarioResult], ReplayReport]:
    results = []
    async with jsreplay.replaying(cassette) as server:
        for _ in range(sessions):
            with anyio.fail_after(60):
                results.append(
                    await run_client_scenario(
                        server.endpoint, "any-token", server.ca_pem, name="alice", selector=SELECTOR, timeout=45
                    )
                )
        report = server.report
    return results, report


@pytest.fixture(scope="module")
def unredacted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedRun]:
    cassette = tmp_path_factory.mktemp("edit") / "clear.msgpack"
    yield asyncio.run(record_scenario(cassette, redact=False))


def _forms(value: str) -> dict[str, bytes]:
    raw = value.encode()
    return {
        "raw": raw,
        "base64": base64.b64encode(raw),
        "base64url": base64.urlsafe_b64encode(raw),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }


@pytest.mark.timeout(240)
async def test_scrubbed_values_are_nowhere_in_the_output_and_it_replays(
    unredacted: RecordedRun, tmp_path: Path
) -> None:
    source = unredacted.cassette
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    lease = unredacted.result.lease_name  # in CreateLease's response, GetLease, DeleteLease and the Dials
    client_token = unredacted.secrets[1]
    assert lease.encode() in source.read_bytes() and client_token.encode() in source.read_bytes()
    out = tmp_path / "scrubbed.msgpack"
    done = jsreplay_cli("redact", source, out, "--scrub", lease, "--scrub", client_token)
    assert done.returncode == 0, done.stderr
    assert hashlib.sha256(source.read_bytes()).hexdigest() == before  # the input is untouched
    data = out.read_bytes()
    for secret in (lease, client_token, *unredacted.secrets):
        for name, form in _forms(secret).items():
            assert form not in data, f"{name} form of a scrubbed or secret value is in the output"
    header = read_cassette(out).header
    [entry] = header.extra["redactions"]
    assert entry["by"] == "jsreplay redact" and entry["scrubbed_values"] == 2 and entry["at_unix_ns"] > 0
    assert header.redaction.enabled

    results, report = await replay_sessions(out)
    assert report.missed == [] and report.errors == [] and report.causal_timeouts == []
    assert results[0].comparable() == unredacted.result.comparable()


async def test_in_place_replaces_the_input_atomically(unredacted: RecordedRun, tmp_path: Path) -> None:
    copy = tmp_path / "copy.msgpack"
    copy.write_bytes(unredacted.cassette.read_bytes())
    done = jsreplay_cli("redact", copy, "--in-place")
    assert done.returncode == 0, done.stderr
    assert not any(s.encode() in copy.read_bytes() for s in unredacted.secrets)
    assert [p.name for p in tmp_path.iterdir()] == ["copy.msgpack"]  # no temporary file left behind


@pytest.mark.timeout(300)
async def test_trimming_to_one_test_replays_it_and_misses_nothing(tmp_path: Path) -> None:
    source = tmp_path / "two.msgpack"
    recorded = await record_two_sessions(source)
    first_lease, second_lease = (r.lease_name for r in recorded)
    cassette = read_cassette(source)
    second = [c for c in cassette.calls() if c.method == CREATE_LEASE][1].start.t_ns / 1e9
    out = tmp_path / "second.msgpack"
    done = jsreplay_cli("trim", source, out, "--since", f"{second - 0.001:.6f}")
    assert done.returncode == 0, done.stderr
    data = out.read_bytes()
    assert second_lease.encode() in data and first_lease.encode() not in data
    assert len(read_cassette(out).calls()) < len(cassette.calls())

    results, report = await replay_sessions(out)
    assert report.missed == [] and report.errors == [] and report.causal_timeouts == []
    assert results[0].comparable() == recorded[1].comparable()


@pytest.mark.timeout(300)
async def test_joining_two_recordings_replays_both_sessions(unredacted: RecordedRun, tmp_path: Path) -> None:
    other = tmp_path / "other.msgpack"
    second = await record_scenario(other)
    out = tmp_path / "joined.msgpack"
    done = jsreplay_cli("cat", unredacted.cassette, other, out)
    assert done.returncode == 0, done.stderr
    joined = read_cassette(out)
    a, b = read_cassette(unredacted.cassette), read_cassette(other)
    assert len(joined.calls()) == len(a.calls()) + len(b.calls())
    assert [e.seq for e in joined.events] == list(range(len(joined.events)))
    assert len({c.call_id for c in joined.calls()}) == len(joined.calls())
    assert max(e.t_ns for e in a.events) < min(e.t_ns for e in joined.events[len(a.events) :])

    results, report = await replay_sessions(out, sessions=2)
    assert report.missed == [] and report.errors == [] and report.causal_timeouts == []
    assert results[0].comparable() == unredacted.result.comparable()
    assert results[1].comparable() == second.result.comparable()
    assert {r.lease_name for r in results} == {unredacted.result.lease_name, second.result.lease_name}
