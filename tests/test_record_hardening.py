"""The recorder under attack: routes to itself, undecodable Dial responses, symlinked outputs, plaintext on the
network, doubled authorization headers (issue 10)."""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import click
import grpc
import pytest
from click.testing import CliRunner
from jumpstarter_protocol.jumpstarter.v1 import jumpstarter_pb2
from upstream_fake import DIAL, ROUTER, UNARY, FakeUpstream, fake_upstream

import jsreplay
from jsreplay.cassette.format import CassetteWriter, read_cassette
from jsreplay.cassette.migrations import FORMAT_VERSION
from jsreplay.cassette.model import CallStart, Header, Redaction, Role, ServerMessage
from jsreplay.cassette.redaction import Redactor
from jsreplay.cli.main import cli
from jsreplay.cli.options import listen_tls_options
from jsreplay.grpc_options import CHANNEL_OPTIONS
from jsreplay.protocol.registry import Registry
from jsreplay.record import RecordingProxy
from jsreplay.serving import ListenTLS, OwnAddresses

pytestmark = pytest.mark.anyio
WAIT_S = 10
DIAL_REQUEST = jumpstarter_pb2.DialRequest(lease_name="l").SerializeToString()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with fake_upstream() as state:
        yield state


def secure_channel(proxy: RecordingProxy) -> grpc.aio.Channel:
    assert proxy.ca_pem is not None
    credentials = grpc.ssl_channel_credentials(root_certificates=proxy.ca_pem)
    return grpc.aio.secure_channel(proxy.endpoint, credentials, options=CHANNEL_OPTIONS)


def local_non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("203.0.113.1", 9))  # no packet is sent; this only picks the outgoing interface
        except OSError:
            return None
        ip: str = s.getsockname()[0]
    return None if ip.startswith("127.") else ip


def _field(number: int, value: bytes) -> bytes:
    assert len(value) < 128
    return bytes([number << 3 | 2, len(value)]) + value


def _assert_nowhere(token: str, raw: bytes) -> None:
    for form in (token.encode(), base64.b64encode(token.encode()), token.encode().hex().encode()):
        assert form not in raw
    for shift in range(3):  # the token inside any base64 of a larger blob
        encoded = base64.b64encode(b"\x00" * shift + token.encode())
        assert encoded[4:-4] not in raw


# ------------------------------------------------------------------------------------- 7: routing to itself


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "0.0.0.0:0"])
@pytest.mark.parametrize("alias", ["advertised", "127.0.0.1", "localhost", "[::1]", "0.0.0.0", "local-ip"])
async def test_a_router_endpoint_naming_the_proxy_itself_is_refused(
    upstream: FakeUpstream, tmp_path: Path, listen: str, alias: str
) -> None:
    local_ip = local_non_loopback_ip()
    if alias == "local-ip" and (local_ip is None or not listen.startswith("0.0.0.0")):
        pytest.skip("needs a wildcard listen and a non-loopback local address")
    cassette = tmp_path / "c.msgpack"
    advertise = "127.0.0.1:0" if listen.startswith("0.0.0.0") else None
    async with jsreplay.recording(
        upstream=upstream.endpoint, cassette=cassette, upstream_ca=upstream.ca_pem, listen=listen, advertise=advertise
    ) as proxy:
        port = proxy.endpoint.rpartition(":")[2]
        host = {"advertised": proxy.endpoint.rpartition(":")[0], "local-ip": local_ip}.get(alias, alias)
        upstream.router_endpoint = f"{host}:{port}"
        async with secure_channel(proxy) as channel:
            with anyio.fail_after(WAIT_S), pytest.raises(grpc.aio.AioRpcError) as raised:
                raw = await channel.unary_unary(DIAL)(DIAL_REQUEST, timeout=5)
                # Before the fix: the Dial passes, and a Stream with its token would relay to the proxy itself.
                token = jumpstarter_pb2.DialResponse.FromString(raw).router_token
                await channel.stream_stream(ROUTER)(metadata=(("authorization", f"Bearer {token}"),), timeout=3).read()
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "itself" in (raised.value.details() or "")
    assert upstream.seen_methods == [DIAL]  # nothing nested reached the upstream or its router
    [dial] = read_cassette(cassette).calls()  # one call: no nested streams were recorded
    assert dial.method == DIAL and dial.status is not None
    assert dial.status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert upstream.router_endpoint in dial.status.details and "itself" in dial.status.details


