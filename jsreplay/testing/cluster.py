"""A fake Jumpstarter cluster: controller + client service on one TLS port, router on another.

It keeps real lease bookkeeping, so the real 0.9.0 client and exporter run against it unchanged:

- exporters Register, open Status (the cluster pushes leased / not leased), open Listen for their lease
  (one message per Dial), ReportStatus, Unregister;
- clients CreateLease (selector matched against exporter labels), poll GetLease (conditions in the shape
  the real client reads: Ready, Pending, Unsatisfiable), Dial (FAILED_PRECONDITION "exporter not ready"
  until the exporter reported LEASE_READY), DeleteLease; GetExporter, ListExporters, ListLeases answer
  from the same state;
- every call is authenticated with the per-client or per-exporter bearer token the cluster issued;
- the router pipes the two callers that present the same router token (random per Dial) into each other,
  frame by frame, whichever arrives first. A server cannot half-close a response stream, so each side's
  call ends once both sides half-closed; when one side's call goes away, the other is ended too (after a
  bounded linger if the gone side had sent GOAWAY, since its peer then ends by itself).

A lease is assigned the moment it is created if a matching exporter is available, so the client's first
GetLease already sees Ready=True and never sleeps in its 5 s poll loop; Dial waits (bounded) for the
exporter's LEASE_READY instead of bouncing the client into its retry back-off. Both keep a scenario fast.

Everything runs on the asyncio loop that entered the cluster; state is only touched from that loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

import grpc
from google.protobuf import duration_pb2, empty_pb2, timestamp_pb2
from google.protobuf.message import Message
from jumpstarter_protocol import client_pb2, jumpstarter_pb2, kubernetes_pb2, router_pb2
from jumpstarter_protocol.jumpstarter.v1 import common_pb2

from jsreplay.grpc_options import SERVER_OPTIONS
from jsreplay.tls import CertificateAuthority, ServerCertificate, server_credentials

__all__ = [
    "CallError",
    "CallRecord",
    "ClientCredentials",
    "ExporterCredentials",
    "ExporterState",
    "FakeCluster",
    "LeaseState",
    "RouterStreamRecord",
]

CONTROLLER_SERVICE: Final = "jumpstarter.v1.ControllerService"
CLIENT_SERVICE: Final = "jumpstarter.client.v1.ClientService"
ROUTER_SERVICE: Final = "jumpstarter.v1.RouterService"
ROUTER_STREAM: Final = f"/{ROUTER_SERVICE}/Stream"

_EXPORTER: Final = "Exporter"
_CLIENT: Final = "Client"

#: `before_call(method, request)` runs after authentication and before the cluster acts; raise CallError
#: to fail the call. `alter_response(method, request, response)` sees every response message (each one of a
#: stream) and returns the message to send. `method` is the full gRPC path, e.g.
#: "/jumpstarter.v1.ControllerService/Dial".
BeforeCall = Callable[[str, Message], None]
AlterResponse = Callable[[str, Message, Message], Message]


class CallError(Exception):
    """Raised by the cluster's handlers (or a test's hook) to end a call with a gRPC status."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class ClientCredentials:
    namespace: str
    name: str
    token: str
    endpoint: str  # the controller endpoint of the cluster that issued them
    ca_pem: bytes  # what to trust for that endpoint

    @property
    def object_name(self) -> str:
        return f"namespaces/{self.namespace}/clients/{self.name}"


@dataclass(frozen=True)
class ExporterCredentials:
    namespace: str
    name: str
    token: str
    endpoint: str
    ca_pem: bytes
    labels: Mapping[str, str]

    @property
    def object_name(self) -> str:
        return f"namespaces/{self.namespace}/exporters/{self.name}"


@dataclass
class CallRecord:
    """One call the cluster answered (or refused). Streams append every message they send."""

    method: str
    caller: str  # "Client:ns/name", "Exporter:ns/name" or "" when unauthenticated
    request: Message | None
    responses: list[Message] = field(default_factory=list)
    code: grpc.StatusCode | None = None  # None while the call is still open
    details: str = ""


@dataclass
class RouterStreamRecord:
    lease_name: str
    arrival: int  # 0 for the first caller with this token, 1 for its peer
    frames_in: int = 0  # frames this caller sent (forwarded to its peer)
    frames_out: int = 0  # frames written to this caller
    bytes_in: int = 0
    sent_goaway: bool = False  # this caller sent a GOAWAY frame (its end of the tunnel)
    code: grpc.StatusCode | None = None
    details: str = ""


