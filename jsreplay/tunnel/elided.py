"""How a recording marks the bytes of an upload it did not keep: an HTTP/2 extension frame in the tunnel's bytes.

`jsreplay record` keeps a big client-to-exporter byte stream (a flash image uploaded through a driver) as its
length and SHA-256 only. In the recorded tunnel bytes, each DATA frame of that stream is kept with an empty payload
(its END_STREAM flag as it was), and an ELIDED frame on the same stream says how many of the stream's bytes had
been sent so far, whether the client had sent its closing frame, and, once the stream ended, the digest of all of
them. The bytes counted and hashed are what the byte stream carried: the payloads of the client's
`StreamRequest` messages of frame type DATA, concatenated, as replay sees them.

RFC 9113 section 5.5 has receivers ignore frame types they do not know, so the tunnel stays valid HTTP/2; but a
reader that ignored this one would see an empty upload, which is why cassettes that can hold it are format 2 and
refused by older readers.

Layout of the frame's payload: version (1 byte, 1), flags (1 byte: 0x1 closed, 0x2 digest follows), the length
so far (8 bytes, big-endian), then the SHA-256 (32 bytes) when flag 0x2 is set.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ELIDED_FRAME = 0xE7  # an HTTP/2 frame type no registered extension uses
_VERSION = 1
_CLOSED = 0x1
_DIGEST = 0x2
_FIXED = struct.Struct(">BBQ")
_HEADER = struct.Struct(">HBBBI")  # length (24 bits as 16 + 8), type, flags, stream id


@dataclass(frozen=True, slots=True)
class ElidedSummary:
    """What an ELIDED frame says about its stream's client bytes so far."""

    length: int  # bytes of the stream's DATA payloads, so far
    closed: bool  # the client had sent its closing (non-DATA) frame
    sha256: str | None = None  # hex digest of all of them, once the stream ended; None before

    def payload(self) -> bytes:
        flags = (_CLOSED if self.closed else 0) | (_DIGEST if self.sha256 is not None else 0)
        head = _FIXED.pack(_VERSION, flags, self.length)
        return head if self.sha256 is None else head + bytes.fromhex(self.sha256)


def elided_frame(stream_id: int, summary: ElidedSummary) -> bytes:
    """The whole ELIDED frame (header and payload) for `stream_id`."""
    payload = summary.payload()
    return _HEADER.pack(len(payload) >> 8, len(payload) & 0xFF, ELIDED_FRAME, 0, stream_id) + payload


def parse_elided(payload: bytes) -> ElidedSummary:
    """An ELIDED frame's payload; ValueError says what is wrong with it."""
    if len(payload) < _FIXED.size:
        raise ValueError(f"ELIDED frame of {len(payload)} bytes, needs at least {_FIXED.size}")
    version, flags, length = _FIXED.unpack_from(payload)
    if version != _VERSION:
        raise ValueError(f"ELIDED frame version {version}, this jsreplay reads {_VERSION}")
    want = _FIXED.size + (32 if flags & _DIGEST else 0)
    if len(payload) != want:
        raise ValueError(f"ELIDED frame of {len(payload)} bytes, its flags 0x{flags:x} say {want}")
    digest = payload[_FIXED.size :].hex() if flags & _DIGEST else None
    return ElidedSummary(length=length, closed=bool(flags & _CLOSED), sha256=digest)