async def test_an_upstream_that_is_the_proxy_itself_is_refused(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cassette = tmp_path / "c.msgpack"
    async with jsreplay.recording(
        upstream=f"localhost:{port}", cassette=cassette, listen=f"127.0.0.1:{port}", upstream_insecure=True
    ) as proxy:
        async with secure_channel(proxy) as channel:
            with anyio.fail_after(WAIT_S), pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(UNARY)(b"x", timeout=3)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(read_cassette(cassette).calls()) == 1


# ----------------------------------------------------------------------------- 8: undecodable Dial responses


async def test_an_undecodable_dial_response_is_neither_forwarded_nor_stored_in_clear(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    token = "tok" + secrets.token_hex(16)
    # router_endpoint with invalid UTF-8: a proto3 string field that does not decode.
    upstream.dial_response = _field(1, b"router\xff\xfe.example:443") + _field(2, token.encode())
    cassette = tmp_path / "c.msgpack"
    async with jsreplay.recording(upstream=upstream.endpoint, cassette=cassette, upstream_ca=upstream.ca_pem) as proxy:
        async with secure_channel(proxy) as channel:
            with anyio.fail_after(WAIT_S), pytest.raises(grpc.aio.AioRpcError) as raised:
                await channel.unary_unary(DIAL)(DIAL_REQUEST, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INTERNAL
    assert "decode" in (raised.value.details() or "")
    assert token not in (raised.value.details() or "")
    _assert_nowhere(token, cassette.read_bytes())
    [dial] = read_cassette(cassette).calls()
    assert dial.status is not None and dial.status.code == grpc.StatusCode.INTERNAL.value[0]
    assert "not forwarded" in dial.status.details


# --------------------------------------------------------------- 8w: the writer's redaction of undecodable messages


def test_the_writer_never_stores_an_undecodable_secret_bearing_message(tmp_path: Path) -> None:
    token = "tok" + secrets.token_hex(16)
    data = _field(1, b"\xff") + _field(2, token.encode())
    registry = Registry.default()
    header = Header(
        format_version=FORMAT_VERSION,
        jsreplay_version="test",
        created_unix_ns=0,
        upstreams=("u:1",),
        descriptor_set=b"",
        redaction=Redaction(enabled=True),
    )
    path = tmp_path / "c.msgpack"
    with CassetteWriter(path, header, redactor=Redactor(registry=registry)) as writer:
        writer.write(
            CallStart(
                call_id=1,
                seq=0,
                t_ns=0,
                method=DIAL,
                role=Role.CONTROLLER,
                metadata=(),
                peer="",
                target="",
                timeout_ns=None,
            )
        )
        writer.write(ServerMessage(call_id=1, seq=1, t_ns=1, data=data, forwarded=data))
    _assert_nowhere(token, path.read_bytes())
    [call] = read_cassette(path).calls()
    [stored] = call.responses
    assert stored.startswith(b"redacted:") and b"undecodable" in stored


# ------------------------------------------------------------------------------------ 10a: symlinked outputs


@pytest.mark.parametrize("dangling", [False, True])
def test_overwrite_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path, dangling: bool) -> None:
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"precious")
    link = tmp_path / "c.msgpack"
    link.symlink_to(victim)
    header = Header(
        format_version=FORMAT_VERSION,
        jsreplay_version="test",
        created_unix_ns=0,
        upstreams=("u:1",),
        descriptor_set=b"",
        redaction=Redaction(enabled=False),
    )
    with CassetteWriter(link, header, redactor=None, overwrite=True):
        pass
    assert victim.read_bytes() == b"precious" if not dangling else not victim.exists()
    assert not link.is_symlink() and stat.S_IMODE(link.stat().st_mode) == 0o600
    assert read_cassette(link).header.jsreplay_version == "test"


@pytest.mark.parametrize("dangling", [False, True])
async def test_ca_out_replaces_a_symlink_instead_of_writing_through_it(
    upstream: FakeUpstream, tmp_path: Path, dangling: bool
) -> None:
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_bytes(b"precious")
    link = tmp_path / "ca.pem"
    link.symlink_to(victim)
    async with jsreplay.recording(
        upstream=upstream.endpoint, cassette=tmp_path / "c.msgpack", tls=ListenTLS(ca_out=link)
    ) as proxy:
        assert proxy.ca_pem is not None
        assert victim.read_bytes() == b"precious" if not dangling else not victim.exists()
        assert not link.is_symlink() and link.read_bytes() == proxy.ca_pem


# ----------------------------------------------------------------------------- 10b: plaintext on the network


@pytest.mark.parametrize(
    ("listen", "warned"),
    [
        ("127.0.0.1:0", False),
        ("localhost:7000", False),
        ("[::1]:0", False),
        ("0.0.0.0:0", True),
        ("[::]:0", True),
        ("192.0.2.7:443", True),
        ("box.example:443", True),
    ],
)
def test_plaintext_off_loopback_warns(listen: str, warned: bool, capsys: pytest.CaptureFixture[str]) -> None:
    listen_tls_options(None, None, None, True, listen=listen)
    err = capsys.readouterr().err
    assert (err.startswith("jsreplay: warning: ") and "--plaintext" in err and err.count("\n") == 1) is warned
    listen_tls_options(None, None, None, False, listen=listen)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", ["record", "replay", "verify"])
def test_each_command_warns_of_plaintext_off_loopback(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stop_here(*args: object, **kwargs: object) -> None:
        raise click.ClickException("stopped by the test")

    monkeypatch.setattr("jsreplay.cli.record.run_until_stopped", stop_here)
    missing = str(tmp_path / "none.msgpack")
    args = {
        "record": ["record", "--upstream", "127.0.0.1:1", "--cassette", missing],
        "replay": ["replay", missing],
        "verify": ["verify", missing],
    }[command]
    result = CliRunner().invoke(cli, [*args, "--plaintext", "--listen", "0.0.0.0:0", "--advertise", "127.0.0.1:0"])
    assert result.exit_code != 0
    assert "jsreplay: warning: --plaintext" in result.stderr


# ------------------------------------------------------------------------- 10c: doubled authorization headers


async def test_two_authorization_headers_are_refused_and_never_forwarded(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    cassette = tmp_path / "c.msgpack"
    async with jsreplay.recording(upstream=upstream.endpoint, cassette=cassette, upstream_ca=upstream.ca_pem) as proxy:
        async with secure_channel(proxy) as channel:
            with anyio.fail_after(WAIT_S):
                raw = await channel.unary_unary(DIAL)(DIAL_REQUEST)
                token = jumpstarter_pb2.DialResponse.FromString(raw).router_token
                doubled = (("authorization", f"Bearer {token}"), ("authorization", "Bearer someone-else"))
                with pytest.raises(grpc.aio.AioRpcError) as on_stream:
                    await channel.stream_stream(ROUTER)(metadata=doubled, timeout=3).read()
                with pytest.raises(grpc.aio.AioRpcError) as on_unary:
                    await channel.unary_unary(UNARY)(b"x", metadata=doubled)
    for raised in (on_stream, on_unary):
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization" in (raised.value.details() or "")
    assert upstream.seen_methods == [DIAL]  # neither refused call was forwarded
    _, stream, unary = read_cassette(cassette).calls()
    for call in (stream, unary):
        assert call.status is not None and call.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
        assert call.start.target == "" and call.requests == []


# ------------------------------------------------------------------------- 7: what counts as the proxy itself


async def test_own_addresses_cover_aliases_target_syntaxes_and_wildcards() -> None:
    loopback = OwnAddresses("127.0.0.1:7001")
    for target in (
        "127.0.0.1:7001",
        "localhost:7001",
        "LOCALHOST.:7001",
        "[::1]:7001",
        "127.0.0.2:7001",
        "0.0.0.0:7001",
        "[::ffff:127.0.0.1]:7001",
        "dns:///localhost:7001",
        "dns://8.8.8.8/localhost:7001",
        "ipv4:192.0.2.200:1,127.0.0.1:7001",
        "ipv6:[::1]:7001",
        f"{socket.gethostname()}:7001" if is_loopback_name(socket.gethostname()) else "localhost:7001",
    ):
        assert await loopback.includes(target), target
    for target in ("127.0.0.1:7002", "198.51.100.9:7001", "unix:/tmp/sock", "not an endpoint"):
        assert not await loopback.includes(target), target
    wildcard = OwnAddresses("0.0.0.0:7001", "proxy.example:443")
    assert await wildcard.includes("127.0.0.1:7001") and await wildcard.includes("proxy.example:443")
    assert not await wildcard.includes("198.51.100.9:7001") and not await wildcard.includes("localhost:443")
    local_ip = local_non_loopback_ip()
    if local_ip is not None:
        assert await wildcard.includes(f"{local_ip}:7001") and not await loopback.includes(f"{local_ip}:7001")


def is_loopback_name(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(i[4][0]).is_loopback for i in socket.getaddrinfo(host, None))
    except OSError:
        return False