@dataclass
class ExporterState:
    """What the cluster knows about one exporter. Read it in tests; don't modify it."""

    namespace: str
    name: str
    token: str
    labels: dict[str, str]
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    registered: bool = False
    register_count: int = 0
    registered_labels: dict[str, str] = field(default_factory=dict)
    reports: list[jumpstarter_pb2.DriverInstanceReport] = field(default_factory=list)
    unregistered: bool = False
    unregister_reason: str = ""
    status: int = common_pb2.EXPORTER_STATUS_UNSPECIFIED
    status_message: str = ""
    status_history: list[int] = field(default_factory=list)
    lease: LeaseState | None = None
    ready_lease: str | None = None  # the lease for which the exporter reported LEASE_READY
    lease_history: list[str] = field(default_factory=list)
    status_streams: set[asyncio.Queue[jumpstarter_pb2.StatusResponse]] = field(default_factory=set)

    @property
    def online(self) -> bool:
        return self.registered and bool(self.status_streams)

    @property
    def effective_labels(self) -> dict[str, str]:
        return {**self.labels, **self.registered_labels}

    @property
    def available(self) -> bool:
        """Ready for a new lease: online, not leased, and it said AVAILABLE (as the real controller requires)."""
        return self.online and self.lease is None and self.status == common_pb2.EXPORTER_STATUS_AVAILABLE

    @property
    def object_name(self) -> str:
        return f"namespaces/{self.namespace}/exporters/{self.name}"


@dataclass
class LeaseState:
    """What the cluster knows about one lease. Read it in tests; don't modify it."""

    name: str
    namespace: str
    client: str  # client name (same namespace)
    selector: str
    duration: float  # seconds
    requested_exporter: str
    tags: dict[str, str]
    created: float
    exporter: ExporterState | None = None
    begin: float | None = None
    end: float | None = None
    end_reason: str = ""
    dials: int = 0
    listen: asyncio.Queue[jumpstarter_pb2.ListenResponse] = field(default_factory=asyncio.Queue)
    expiry: asyncio.TimerHandle | None = None

    @property
    def ended(self) -> bool:
        return self.end is not None

    @property
    def object_name(self) -> str:
        return f"namespaces/{self.namespace}/leases/{self.name}"


