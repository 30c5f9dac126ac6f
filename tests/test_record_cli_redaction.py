"""`jsreplay record` as a command: --redact-metadata keeps a key's value off the disk, and a secret in a field the
schema does not know (a development-line field recorded with --schema v0.9.0) is warned about at the end."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from jsreplay.cassette.format import read_cassette
from jsreplay.cassette.model import metadata_get
from jsreplay.protocol.registry import Registry
from jsreplay.protocol.schemas import shipped
from tests.test_record_telemetry import Served, tls_server

pytestmark = [pytest.mark.anyio]
GET_LEASE = "/jumpstarter.client.v1.ClientService/GetLease"
HEAD = Registry(shipped("head"))
SECRET_CONTEXT = "ctx-s3cret-value"
SECRET_HEADER = "hdr-hunter2-value"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class LeaseServer(grpc.GenericRpcHandler):
    """Answers GetLease with a development-line Lease whose `context` (field 15, unknown to 0.9.0) holds a secret."""

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        if details.method != GET_LEASE:
            return None

        async def get_lease(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return HEAD.encode(
                "jumpstarter.client.v1.Lease",
                {"name": "namespaces/default/leases/l1", "selector": "a=b", "context": {"api_key": SECRET_CONTEXT}},
            )

        return grpc.unary_unary_rpc_method_handler(get_lease)


@pytest.mark.timeout(90)
async def test_record_command_redacts_metadata_and_warns_about_unknown_fields(tmp_path: Path) -> None:
    cassette = tmp_path / "run.msgpack"
    state = Served()
    async with tls_server(LeaseServer(), state) as upstream:
        ca_file = tmp_path / "upstream-ca.pem"
        ca_file.write_bytes(upstream.ca_pem)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(
            [sys.executable, "-m", "jsreplay", "record", "--upstream", upstream.endpoint, "--upstream-ca",
             str(ca_file), "--cassette", str(cassette), "--ca-out", str(tmp_path / "proxy-ca.pem"),
             "--schema", "v0.9.0", "--redact-metadata", "x-site-secret"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            banner = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 30)
            match = re.search(r"listening on (\S+) ", banner)
            assert match, banner
            credentials = grpc.ssl_channel_credentials((tmp_path / "proxy-ca.pem").read_bytes())
            async with grpc.aio.secure_channel(match.group(1), credentials) as channel:
                await channel.unary_unary(GET_LEASE)(
                    b"", metadata=(("x-site-secret", SECRET_HEADER), ("x-other", "plain")), timeout=10
                )
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = await asyncio.to_thread(process.communicate, timeout=30)
    assert process.returncode == 0, stderr
    # The warning names the message and the field (by number: the schema does not know its name).
    assert "fields the schema does not know" in stderr, stderr
    assert "jumpstarter.client.v1.Lease: #15" in stderr, stderr

    on_disk = cassette.read_bytes()
    assert SECRET_HEADER.encode() not in on_disk
    [call] = [c for c in read_cassette(cassette).calls() if c.method == GET_LEASE]
    assert str(metadata_get(call.start.metadata, "x-site-secret")).startswith("redacted:")
    assert metadata_get(call.start.metadata, "x-other") == "plain"
    # Stored as it came (redaction by name cannot see it): hence the warning.
    assert SECRET_CONTEXT.encode() in on_disk
