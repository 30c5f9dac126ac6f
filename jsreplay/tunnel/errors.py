"""Exceptions of the tunnel decoder.

Every failure to decode tunnel bytes raises a :class:`TunnelError`; nothing else escapes the decoder for bad input.
The message names the direction, the byte offset of the offending frame in that direction's byte stream, and the
frame, e.g. ``client_to_exporter: byte 1234: DATA frame (stream 3, 16 bytes, flags 0x1): DATA on a closed stream``.
"""

from __future__ import annotations

from .events import Direction, ErrorCode, TunnelEvent


class TunnelError(Exception):
    """Base class: the tunnel bytes cannot be decoded.

    ``error_code`` is the HTTP/2 error code a peer would have answered with. ``events`` holds the events decoded
    from the same :meth:`~jsreplay.tunnel.TunnelDecoder.feed` call before the failure (empty when the decoder is
    refusing input after an earlier error), so a caller can still show everything up to the bad frame.
    """

    default_error_code: ErrorCode = ErrorCode.PROTOCOL_ERROR

    def __init__(
        self,
        problem: str,
        *,
        direction: Direction | None = None,
        offset: int | None = None,
        frame: str | None = None,
        error_code: ErrorCode | None = None,
    ) -> None:
        parts = [direction.value] if direction is not None else []
        if offset is not None:
            parts.append(f"byte {offset}")
        if frame is not None:
            parts.append(frame)
        parts.append(problem)
        super().__init__(": ".join(parts))
        self.problem = problem
        self.direction = direction
        self.offset = offset
        self.frame = frame
        self.error_code = self.default_error_code if error_code is None else error_code
        self.events: tuple[TunnelEvent, ...] = ()


class TunnelProtocolError(TunnelError):
    """The HTTP/2 layer is malformed: framing, HPACK, stream states, or bytes after the end of the stream."""


class TunnelLimitError(TunnelProtocolError):
    """A frame, header block or message exceeds one of the decoder's size limits."""

    default_error_code = ErrorCode.ENHANCE_YOUR_CALM


class GrpcProtocolError(TunnelError):
    """The HTTP/2 layer is fine but the gRPC layer on top is not (message framing, grpc-status, -bin values...)."""


class Fault(Exception):
    """A fault found by a layer that does not know where it is (header rules, gRPC message framing).

    Internal: the decoder raises it again as a ``kind`` located at the frame being handled.
    """

    def __init__(
        self, problem: str, kind: type[TunnelError] = TunnelProtocolError, error_code: ErrorCode | None = None
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.kind = kind
        self.error_code = error_code
