"""The fake cluster's data: service names, hook types, credentials, the state of exporters and leases, call records."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import grpc
from google.protobuf.message import Message
from jumpstarter_protocol import jumpstarter_pb2
from jumpstarter_protocol.jumpstarter.v1 import common_pb2

CONTROLLER_SERVICE: Final = "jumpstarter.v1.ControllerService"
CLIENT_SERVICE: Final = "jumpstarter.client.v1.ClientService"
ROUTER_SERVICE: Final = "jumpstarter.v1.RouterService"
ROUTER_STREAM: Final = f"/{ROUTER_SERVICE}/Stream"

EXPORTER: Final = "Exporter"
CLIENT: Final = "Client"

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
