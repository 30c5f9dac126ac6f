"""Values that the tunnel decoder produces: directions, HTTP/2 error codes and inner gRPC events.

Every event is a frozen, keyword-only dataclass. Stream-level events carry the HTTP/2 ``stream_id`` of the inner
call; connection-level events (:class:`ConnectionClosed`, :class:`TunnelEnded`) do not.

Metadata is a tuple of ``(name, value)`` pairs in wire order. Names are lowercase ``str``. Values of ``-bin``
headers are the decoded ``bytes`` (from base64, or from gRPC's NUL-prefixed "true binary" form); all other values
are ``str`` (UTF-8, falling back to Latin-1 for bytes that are not UTF-8, as grpcio does, so no header is lost).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

MetadataValue: TypeAlias = str | bytes
Metadata: TypeAlias = tuple[tuple[str, MetadataValue], ...]


class Direction(enum.Enum):
    """Which way a chunk of tunnel bytes travelled: the client is the HTTP/2 client, the exporter the server."""

    CLIENT_TO_EXPORTER = "client_to_exporter"
    EXPORTER_TO_CLIENT = "exporter_to_client"

    @property
    def by_client(self) -> bool:
        """True for bytes the client (the HTTP/2 client side) sent."""
        return self is Direction.CLIENT_TO_EXPORTER

    @property
    def opposite(self) -> Direction:
        """The other direction of the same connection."""
        if self is Direction.CLIENT_TO_EXPORTER:
            return Direction.EXPORTER_TO_CLIENT
        return Direction.CLIENT_TO_EXPORTER


class ErrorCode(enum.IntEnum):
    """HTTP/2 error codes (RFC 9113 section 7), as carried by RST_STREAM and GOAWAY.

    Events keep the raw ``int`` because peers may send codes outside this list; ``ErrorCode(code)`` names the
    known ones.
    """

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestHeaders:
    """The client opened a call: ``method`` is the HTTP/2 ``:path``, e.g. ``/jumpstarter.v1.ExporterService/GetReport``.

    ``metadata`` holds every non-pseudo header in wire order (including transport headers such as
    ``content-type``, ``te`` and ``user-agent``; see :func:`application_metadata`) except ``grpc-timeout``, which is
    parsed into ``timeout`` (seconds, or None when the client set no deadline).
    """

    stream_id: int
    method: str
    authority: str | None
    timeout: float | None
    metadata: Metadata


#: Where a located message's bytes are: (start, stop) offsets into its direction's byte stream (all the bytes that
#: direction carried, the client's connection preface included), flattened, in order; () for a message kept whole.
Spans: TypeAlias = tuple[int, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestMessage:
    """One complete gRPC request message. ``compressed`` is the message's compressed-flag: ``data`` is then still
    compressed with the algorithm named by the call's ``grpc-encoding`` header.

    A message over :attr:`~.config.DecoderConfig.locate_over` bytes is located instead: ``data`` is empty and
    ``spans`` says where its bytes are (the DATA frames' payloads that carried it, without their padding).
    """

    stream_id: int
    data: bytes
    compressed: bool
    spans: Spans = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestElided:
    """The recording kept this stream's client bytes as a length and digest only (`jsreplay record` elides big
    uploads): ``length`` DATA payload bytes sent so far, ``closed`` once the client sent its closing frame, and
    ``sha256`` (hex) of all of them once the stream ended. Its DATA frames carry nothing."""

    stream_id: int
    length: int
    closed: bool
    sha256: str | None


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestEnded:
    """The client half-closed the call (END_STREAM): it will send no more messages."""

    stream_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseHeaders:
    """The exporter's initial metadata (every non-pseudo header in wire order) and HTTP ``:status``."""

    stream_id: int
    http_status: int
    metadata: Metadata


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseMessage:
    """One complete gRPC response message; ``compressed`` and ``spans`` as for :class:`RequestMessage`."""

    stream_id: int
    data: bytes
    compressed: bool
    spans: Spans = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class ResponseTrailers:
    """The exporter ended the call with a status.

    ``code`` is the numeric ``grpc-status`` and ``details`` the percent-decoded ``grpc-message``; both are removed
    from ``metadata``. ``trailers_only`` is True for a trailers-only response (one HEADERS frame with END_STREAM and
    no initial metadata), whose ``metadata`` then also holds the transport headers such as ``content-type``. When
    ``grpc-status`` is missing, ``code`` follows gRPC's HTTP-to-gRPC status mapping (UNKNOWN for HTTP 200).
    """

    stream_id: int
    code: int
    details: str
    metadata: Metadata
    trailers_only: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class StreamReset:
    """An RST_STREAM frame: ``by_client`` tells who sent it; ``error_code`` is an HTTP/2 code (8 is CANCEL)."""

    stream_id: int
    error_code: int
    by_client: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class ConnectionClosed:
    """A GOAWAY frame of the inner HTTP/2 connection. Streams up to ``last_stream_id`` may still complete."""

    error_code: int
    last_stream_id: int
    debug_data: bytes
    by_client: bool


@dataclass(frozen=True, kw_only=True, slots=True)
class TunnelEnded:
    """The router tunnel's byte stream ended in one direction (an outer GOAWAY frame, or an explicit end)."""

    by_client: bool


TunnelEvent: TypeAlias = (
    RequestHeaders
    | RequestMessage
    | RequestElided
    | RequestEnded
    | ResponseHeaders
    | ResponseMessage
    | ResponseTrailers
    | StreamReset
    | ConnectionClosed
    | TunnelEnded
)

#: Headers that belong to HTTP/2 or gRPC transport rather than to the application's metadata. grpcio hides them from
#: servicers and callers, except ``user-agent``, which servicers do see; it is listed because it names library
#: versions, which differ between recording and replay.
TRANSPORT_HEADERS: frozenset[str] = frozenset(
    {
        "content-type",
        "te",
        "user-agent",
        "grpc-encoding",
        "grpc-accept-encoding",
        "grpc-timeout",
        "grpc-status",
        "grpc-message",
    }
)


def application_metadata(metadata: Metadata) -> Metadata:
    """Drop :data:`TRANSPORT_HEADERS` from ``metadata``: what the application set, in wire order."""
    return tuple((name, value) for name, value in metadata if name not in TRANSPORT_HEADERS)
