"""The fake cluster against the REAL Jumpstarter 0.9.0 client and exporter, plus its TLS and router pieces."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import grpc
import pytest
from cryptography import x509
from google.protobuf.message import Message
from jumpstarter_protocol import (
    client_pb2,
    client_pb2_grpc,
    jumpstarter_pb2,
    jumpstarter_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)
from jumpstarter_protocol.jumpstarter.v1 import common_pb2

from jsreplay.grpc_options import CHANNEL_OPTIONS
from jsreplay.testing import (
    ECHO_PAYLOAD,
    CallError,
    CallRecord,
    ExporterCredentials,
    FakeCluster,
    run_client_scenario,
    run_exporter,
)
from jsreplay.tls import CertificateAuthority, channel_credentials, load_server_certificate

pytestmark = pytest.mark.anyio

CONTROLLER = "/jumpstarter.v1.ControllerService/"
CLIENT = "/jumpstarter.client.v1.ClientService/"
ROUTER_STREAM = "/jumpstarter.v1.RouterService/Stream"
LABELS = {"example.com/board": "demo", "jsreplay.dev/test": "fake-cluster"}
SELECTOR = "example.com/board=demo"
AVAILABLE = common_pb2.EXPORTER_STATUS_AVAILABLE
LEASE_READY = common_pb2.EXPORTER_STATUS_LEASE_READY
OFFLINE = common_pb2.EXPORTER_STATUS_OFFLINE


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio needs asyncio


@asynccontextmanager
async def cluster_with_exporter(
    cluster: FakeCluster, name: str = "exporter-1", *, insecure: bool = False
) -> AsyncIterator[ExporterCredentials]:
    creds = cluster.new_exporter(name, LABELS)
    async with run_exporter(creds.endpoint, creds.token, None if insecure else creds.ca_pem, creds.name):
        await cluster.wait_exporter_available(name)
        yield creds


def raw_channel(endpoint: str, ca_pem: bytes) -> grpc.aio.Channel:
    return grpc.aio.secure_channel(endpoint, channel_credentials(ca_pem), options=CHANNEL_OPTIONS)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


# ---- the real peers ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_full_session_with_real_client_and_exporter() -> None:
    with anyio.fail_after(45):
        async with FakeCluster() as cluster:
            client = cluster.new_client("alice")
            async with cluster_with_exporter(cluster) as exporter:
                result = await run_client_scenario(
                    client.endpoint, client.token, client.ca_pem, name=client.name, selector=SELECTOR
                )
                # The exporter reports AVAILABLE again once the lease is gone; wait so its stop is deterministic.
                await cluster.wait_exporter_available(exporter.name)
            state = cluster.exporter(exporter.name)

    # What the client saw.
    assert result.exporter_name == "exporter-1"
    assert result.exporter_labels == LABELS
    assert result.drivers == ("echo", "power")
    assert result.power_on is None and result.power_off is None
    assert result.readings == ((0.0, 0.0), (5.0, 2.0))
    assert result.sent == ECHO_PAYLOAD and len(result.sent) == 64 * 1024
    assert result.echoed == result.sent
    assert result.exporter_status == "LEASE_READY"

    # What the cluster saw: every outer call, exactly.
    assert dict(cluster.call_counts()) == {
        CONTROLLER + "Register": 1,
        CONTROLLER + "ReportStatus": 4,
        CONTROLLER + "Status": 1,
        CONTROLLER + "Listen": 1,
        CONTROLLER + "Dial": 2,  # connect() probes its local socket first, which Dials too
        CONTROLLER + "Unregister": 1,
        CLIENT + "CreateLease": 1,
        CLIENT + "GetLease": 2,  # one poll (Ready at once) and one before DeleteLease
        CLIENT + "GetExporter": 1,
        CLIENT + "DeleteLease": 1,
        ROUTER_STREAM: 4,
    }
    streams = {CONTROLLER + "Status", CONTROLLER + "Listen"}
    assert all(c.code == grpc.StatusCode.OK for c in cluster.calls if c.method not in streams)
    assert state.status_history == [AVAILABLE, LEASE_READY, AVAILABLE, OFFLINE]
    assert state.unregistered and not state.registered and state.unregister_reason
    assert state.registered_labels == {}  # a real exporter sends no labels; the cluster's own are used

    (lease,) = cluster.leases.values()
    assert lease.name == result.lease_name
    assert lease.ended and lease.end_reason == "Released" and lease.dials == 2
    assert lease.selector == SELECTOR and lease.client == "alice" and lease.exporter is state

    (status,) = [c for c in cluster.calls if c.method == CONTROLLER + "Status"]
    assert [(m.leased, m.lease_name) for m in status.responses] == [
        (False, ""),
        (True, lease.name),
        (False, ""),
    ]
    assert status.code == grpc.StatusCode.CANCELLED  # the exporter cancels it when it stops
    (listen,) = [c for c in cluster.calls if c.method == CONTROLLER + "Listen"]
    assert len(listen.responses) == 2

    # Two tunnels (the probe and the real connection), each a pair, all ended. The peers close their channels
    # as soon as they are done, so a side may end CANCELLED rather than OK.
    assert sorted(s.arrival for s in cluster.router_streams) == [0, 0, 1, 1]
    assert all(s.lease_name == lease.name for s in cluster.router_streams)
    assert {s.code for s in cluster.router_streams} <= {grpc.StatusCode.OK, grpc.StatusCode.CANCELLED}
    busiest = max(cluster.router_streams, key=lambda s: s.bytes_in)
    assert busiest.bytes_in > 64 * 1024  # the echo bytes went through the router, both ways


@pytest.mark.timeout(60)
async def test_insecure_mode_via_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # No CA anywhere: the peers fetch the server chain first and trust it (hostname checks still apply).
    monkeypatch.setenv("JUMPSTARTER_GRPC_INSECURE", "1")
    with anyio.fail_after(45):
        async with FakeCluster() as cluster:
            client = cluster.new_client("alice")
            async with cluster_with_exporter(cluster, insecure=True):
                result = await run_client_scenario(client.endpoint, client.token, None, name="alice", selector=SELECTOR)
    assert result.echoed == ECHO_PAYLOAD
    assert result.readings == ((0.0, 0.0), (5.0, 2.0))


@pytest.mark.timeout(60)
async def test_client_retries_dial_while_exporter_not_ready() -> None:
    # A strict cluster answers "exporter not ready" at once; the real client backs off and Dials again.
    with anyio.fail_after(45):
        async with FakeCluster(dial_ready_timeout=0) as cluster:
            client = cluster.new_client("alice")
            async with cluster_with_exporter(cluster):
                result = await run_client_scenario(
                    client.endpoint, client.token, client.ca_pem, name="alice", selector=SELECTOR
                )
    assert result.echoed == ECHO_PAYLOAD
    dials = [c for c in cluster.calls if c.method == CONTROLLER + "Dial"]
    assert any(c.code == grpc.StatusCode.FAILED_PRECONDITION for c in dials)
    assert all(c.details == "exporter not ready" for c in dials if c.code != grpc.StatusCode.OK)
    # The real connection's Dial got through. The readiness probe's may not have: its retry back-off
    # (0.3 s, doubling) can outlast the whole scenario, which then cancels it.
    assert 1 <= sum(c.code == grpc.StatusCode.OK for c in dials) <= 2


@pytest.mark.timeout(60)
async def test_hooks_make_variants() -> None:
    # before_call fails the first Dial like a controller that is not ready yet; alter_response edits what
    # GetExporter tells the client.
    failed: list[str] = []

    def before_call(method: str, request: Message) -> None:
        if method == CONTROLLER + "Dial" and not failed:
            failed.append(method)
            raise CallError(grpc.StatusCode.FAILED_PRECONDITION, "exporter not ready (injected)")

    def alter_response(method: str, request: Message, response: Message) -> Message:
        if method == CLIENT + "GetExporter":
            assert isinstance(response, client_pb2.Exporter)
            response.labels["injected"] = "yes"
        return response

    with anyio.fail_after(45):
        async with FakeCluster(before_call=before_call, alter_response=alter_response) as cluster:
            client = cluster.new_client("alice")
            async with cluster_with_exporter(cluster):
                result = await run_client_scenario(
                    client.endpoint, client.token, client.ca_pem, name="alice", selector=SELECTOR
                )
    assert result.exporter_labels == {**LABELS, "injected": "yes"}
    assert result.echoed == ECHO_PAYLOAD
    dials = [c.code for c in cluster.calls if c.method == CONTROLLER + "Dial"]
    # If the failed Dial was the readiness probe's, its retry may be cancelled by the end of the scenario.
    assert dials.count(grpc.StatusCode.FAILED_PRECONDITION) == 1 and dials.count(grpc.StatusCode.OK) in (1, 2)


@pytest.mark.timeout(90)
async def test_listen_ends_ok_at_lease_end_and_the_exporter_copes() -> None:
    # A real controller may end the exporter's Listen with OK when the lease ends. The real exporter copes: each
    # lease's Listen ends OK at the lease's end, the exporter opens Listen again for the next lease, and two
    # scenarios in a row pass.
    with anyio.fail_after(75):
        async with FakeCluster(listen_ends_at_lease_end=True) as cluster:
            client = cluster.new_client("alice")
            async with cluster_with_exporter(cluster) as exporter:
                results = []
                for _ in range(2):
                    result = await run_client_scenario(
                        client.endpoint, client.token, client.ca_pem, name="alice", selector=SELECTOR, timeout=30
                    )
                    results.append(result)
                    assert cluster.leases[result.lease_name].ended
                    listen = await first_listen_ended(cluster, result.lease_name)
                    assert listen.code == grpc.StatusCode.OK and listen.details == ""
                    assert len(listen.responses) == 2  # one per Dial
                    # Each lease has its own Listen, opened once the previous lease's Listen had ended.
                    assert {listened_lease(c) for c in listens(cluster)} == {r.lease_name for r in results}
                    await cluster.wait_exporter_available(exporter.name)
    assert all(r.echoed == ECHO_PAYLOAD for r in results)
    assert results[0].comparable() == results[1].comparable()
    assert results[0].lease_name != results[1].lease_name
    # The 0.9.0 exporter re-opens a Listen that ended OK at once; if it does so before it notices the lease is
    # gone, that Listen (for the ended lease) stays open until the exporter cancels it.
    for call in listens(cluster):
        first = call is listens(cluster, listened_lease(call))[0]
        assert call.code == (grpc.StatusCode.OK if first else grpc.StatusCode.CANCELLED)
    # Otherwise the same calls as two plain scenarios.
    counts = cluster.call_counts()
    del counts[CONTROLLER + "Listen"]
    assert dict(counts) == {
        CONTROLLER + "Register": 1,
        CONTROLLER + "ReportStatus": 6,
        CONTROLLER + "Status": 1,
        CONTROLLER + "Dial": 4,
        CONTROLLER + "Unregister": 1,
        CLIENT + "CreateLease": 2,
        CLIENT + "GetLease": 4,
        CLIENT + "GetExporter": 2,
        CLIENT + "DeleteLease": 2,
        ROUTER_STREAM: 8,
    }


def listens(cluster: FakeCluster, lease_name: str | None = None) -> list[CallRecord]:
    calls = [c for c in cluster.calls if c.method == CONTROLLER + "Listen"]
    return [c for c in calls if lease_name is None or listened_lease(c) == lease_name]


def listened_lease(call: CallRecord) -> str:
    assert isinstance(call.request, jumpstarter_pb2.ListenRequest)
    return call.request.lease_name


async def first_listen_ended(cluster: FakeCluster, lease_name: str) -> CallRecord:
    listen = listens(cluster, lease_name)[0]
    await cluster.wait_for(lambda: listen.code is not None, timeout=10, what=f"the Listen for {lease_name} to end")
    return listen


@pytest.mark.e2e
@pytest.mark.timeout(240)
async def test_scenario_twenty_times_in_a_row() -> None:
    runs = 20
    durations: list[float] = []
    with anyio.fail_after(200):
        async with FakeCluster() as cluster:
            client = cluster.new_client("alice")
            async with cluster_with_exporter(cluster) as exporter:
                first = None
                for _ in range(runs):
                    started = time.perf_counter()
                    result = await run_client_scenario(
                        client.endpoint, client.token, client.ca_pem, name="alice", selector=SELECTOR, timeout=30
                    )
                    await cluster.wait_exporter_available(exporter.name)
                    durations.append(time.perf_counter() - started)
                    first = first or result
                    assert result.comparable() == first.comparable()
                    assert result.echoed == ECHO_PAYLOAD
    counts = cluster.call_counts()
    assert counts[CLIENT + "CreateLease"] == runs and counts[CLIENT + "DeleteLease"] == runs
    assert counts[CONTROLLER + "Dial"] == 2 * runs and counts[ROUTER_STREAM] == 4 * runs
    assert counts[CONTROLLER + "Register"] == 1 and counts[CONTROLLER + "Status"] == 1
    assert len({lease.name for lease in cluster.leases.values()}) == runs
    assert all(lease.ended for lease in cluster.leases.values())
    print(
        f"\n{runs} scenarios: median {statistics.median(durations):.2f}s, "
        f"min {min(durations):.2f}s, max {max(durations):.2f}s"
    )
    # Ready by the first GetLease, so no 5 s poll sleep ever; generous bound for a loaded 2-core machine.
    assert statistics.median(durations) < 3.0


# ---- authentication ------------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_wrong_or_missing_token_is_rejected() -> None:
    with anyio.fail_after(20):
        async with FakeCluster() as cluster:
            client = cluster.new_client("alice")
            exporter = cluster.new_exporter("exporter-1", LABELS)
            request = client_pb2.ListExportersRequest(parent="namespaces/default")
            async with raw_channel(cluster.controller_endpoint, cluster.ca_pem) as channel:
                stub = client_pb2_grpc.ClientServiceStub(channel)
                response = await stub.ListExporters(request, metadata=bearer(client.token))
                assert [e.name for e in response.exporters] == ["namespaces/default/exporters/exporter-1"]
                for metadata, code in [
                    (bearer("not-a-token"), grpc.StatusCode.UNAUTHENTICATED),
                    ((), grpc.StatusCode.UNAUTHENTICATED),
                    (bearer(exporter.token), grpc.StatusCode.PERMISSION_DENIED),  # right token, wrong kind
                ]:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.ListExporters(request, metadata=metadata)
                    assert err.value.code() == code

            # The real exporter with a wrong token fails to register (it does not retry that).
            with pytest.raises(BaseExceptionGroup) as group:
                async with run_exporter(exporter.endpoint, "wrong", exporter.ca_pem, exporter.name):
                    pytest.fail("the exporter should not have started")
            rpc_errors = group.value.subgroup(grpc.aio.AioRpcError)
            assert rpc_errors is not None
            assert rpc_errors.exceptions[0].code() == grpc.StatusCode.UNAUTHENTICATED
            assert not cluster.exporter("exporter-1").registered


# ---- the router alone ----------------------------------------------------------------------------------


def frame(payload: bytes) -> router_pb2.StreamRequest:
    return router_pb2.StreamRequest(payload=payload, frame_type=router_pb2.FRAME_TYPE_DATA)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("late", [0, 1])
async def test_router_pairs_callers_in_either_order(late: int) -> None:
    with anyio.fail_after(20):
        async with FakeCluster() as cluster:
            token = cluster.new_router_token()
            async with (
                raw_channel(cluster.router_endpoint, cluster.ca_pem) as ch0,
                raw_channel(cluster.router_endpoint, cluster.ca_pem) as ch1,
            ):
                channels = [ch0, ch1]
                first = router_pb2_grpc.RouterServiceStub(channels[1 - late]).Stream(metadata=bearer(token))
                # The early caller talks before its peer exists: the router holds its frames.
                await first.write(frame(b"early-1"))
                await first.write(frame(b"early-2"))
                await anyio.sleep(0.2)
                second = router_pb2_grpc.RouterServiceStub(channels[late]).Stream(metadata=bearer(token))
                await second.write(frame(b"late-1"))
                assert (await second.read()).payload == b"early-1"
                assert (await second.read()).payload == b"early-2"
                assert (await first.read()).payload == b"late-1"
                # Half-close one way; the other way still flows. A gRPC server can only end a response stream
                # by ending the call, so each side sees EOF once both have half-closed (the real peers send
                # a GOAWAY frame before half-closing, which is their end-of-stream).
                await first.done_writing()
                await second.write(frame(b"after-half-close"))
                assert (await first.read()).payload == b"after-half-close"
                await second.done_writing()
                assert await first.read() == grpc.aio.EOF
                assert await second.read() == grpc.aio.EOF
                assert await first.code() == grpc.StatusCode.OK
                assert await second.code() == grpc.StatusCode.OK

                # A token pairs exactly two callers; a third (or an unknown token) is refused.
                third = router_pb2_grpc.RouterServiceStub(ch0).Stream(metadata=bearer(token))
                assert await third.code() == grpc.StatusCode.UNAUTHENTICATED
            assert [(s.arrival, s.frames_in, s.frames_out) for s in cluster.router_streams] == [(0, 2, 2), (1, 2, 2)]


@pytest.mark.timeout(30)
async def test_router_ends_the_peer_when_a_caller_goes_away() -> None:
    with anyio.fail_after(20):
        async with FakeCluster(router_linger=0.2) as cluster:
            token = cluster.new_router_token()
            async with raw_channel(cluster.router_endpoint, cluster.ca_pem) as channel:
                stub = router_pb2_grpc.RouterServiceStub(channel)
                a, b = stub.Stream(metadata=bearer(token)), stub.Stream(metadata=bearer(token))
                await a.write(frame(b"ping"))
                assert (await b.read()).payload == b"ping"
                a.cancel()
                assert await b.read() == grpc.aio.EOF
                assert await b.code() == grpc.StatusCode.OK
            codes = sorted(str(s.code) for s in cluster.router_streams)
            assert codes == sorted([str(grpc.StatusCode.OK), str(grpc.StatusCode.CANCELLED)])


@pytest.mark.timeout(30)
async def test_router_gives_up_on_a_lonely_caller() -> None:
    with anyio.fail_after(20):
        async with FakeCluster(router_pair_timeout=0.3) as cluster:
            token = cluster.new_router_token()
            async with raw_channel(cluster.router_endpoint, cluster.ca_pem) as channel:
                call = router_pb2_grpc.RouterServiceStub(channel).Stream(metadata=bearer(token))
                await call.write(frame(b"anyone?"))
                assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED


# ---- leases without the real peers ---------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_lease_conditions_and_dial_before_ready() -> None:
    with anyio.fail_after(20):
        async with FakeCluster(dial_ready_timeout=0) as cluster:
            client = cluster.new_client("alice")
            cluster.new_exporter("exporter-1", LABELS)  # defined but never started
            async with raw_channel(cluster.controller_endpoint, cluster.ca_pem) as channel:
                svc = client_pb2_grpc.ClientServiceStub(channel)
                md = bearer(client.token)

                async def create(selector: str) -> client_pb2.Lease:
                    lease = client_pb2.Lease(selector=selector)
                    lease.duration.FromSeconds(60)
                    request = client_pb2.CreateLeaseRequest(parent="namespaces/default", lease=lease)
                    return await svc.CreateLease(request, metadata=md)

                def conditions(lease: client_pb2.Lease) -> list[tuple[str, str, str]]:
                    return [(c.type, c.status, c.reason) for c in lease.conditions]

                pending = await create(SELECTOR)
                assert ("Pending", "True", "Pending") in conditions(pending)
                assert not pending.exporter
                unsatisfiable = await create("example.com/board=nope")
                assert ("Unsatisfiable", "True", "NoMatch") in conditions(unsatisfiable)

                lease_name = pending.name.rsplit("/", 1)[1]
                controller = jumpstarter_pb2_grpc.ControllerServiceStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await controller.Dial(jumpstarter_pb2.DialRequest(lease_name=lease_name), metadata=md)
                assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert "not ready" in (err.value.details() or "")

                await svc.DeleteLease(client_pb2.DeleteLeaseRequest(name=pending.name), metadata=md)
                released = await svc.GetLease(client_pb2.GetLeaseRequest(name=pending.name), metadata=md)
                assert conditions(released) == [("Ready", "False", "Released")]
                assert released.HasField("effective_end_time")
                active = await svc.ListLeases(client_pb2.ListLeasesRequest(parent="namespaces/default"), metadata=md)
                assert [lease.name for lease in active.leases] == [unsatisfiable.name]


# ---- TLS helpers ---------------------------------------------------------------------------------------


def test_issued_certificate_has_ip_and_dns_sans() -> None:
    ca = CertificateAuthority.generate()
    cert = ca.issue(["proxy.example", "10.1.2.3"])
    leaf = x509.load_pem_x509_certificate(cert.cert_pem)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"proxy.example", "localhost"}
    assert {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)} == {"10.1.2.3", "127.0.0.1"}
    assert cert.ca_pem == ca.cert_pem
    assert leaf.issuer == x509.load_pem_x509_certificate(ca.cert_pem).subject


def test_load_server_certificate(tmp_path: Path) -> None:
    cert = CertificateAuthority.generate().issue(["localhost"])
    (tmp_path / "cert.pem").write_bytes(cert.cert_pem + cert.ca_pem)
    (tmp_path / "key.pem").write_bytes(cert.key_pem)
    loaded = load_server_certificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert loaded.key_pem == cert.key_pem
    assert len(x509.load_pem_x509_certificates(loaded.ca_pem)) == 2
