"""The gRPC and Jumpstarter wire vocabulary: method paths, message type names, router frame types, status names.

One home for the names every layer spells, so a protocol change touches one file.
"""

from __future__ import annotations

import enum

CONTROLLER_SERVICE = "jumpstarter.v1.ControllerService"
CLIENT_SERVICE = "jumpstarter.client.v1.ClientService"
ROUTER_SERVICE = "jumpstarter.v1.RouterService"
EXPORTER_SERVICE = "jumpstarter.v1.ExporterService"

CONTROLLER = f"/{CONTROLLER_SERVICE}/"  # prefix of the controller's method paths
CLIENT = f"/{CLIENT_SERVICE}/"
EXPORTER = f"/{EXPORTER_SERVICE}/"

REGISTER = CONTROLLER + "Register"
UNREGISTER = CONTROLLER + "Unregister"
REPORT_STATUS = CONTROLLER + "ReportStatus"
STATUS = CONTROLLER + "Status"
LISTEN = CONTROLLER + "Listen"
DIAL = CONTROLLER + "Dial"
RELEASE_LEASE = CONTROLLER + "ReleaseLease"
ROUTER_STREAM = f"/{ROUTER_SERVICE}/Stream"
GET_REPORT = EXPORTER + "GetReport"

#: What an exporter calls on the controller (for cassettes whose calls carry no jumpstarter-kind metadata).
EXPORTER_METHODS = frozenset((REGISTER, UNREGISTER, REPORT_STATUS, STATUS, LISTEN, RELEASE_LEASE))
#: Controller calls whose responses name a router (endpoint and token) that the proxy rewrites to itself.
ROUTER_HANDOUTS = frozenset((DIAL, LISTEN))
# The development line's telemetry: the controller names its endpoints, the exporter pushes logs there.
GET_SERVICE_ENDPOINTS = CONTROLLER + "GetServiceEndpoints"
PUSH_LOGS = "/jumpstarter.v1.TelemetryService/PushLogs"

# Message type names.
STREAM_REQUEST = "jumpstarter.v1.StreamRequest"  # a router frame a peer sends
STREAM_RESPONSE = "jumpstarter.v1.StreamResponse"  # a router frame a peer receives
REGISTER_REQUEST = "jumpstarter.v1.RegisterRequest"
GET_REPORT_RESPONSE = "jumpstarter.v1.GetReportResponse"

#: The label that names a driver instance in its `DriverInstanceReport`.
DRIVER_NAME_LABEL = "jumpstarter.dev/name"


class RouterFrameType(enum.IntEnum):
    """``frame_type`` of the outer ``RouterService/Stream`` messages (router.proto)."""

    DATA = 0
    RST_STREAM = 3
    PING = 6
    GOAWAY = 7


STATUS_CODE_NAMES: tuple[str, ...] = (
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
)


def code_name(code: int) -> str:
    """The gRPC status code's name, e.g. 0 -> "OK"; codes outside the standard range as "CODE_<n>"."""
    return STATUS_CODE_NAMES[code] if 0 <= code < len(STATUS_CODE_NAMES) else f"CODE_{code}"


def short_method(method: str) -> str:
    """`/jumpstarter.v1.ControllerService/Dial` -> `ControllerService/Dial` (the package dropped), as ignore
    paths and reports name methods."""
    short = _SHORT_METHODS.get(method)
    if short is None:
        path = method.lstrip("/")
        service, _, name = path.partition("/")
        short = f"{service.rsplit('.', 1)[-1]}/{name}" if name else path
        if len(_SHORT_METHODS) < 4096:  # a cassette has a few dozen methods; this is asked for every call
            _SHORT_METHODS[method] = short
    return short


_SHORT_METHODS: dict[str, str] = {}
