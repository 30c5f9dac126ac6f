"""Sans-I/O decoding of the HTTP/2 gRPC connection inside a Jumpstarter router tunnel.

Values in, values out: :class:`TunnelDecoder` turns recorded byte chunks into events (its limits and switches in a
:class:`DecoderConfig`), :class:`CallAssembler` folds events into :class:`InnerCall` records, and
:func:`decode_tunnel` does both for a whole recording.
"""

from jsreplay.protocol.wire import RouterFrameType

from .calls import CallAssembler, ConnectionEvent, ElidedMark, InnerCall, InnerMessage, decode_tunnel
from .config import DEFAULT_CONFIG, DecoderConfig
from .decoder import TunnelDecoder
from .errors import GrpcProtocolError, TunnelError, TunnelLimitError, TunnelProtocolError
from .events import (
    TRANSPORT_HEADERS,
    ConnectionClosed,
    Direction,
    ErrorCode,
    Metadata,
    MetadataValue,
    RequestElided,
    RequestEnded,
    RequestHeaders,
    RequestMessage,
    ResponseHeaders,
    ResponseMessage,
    ResponseTrailers,
    Spans,
    StreamReset,
    TunnelEnded,
    TunnelEvent,
    application_metadata,
)
from .framing import CONNECTION_PREFACE, MAX_FRAME_SIZE
from .headers import MAX_HEADER_BLOCK_SIZE, MAX_HEADER_LIST_SIZE, MAX_HEADER_TABLE_SIZE, HeaderBlockCache
from .messages import MAX_MESSAGE_SIZE

__all__ = [
    "CONNECTION_PREFACE",
    "DEFAULT_CONFIG",
    "MAX_FRAME_SIZE",
    "MAX_HEADER_BLOCK_SIZE",
    "MAX_HEADER_LIST_SIZE",
    "MAX_HEADER_TABLE_SIZE",
    "MAX_MESSAGE_SIZE",
    "TRANSPORT_HEADERS",
    "CallAssembler",
    "ConnectionClosed",
    "ConnectionEvent",
    "DecoderConfig",
    "Direction",
    "ElidedMark",
    "ErrorCode",
    "GrpcProtocolError",
    "HeaderBlockCache",
    "InnerCall",
    "InnerMessage",
    "Metadata",
    "MetadataValue",
    "RequestElided",
    "RequestEnded",
    "RequestHeaders",
    "RequestMessage",
    "ResponseHeaders",
    "ResponseMessage",
    "ResponseTrailers",
    "RouterFrameType",
    "Spans",
    "StreamReset",
    "TunnelDecoder",
    "TunnelEnded",
    "TunnelError",
    "TunnelEvent",
    "TunnelLimitError",
    "TunnelProtocolError",
    "application_metadata",
    "decode_tunnel",
]