class FakeCluster:
    """Controller, client service and router of a fake Jumpstarter cluster (an async context manager).

    `dial_ready_timeout`: how long Dial waits for the exporter's LEASE_READY before answering
    FAILED_PRECONDITION "exporter not ready" (0 answers at once, like a strict controller).
    `router_pair_timeout`: how long the router holds a caller whose peer has not arrived.
    `router_linger`: when a caller's call ends after it sent GOAWAY, how long its peer may still take to
    half-close before the router ends the peer's call too (a caller that vanishes without GOAWAY ends its
    peer at once).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        dial_ready_timeout: float = 5.0,
        router_pair_timeout: float = 20.0,
        router_linger: float = 10.0,
        router_queue_depth: int = 64,
        before_call: BeforeCall | None = None,
        alter_response: AlterResponse | None = None,
    ) -> None:
        self.host = host
        self.dial_ready_timeout = dial_ready_timeout
        self.router_pair_timeout = router_pair_timeout
        self.router_linger = router_linger
        self.router_queue_depth = router_queue_depth
        self.before_call = before_call
        self.alter_response = alter_response

        self.ca = CertificateAuthority.generate("jsreplay fake cluster CA")
        self.certificate: ServerCertificate = self.ca.issue([host])
        self.controller_endpoint = ""
        self.router_endpoint = ""

        self.calls: list[CallRecord] = []
        self.router_streams: list[RouterStreamRecord] = []
        self.exporters: dict[str, ExporterState] = {}  # "ns/name" -> state
        self.leases: dict[str, LeaseState] = {}  # lease name -> state
        self.clients: dict[str, ClientCredentials] = {}  # "ns/name" -> credentials

        self._identities: dict[str, tuple[str, str, str]] = {}  # token -> (kind, namespace, name)
        self._rendezvous: dict[str, _Rendezvous] = {}
        self._changed = asyncio.Event()
        self._controller: grpc.aio.Server | None = None
        self._router: grpc.aio.Server | None = None

    # ---- lifecycle ---------------------------------------------------------------------------------

    @property
    def ca_pem(self) -> bytes:
        return self.ca.cert_pem

    async def __aenter__(self) -> Self:
        self._changed = asyncio.Event()  # bind to the running loop
        creds = server_credentials(self.certificate)
        self._controller = grpc.aio.server(options=SERVER_OPTIONS)
        self._controller.add_generic_rpc_handlers([self._controller_handlers(), self._client_handlers()])
        port = self._controller.add_secure_port(f"{self.host}:0", creds)
        self.controller_endpoint = f"{self.host}:{port}"
        self._router = grpc.aio.server(options=SERVER_OPTIONS)
        self._router.add_generic_rpc_handlers([self._router_handlers()])
        port = self._router.add_secure_port(f"{self.host}:0", creds)
        self.router_endpoint = f"{self.host}:{port}"
        await self._controller.start()
        await self._router.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for lease in self.leases.values():
            if lease.expiry is not None:
                lease.expiry.cancel()
        # Open streams (an exporter still running, a tunnel) are cancelled after a short grace.
        servers = [s for s in (self._router, self._controller) if s is not None]
        await asyncio.gather(*(s.stop(grace=0.5) for s in servers))
        self._router = self._controller = None

    # ---- credentials -------------------------------------------------------------------------------

    def new_exporter(
        self, name: str, labels: Mapping[str, str] | None = None, namespace: str = "default"
    ) -> ExporterCredentials:
        """Define an exporter (labels live on the cluster side, as on a real one) and return its credentials."""
        key = f"{namespace}/{name}"
        if key in self.exporters:
            raise ValueError(f"exporter {key} already exists")
        token = _new_token()
        self.exporters[key] = ExporterState(namespace=namespace, name=name, token=token, labels=dict(labels or {}))
        self._identities[token] = (_EXPORTER, namespace, name)
        return ExporterCredentials(
            namespace=namespace,
            name=name,
            token=token,
            endpoint=self.controller_endpoint,
            ca_pem=self.ca_pem,
            labels=dict(labels or {}),
        )

    def new_client(self, name: str, namespace: str = "default") -> ClientCredentials:
        key = f"{namespace}/{name}"
        if key in self.clients:
            raise ValueError(f"client {key} already exists")
        token = _new_token()
        creds = ClientCredentials(
            namespace=namespace, name=name, token=token, endpoint=self.controller_endpoint, ca_pem=self.ca_pem
        )
        self.clients[key] = creds
        self._identities[token] = (_CLIENT, namespace, name)
        return creds

    def new_router_token(self, lease_name: str = "") -> str:
        """A token the router will pair on (what Dial hands out); for tests of the router alone."""
        now = time.monotonic()
        # Forget tokens nobody ever presented, so a long test does not accumulate them.
        stale = [t for t, r in self._rendezvous.items() if r.arrived == 0 and now - r.created > 10 * 60]
        for t in stale:
            del self._rendezvous[t]
        token = _new_token()
        self._rendezvous[token] = _Rendezvous(lease_name, self.router_queue_depth)
        return token

    # ---- inspection helpers for tests ---------------------------------------------------------------

    def exporter(self, name: str, namespace: str = "default") -> ExporterState:
        return self.exporters[f"{namespace}/{name}"]

    def call_counts(self) -> Counter[str]:
        """Calls per full method path; RouterService.Stream counts every caller."""
        counts = Counter(c.method for c in self.calls)
        counts[ROUTER_STREAM] += len(self.router_streams)
        return counts

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
        """Wait until `predicate()` holds; re-checked on every state change. TimeoutError names `what`."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"fake cluster: timed out after {timeout}s waiting for {what}") from None

    async def wait_exporter_available(self, name: str, namespace: str = "default", timeout: float = 10.0) -> None:
        state = self.exporter(name, namespace)
        await self.wait_for(lambda: state.available, timeout, f"exporter {namespace}/{name} to be available")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---- plumbing: authentication, hooks, recording ------------------------------------------------

    def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any], kind: str) -> tuple[str, str]:
        token = _bearer(context)
        identity = self._identities.get(token) if token else None
        if identity is None:
            raise CallError(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        if identity[0] != kind:
            raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"this method is for a {kind}, not a {identity[0]}")
        return identity[1], identity[2]

    def _unary(
        self,
        method: str,
        kind: str,
        impl: Callable[[Any, str, str], Awaitable[Message]],
        request_type: type[Message],
        response_type: type[Message],
    ) -> grpc.RpcMethodHandler[Any, Any]:
        async def handler(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            record = CallRecord(method=method, caller="", request=request)
            self.calls.append(record)
            try:
                namespace, name = self._authenticate(context, kind)
                record.caller = f"{kind}:{namespace}/{name}"
                if self.before_call is not None:
                    self.before_call(method, request)
                response = await impl(request, namespace, name)
                if self.alter_response is not None:
                    response = self.alter_response(method, request, response)
                record.responses.append(response)
                record.code = grpc.StatusCode.OK
                return response
            except CallError as e:
                record.code, record.details = e.code, e.details
                await context.abort(e.code, e.details)
                raise  # not reached: abort raises
            except asyncio.CancelledError:
                record.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as e:  # a bug in the cluster or a hook: grpc answers UNKNOWN
                record.code, record.details = grpc.StatusCode.UNKNOWN, repr(e)
                raise
            finally:
                self._notify()

        return grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
        )

    def _server_stream(
        self,
        method: str,
        kind: str,
        impl: Callable[[Any, str, str], AsyncIterator[Message]],
        request_type: type[Message],
        response_type: type[Message],
    ) -> grpc.RpcMethodHandler[Any, Any]:
        async def handler(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
            record = CallRecord(method=method, caller="", request=request)
            self.calls.append(record)
            try:
                namespace, name = self._authenticate(context, kind)
                record.caller = f"{kind}:{namespace}/{name}"
                if self.before_call is not None:
                    self.before_call(method, request)
                async for response in impl(request, namespace, name):
                    if self.alter_response is not None:
                        response = self.alter_response(method, request, response)
                    record.responses.append(response)
                    self._notify()
                    yield response
            except CallError as e:
                record.code, record.details = e.code, e.details
                self._notify()
                await context.abort(e.code, e.details)
            except asyncio.CancelledError:
                record.code = grpc.StatusCode.CANCELLED
                self._notify()
                raise
            except Exception as e:
                record.code, record.details = grpc.StatusCode.UNKNOWN, repr(e)
                self._notify()
                raise
            record.code = grpc.StatusCode.OK
            self._notify()

        return grpc.unary_stream_rpc_method_handler(
            handler, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
        )

    def _controller_handlers(self) -> grpc.GenericRpcHandler:
        pb = jumpstarter_pb2
        s = f"/{CONTROLLER_SERVICE}/"
        handlers = {
            "Register": self._unary(s + "Register", _EXPORTER, self._register, pb.RegisterRequest, pb.RegisterResponse),
            "Unregister": self._unary(
                s + "Unregister", _EXPORTER, self._unregister, pb.UnregisterRequest, pb.UnregisterResponse
            ),
            "ReportStatus": self._unary(
                s + "ReportStatus", _EXPORTER, self._report_status, pb.ReportStatusRequest, pb.ReportStatusResponse
            ),
            "ReleaseLease": self._unary(
                s + "ReleaseLease", _EXPORTER, self._release_lease, pb.ReleaseLeaseRequest, pb.ReleaseLeaseResponse
            ),
            "Status": self._server_stream(s + "Status", _EXPORTER, self._status, pb.StatusRequest, pb.StatusResponse),
            "Listen": self._server_stream(s + "Listen", _EXPORTER, self._listen, pb.ListenRequest, pb.ListenResponse),
            "Dial": self._unary(s + "Dial", _CLIENT, self._dial, pb.DialRequest, pb.DialResponse),
        }
        return grpc.method_handlers_generic_handler(CONTROLLER_SERVICE, handlers)

    def _client_handlers(self) -> grpc.GenericRpcHandler:
        pb = client_pb2
        s = f"/{CLIENT_SERVICE}/"
        handlers = {
            "GetExporter": self._unary(
                s + "GetExporter", _CLIENT, self._get_exporter, pb.GetExporterRequest, pb.Exporter
            ),
            "ListExporters": self._unary(
                s + "ListExporters", _CLIENT, self._list_exporters, pb.ListExportersRequest, pb.ListExportersResponse
            ),
            "GetLease": self._unary(s + "GetLease", _CLIENT, self._get_lease, pb.GetLeaseRequest, pb.Lease),
            "ListLeases": self._unary(
                s + "ListLeases", _CLIENT, self._list_leases, pb.ListLeasesRequest, pb.ListLeasesResponse
            ),
            "CreateLease": self._unary(s + "CreateLease", _CLIENT, self._create_lease, pb.CreateLeaseRequest, pb.Lease),
            "DeleteLease": self._unary(
                s + "DeleteLease", _CLIENT, self._delete_lease, pb.DeleteLeaseRequest, empty_pb2.Empty
            ),
        }
        return grpc.method_handlers_generic_handler(CLIENT_SERVICE, handlers)

    def _router_handlers(self) -> grpc.GenericRpcHandler:
        # Frames are forwarded as raw bytes: StreamRequest and StreamResponse share one wire layout.
        handler = grpc.stream_stream_rpc_method_handler(self._router_stream)
        return grpc.method_handlers_generic_handler(ROUTER_SERVICE, {"Stream": handler})

    # ---- ControllerService (exporter side) ---------------------------------------------------------

    async def _register(self, request: jumpstarter_pb2.RegisterRequest, ns: str, name: str) -> Message:
        exp = self.exporter(name, ns)
        exp.registered = True
        exp.unregistered = False
        exp.register_count += 1
        exp.registered_labels = dict(request.labels)
        exp.reports = list(request.reports)
        self._schedule()
        return jumpstarter_pb2.RegisterResponse(uuid=exp.uid)

    async def _unregister(self, request: jumpstarter_pb2.UnregisterRequest, ns: str, name: str) -> Message:
        exp = self.exporter(name, ns)
        exp.registered = False
        exp.unregistered = True
        exp.unregister_reason = request.reason
        if exp.lease is not None:
            self._release(exp.lease, "ExporterUnregistered")
        return jumpstarter_pb2.UnregisterResponse()

    async def _report_status(self, request: jumpstarter_pb2.ReportStatusRequest, ns: str, name: str) -> Message:
        exp = self.exporter(name, ns)
        exp.status = request.status
        exp.status_message = request.message
        exp.status_history.append(request.status)
        if exp.lease is not None:
            if request.status == common_pb2.EXPORTER_STATUS_LEASE_READY:
                exp.ready_lease = exp.lease.name
            if request.HasField("release_lease") and request.release_lease:
                self._release(exp.lease, "Released")
        self._schedule()
        return jumpstarter_pb2.ReportStatusResponse()

    async def _release_lease(self, request: jumpstarter_pb2.ReleaseLeaseRequest, ns: str, name: str) -> Message:
        exp = self.exporter(name, ns)
        lease = self.leases.get(request.name)
        if lease is None or lease.exporter is not exp:
            raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"lease {request.name} is not held by this exporter")
        if not lease.ended:
            self._release(lease, "Released")
        return jumpstarter_pb2.ReleaseLeaseResponse()

    async def _status(
        self, request: jumpstarter_pb2.StatusRequest, ns: str, name: str
    ) -> AsyncIterator[jumpstarter_pb2.StatusResponse]:
        exp = self.exporter(name, ns)
        queue: asyncio.Queue[jumpstarter_pb2.StatusResponse] = asyncio.Queue()
        queue.put_nowait(self._status_message(exp))  # the current state first, then every transition
        exp.status_streams.add(queue)
        self._schedule()
        self._notify()
        try:
            while True:
                yield await queue.get()
        finally:
            exp.status_streams.discard(queue)
            self._notify()

    async def _listen(
        self, request: jumpstarter_pb2.ListenRequest, ns: str, name: str
    ) -> AsyncIterator[jumpstarter_pb2.ListenResponse]:
        exp = self.exporter(name, ns)
        lease = self.leases.get(request.lease_name)
        if lease is None or lease.name not in exp.lease_history:
            raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"lease {request.lease_name} is not assigned to you")
        # Stays open after the lease ends: the exporter cancels it itself, and ending it would make the real
        # exporter re-open it in a loop.
        while True:
            yield await lease.listen.get()

    async def _dial(self, request: jumpstarter_pb2.DialRequest, ns: str, name: str) -> Message:
        lease = self._client_lease(request.lease_name, ns, name)

        def ready() -> bool:
            return lease.ended or (lease.exporter is not None and lease.exporter.ready_lease == lease.name)

        with contextlib.suppress(TimeoutError):
            await self.wait_for(ready, self.dial_ready_timeout)
        if lease.ended:
            raise CallError(grpc.StatusCode.FAILED_PRECONDITION, f"lease {lease.name} has ended")
        if not ready():
            # The wording matters: the real client retries Dial only on FAILED_PRECONDITION + "not ready".
            raise CallError(grpc.StatusCode.FAILED_PRECONDITION, "exporter not ready")
        token = self.new_router_token(lease.name)
        lease.dials += 1
        endpoint = self.router_endpoint
        lease.listen.put_nowait(jumpstarter_pb2.ListenResponse(router_endpoint=endpoint, router_token=token))
        return jumpstarter_pb2.DialResponse(router_endpoint=endpoint, router_token=token)

    # ---- ClientService ------------------------------------------------------------------------------

    async def _create_lease(self, request: client_pb2.CreateLeaseRequest, ns: str, name: str) -> Message:
        _check_parent(request.parent, ns)
        spec = request.lease
        if not spec.HasField("duration") or spec.duration.ToTimedelta().total_seconds() <= 0:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, "lease duration is required")
        try:
            _parse_selector(spec.selector)
        except ValueError as e:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        lease_name = request.lease_id or str(uuid.uuid4())
        if lease_name in self.leases:
            raise CallError(grpc.StatusCode.ALREADY_EXISTS, f"lease {lease_name} already exists")
        lease = LeaseState(
            name=lease_name,
            namespace=ns,
            client=name,
            selector=spec.selector,
            duration=spec.duration.ToTimedelta().total_seconds(),
            requested_exporter=spec.exporter_name,
            tags=dict(spec.tags),
            created=time.time(),
        )
        self.leases[lease_name] = lease
        self._schedule()
        return self._lease_message(lease)

    async def _get_lease(self, request: client_pb2.GetLeaseRequest, ns: str, name: str) -> Message:
        return self._lease_message(self._client_lease(_parse_name(request.name, "leases", ns), ns, name))

    async def _delete_lease(self, request: client_pb2.DeleteLeaseRequest, ns: str, name: str) -> Message:
        lease = self._client_lease(_parse_name(request.name, "leases", ns), ns, name)
        if not lease.ended:
            self._release(lease, "Released")
        return empty_pb2.Empty()

    async def _list_leases(self, request: client_pb2.ListLeasesRequest, ns: str, name: str) -> Message:
        _check_parent(request.parent, ns)
        only_active = request.only_active if request.HasField("only_active") else True
        leases = [
            self._lease_message(lease)
            for lease in self.leases.values()
            if lease.namespace == ns and not (only_active and lease.ended)
        ]
        return client_pb2.ListLeasesResponse(leases=leases)

    async def _get_exporter(self, request: client_pb2.GetExporterRequest, ns: str, name: str) -> Message:
        key = f"{ns}/{_parse_name(request.name, 'exporters', ns)}"
        if key not in self.exporters:
            raise CallError(grpc.StatusCode.NOT_FOUND, f"exporter {request.name} not found")
        return self._exporter_message(self.exporters[key])

    async def _list_exporters(self, request: client_pb2.ListExportersRequest, ns: str, name: str) -> Message:
        _check_parent(request.parent, ns)
        try:
            selector = _parse_selector(request.filter)
        except ValueError as e:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, str(e)) from None
        exporters = [
            self._exporter_message(e)
            for e in self.exporters.values()
            if e.namespace == ns and _selector_matches(selector, e.effective_labels)
        ]
        return client_pb2.ListExportersResponse(exporters=exporters)

    # ---- lease bookkeeping --------------------------------------------------------------------------

    def _client_lease(self, lease_name: str, ns: str, client: str) -> LeaseState:
        lease = self.leases.get(lease_name)
        if lease is None or lease.namespace != ns:
            raise CallError(grpc.StatusCode.NOT_FOUND, f"lease {lease_name} not found")
        if lease.client != client:
            raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"permission denied: lease {lease_name} is not yours")
        return lease

    def _matches(self, lease: LeaseState, exp: ExporterState) -> bool:
        if exp.namespace != lease.namespace:
            return False
        if lease.requested_exporter and lease.requested_exporter not in (exp.name, exp.object_name):
            return False
        return _selector_matches(_parse_selector(lease.selector), exp.effective_labels)

    def _schedule(self) -> None:
        """Give every waiting lease (oldest first) to an available matching exporter."""
        for lease in sorted(self.leases.values(), key=lambda x: x.created):
            if lease.ended or lease.exporter is not None:
                continue
            for exp in self.exporters.values():
                if exp.available and self._matches(lease, exp):
                    self._assign(lease, exp)
                    break

    def _assign(self, lease: LeaseState, exp: ExporterState) -> None:
        lease.exporter = exp
        lease.begin = time.time()
        exp.lease = lease
        exp.ready_lease = None
        exp.lease_history.append(lease.name)
        lease.expiry = asyncio.get_running_loop().call_later(lease.duration, self._release, lease, "Expired")
        self._push_status(exp)
        self._notify()

    def _release(self, lease: LeaseState, reason: str) -> None:
        if lease.ended:
            return
        lease.end = time.time()
        lease.end_reason = reason
        if lease.expiry is not None:
            lease.expiry.cancel()
            lease.expiry = None
        exp = lease.exporter
        if exp is not None and exp.lease is lease:
            exp.lease = None
            exp.ready_lease = None
            self._push_status(exp)
        self._notify()

    def _push_status(self, exp: ExporterState) -> None:
        message = self._status_message(exp)
        for queue in exp.status_streams:
            queue.put_nowait(message)

    def _status_message(self, exp: ExporterState) -> jumpstarter_pb2.StatusResponse:
        if exp.lease is None:
            return jumpstarter_pb2.StatusResponse(leased=False)
        return jumpstarter_pb2.StatusResponse(leased=True, lease_name=exp.lease.name, client_name=exp.lease.client)

    # ---- messages -----------------------------------------------------------------------------------

    def _conditions(self, lease: LeaseState) -> list[kubernetes_pb2.Condition]:
        def cond(kind: str, status: bool, reason: str, message: str = "") -> kubernetes_pb2.Condition:
            return kubernetes_pb2.Condition(
                type=kind,
                status="True" if status else "False",
                observedGeneration=1,
                lastTransitionTime=kubernetes_pb2.Time(seconds=int(lease.created)),
                reason=reason,
                message=message,
            )

        if lease.ended:
            return [cond("Ready", False, lease.end_reason)]
        if lease.exporter is not None:
            return [cond("Pending", False, "Ready"), cond("Ready", True, "Ready")]
        if not any(self._matches(lease, e) for e in self.exporters.values()):
            message = f"no exporter matches selector {lease.selector!r}"
            return [cond("Unsatisfiable", True, "NoMatch", message), cond("Ready", False, "Unsatisfiable")]
        return [cond("Pending", True, "Pending", "waiting for a matching exporter"), cond("Ready", False, "Pending")]

    def _lease_message(self, lease: LeaseState) -> client_pb2.Lease:
        message = client_pb2.Lease(
            name=lease.object_name,
            selector=lease.selector,
            duration=duration_pb2.Duration(seconds=int(lease.duration), nanos=int(lease.duration % 1 * 1e9)),
            client=f"namespaces/{lease.namespace}/clients/{lease.client}",
            conditions=self._conditions(lease),
            exporter_name=lease.requested_exporter,
            tags=lease.tags,
        )
        if lease.exporter is not None:
            message.exporter = lease.exporter.object_name
        if lease.begin is not None:
            message.effective_begin_time.CopyFrom(_timestamp(lease.begin))
        if lease.end is not None:
            message.effective_end_time.CopyFrom(_timestamp(lease.end))
            if lease.begin is not None:
                message.effective_duration.FromTimedelta(_seconds(lease.end - lease.begin))
        return message

    def _exporter_message(self, exp: ExporterState) -> client_pb2.Exporter:
        return client_pb2.Exporter(
            name=exp.object_name,
            labels=exp.effective_labels,
            online=exp.online,
            status=exp.status if exp.online else common_pb2.EXPORTER_STATUS_OFFLINE,
            status_message=exp.status_message,
        )

    # ---- RouterService ------------------------------------------------------------------------------

    async def _router_stream(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        token = _bearer(context) or ""
        rendezvous = self._rendezvous.get(token)
        if rendezvous is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown router token")
            return
        arrival = rendezvous.arrived
        rendezvous.arrived += 1
        if rendezvous.arrived == 2:
            del self._rendezvous[token]  # a token pairs exactly two callers
            rendezvous.paired.set()
        record = RouterStreamRecord(lease_name=rendezvous.lease_name, arrival=arrival)
        self.router_streams.append(record)
        mine, theirs = rendezvous.pipes[arrival], rendezvous.pipes[1 - arrival]
        # Read at once, even before the peer arrives: frames wait in the peer's (bounded) pipe.
        reader = asyncio.create_task(_pump(request_iterator, theirs, record))
        reader.add_done_callback(_retrieve)
        clean = False
        try:
            try:
                async with asyncio.timeout(self.router_pair_timeout):
                    await rendezvous.paired.wait()
            except TimeoutError:
                self._rendezvous.pop(token, None)
                record.code, record.details = grpc.StatusCode.DEADLINE_EXCEEDED, "no peer arrived"
                await context.abort(record.code, f"no peer presented this router token in {self.router_pair_timeout}s")
            while True:
                item = await mine.get()
                if item is _EOF:
                    # The peer half-closed. A server cannot half-close a response stream, only end the call,
                    # so keep forwarding this side until it half-closes too (or the peer's call goes away).
                    await _first_of(reader, mine.aborted.wait())
                    break
                if item is _ABORT:
                    break
                assert isinstance(item, bytes)
                await context.write(item)
                record.frames_out += 1
            if not reader.done() and mine.graceful:
                # The peer's call ended after it sent GOAWAY (real peers close their channel as soon as they
                # have read the other side's GOAWAY). This side got that GOAWAY and will end by itself shortly
                # (an exporter once its session socket closes, ~1.3 s); ending its call under it would only
                # make its last write fail. Its frames now go nowhere.
                await asyncio.wait({reader}, timeout=self.router_linger)
            # Otherwise the peer vanished without a word: end this side at once.
            clean = reader.done() and not reader.cancelled() and reader.exception() is None
        except asyncio.CancelledError:
            record.code = grpc.StatusCode.CANCELLED
            raise
        finally:
            mine.discard()  # nobody reads frames for this side any more
            if not reader.done():
                reader.cancel()
            if not clean:
                # Cancelled (the caller went away: on a cancel its request stream even looks finished) or
                # the peer vanished: make sure the other side ends too.
                theirs.abort(graceful=record.sent_goaway)
            if record.code is None:
                record.code = grpc.StatusCode.OK
            self._notify()


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_EOF: Final = _Marker("EOF")
_ABORT: Final = _Marker("ABORT")


class _Pipe:
    """One direction of a router pairing: bounded for data, never blocking for the end markers."""

    def __init__(self, depth: int) -> None:
        self._queue: asyncio.Queue[bytes | _Marker] = asyncio.Queue()
        self._depth = depth
        self._room = asyncio.Semaphore(depth)
        self.closed = False
        self.discarding = False
        self.graceful = False  # the sender had sent GOAWAY before its call ended
        self.aborted = asyncio.Event()

    async def put(self, data: bytes) -> None:
        if self.discarding:
            return
        await self._room.acquire()
        self._queue.put_nowait(data)

    def discard(self) -> None:
        """The receiver is gone: drop further frames and wake senders waiting for room."""
        if not self.discarding:
            self.discarding = True
            for _ in range(self._depth):
                self._room.release()

    def close(self) -> None:
        """The sender half-closed: the receiver gets EOF after the frames already queued."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_EOF)

    def abort(self, graceful: bool) -> None:
        """The sender's call is gone: the receiver stops, even if it already got EOF."""
        self.closed = True
        self.graceful = graceful
        self.aborted.set()
        self._queue.put_nowait(_ABORT)

    async def get(self) -> bytes | _Marker:
        item = await self._queue.get()
        if isinstance(item, bytes):
            self._room.release()
        return item


@dataclass
class _Rendezvous:
    lease_name: str
    depth: int
    arrived: int = 0
    created: float = field(default_factory=time.monotonic)
    paired: asyncio.Event = field(default_factory=asyncio.Event)
    pipes: tuple[_Pipe, _Pipe] = field(init=False)

    def __post_init__(self) -> None:
        # pipes[i] carries frames *to* the i-th caller.
        self.pipes = (_Pipe(self.depth), _Pipe(self.depth))


def _retrieve(task: asyncio.Task[None]) -> None:
    # A pump fails when its caller goes away; the handler deals with that, don't log it as unretrieved.
    if not task.cancelled():
        task.exception()


async def _pump(source: AsyncIterator[bytes], sink: _Pipe, record: RouterStreamRecord) -> None:
    async for frame in source:
        record.frames_in += 1
        record.bytes_in += len(frame)
        # Control frames are tiny; parsing only those keeps the data path free of protobuf work.
        if len(frame) <= 64 and router_pb2.StreamRequest.FromString(frame).frame_type == router_pb2.FRAME_TYPE_GOAWAY:
            record.sent_goaway = True
        await sink.put(frame)
    sink.close()


async def _first_of(task: asyncio.Task[None], other: Awaitable[Any]) -> None:
    """Wait until `task` finishes or `other` completes; `task` keeps running in the second case."""
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


# ---- helpers ---------------------------------------------------------------------------------------------


def _new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(24)).decode()


def _bearer(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
            return value[len("Bearer ") :]
    return None


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def _check_parent(parent: str, namespace: str) -> None:
    if parent != f"namespaces/{namespace}":
        raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"parent {parent!r} is not your namespace")


def _parse_name(full_name: str, kind: str, namespace: str) -> str:
    parts = full_name.split("/")
    if len(parts) != 4 or parts[0] != "namespaces" or parts[2] != kind:
        raise CallError(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {kind} name {full_name!r}")
    if parts[1] != namespace:
        raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"{full_name} is not in your namespace")
    return parts[3]


# A Kubernetes label selector: "k=v", "k==v", "k!=v", "k in (a,b)", "k notin (a,b)", "k", "!k", comma-separated.
_Requirement = tuple[str, str, frozenset[str]]
_KEY = r"[A-Za-z0-9_./-]+"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s+\(([^)]*)\)$")
_CMP_RE = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*([A-Za-z0-9_./-]*)$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")


def _parse_selector(selector: str) -> list[_Requirement]:
    requirements: list[_Requirement] = []
    for part in re.split(r",(?![^()]*\))", selector or ""):
        part = part.strip()
        if not part:
            continue
        if m := _SET_RE.match(part):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            requirements.append((m.group(1), m.group(2), values))
        elif m := _CMP_RE.match(part):
            requirements.append((m.group(1), "!=" if m.group(2) == "!=" else "=", frozenset([m.group(3)])))
        elif m := _EXISTS_RE.match(part):
            requirements.append((m.group(2), "!exists" if m.group(1) else "exists", frozenset()))
        else:
            raise ValueError(f"cannot parse label selector {selector!r} near {part!r}")
    return requirements


def _selector_matches(requirements: list[_Requirement], labels: Mapping[str, str]) -> bool:
    for key, op, values in requirements:
        value = labels.get(key)
        ok = {
            "=": value is not None and value in values,
            "in": value is not None and value in values,
            "!=": value is None or value not in values,
            "notin": value is None or value not in values,
            "exists": value is not None,
            "!exists": value is None,
        }[op]
        if not ok:
            return False
    return True
