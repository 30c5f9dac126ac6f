"""Header blocks for the tunnel decoder: HPACK decoding per direction, a cache of decoded blocks, and the HTTP/2
and gRPC rules for header fields (pseudo-headers, connection-specific headers, grpc-timeout, status mapping).

Nothing here knows where in the byte stream it is: faults are raised as :class:`~.errors.Fault`, which the
decoder raises again located at the header block's HEADERS frame.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias, cast

import hpack

from .errors import Fault, GrpcProtocolError, TunnelLimitError
from .events import ErrorCode, MetadataValue, RequestHeaders, ResponseHeaders, ResponseTrailers
from .framing import FrameHeader

#: The compressed header block of one HEADERS frame plus its CONTINUATIONs; bounds memory against endless
#: CONTINUATION frames.
MAX_HEADER_BLOCK_SIZE = 1 << 20
#: The decompressed header list, counted as HPACK does (name + value + 32 per field); bounds HPACK bombs.
MAX_HEADER_LIST_SIZE = 1 << 20
#: The largest HPACK dynamic table an encoder may ask for. Real peers use 4 KiB; the advertised limit is not
#: enforced (it travels in the other direction, see ``MAX_FRAME_SIZE``), so this is a generous bound instead.
MAX_HEADER_TABLE_SIZE = 1 << 16

_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
_REQUIRED_REQUEST_PSEUDO = (b":method", b":scheme", b":path")
_CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"})
_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_STATUS = re.compile(rb"[0-9]{3}")
_GRPC_STATUS = re.compile(rb"[0-9]{1,10}")
# gRPC's mapping for responses without grpc-status (doc/http-grpc-status-mapping.md): 400 INTERNAL,
# 401 UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, others UNKNOWN.
_HTTP_TO_GRPC = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
_GRPC_UNKNOWN = 2

Fields: TypeAlias = list[tuple[bytes, bytes]]
#: A checked header list: (pseudo-headers, regular fields in order).
HeaderSplit: TypeAlias = tuple[dict[bytes, bytes], Fields]
_Entries: TypeAlias = tuple[tuple[bytes, bytes], ...]
# All a block's decoding depends on: its bytes, the dynamic table's size limit and entries, the decoder's limits.
_Key: TypeAlias = tuple[bytes, int, _Entries, int, int]


@dataclass(slots=True)
class HeaderBlock:
    """A header block being assembled from HEADERS + CONTINUATION frames."""

    stream_id: int
    end_stream: bool
    offset: int  # of the HEADERS frame, which errors about the block name
    frame: FrameHeader
    fragments: list[bytes]
    size: int


class HeaderBlockCache:
    """Header blocks already decoded and checked, with the dynamic table each left behind.

    Every tunnel is a new connection whose opening calls send the same blocks as the last one's, and later blocks
    mostly refer to entries added earlier: most blocks of a cassette are hits, so one cache serves every decoder
    of a configuration. Bounded (a key keeps its table's entries): at most about ``max_blocks`` * (``max_block``
    + ``max_table``) bytes; it starts over when full. The values are not mutated.
    """

    __slots__ = ("blocks", "max_block", "max_blocks", "max_table")

    def __init__(self, *, max_blocks: int, max_block: int, max_table: int) -> None:
        self.blocks: dict[_Key, tuple[HeaderSplit, int, _Entries]] = {}  # -> (split, table size limit, entries)
        self.max_blocks = max_blocks
        # Blocks and tables above these are not cached (0 blocks: nothing is).
        self.max_block = max_block if max_blocks > 0 else -1
        self.max_table = max_table


class HeaderDecoder:
    """One direction's HPACK state: decodes header blocks and checks their fields, through a shared cache."""

    __slots__ = ("_cache", "_hpack")

    def __init__(self, *, max_header_list_size: int, max_header_table_size: int, cache: HeaderBlockCache) -> None:
        self._hpack = hpack.Decoder(max_header_list_size=max_header_list_size)
        self._hpack.max_allowed_table_size = max_header_table_size
        self._cache = cache

    def decode(self, data: bytes) -> HeaderSplit:
        """Decode a whole header block and check RFC 9113 section 8.2's field rules.

        :raises Fault: if the block does not decode or a field breaks the rules.
        """
        decoder = self._hpack
        table = decoder.header_table
        cache = self._cache
        key: _Key | None = None
        if len(data) <= cache.max_block and table.maxsize <= cache.max_table:
            entries = tuple(table.dynamic_entries)
            key = (data, table.maxsize, entries, decoder.max_header_list_size, decoder.max_allowed_table_size)
            known = cache.blocks.get(key)
            if known is not None:
                split, maxsize, after = known
                if maxsize != table.maxsize or after != entries:
                    _set_table(table, maxsize, after)
                return split
        try:
            decoded = decoder.decode(data, raw=True)
        except hpack.OversizedHeaderListError as err:
            raise Fault(f"header list too large: {err}", TunnelLimitError) from err
        except hpack.HPACKError as err:
            raise Fault(f"HPACK: {err}", error_code=ErrorCode.COMPRESSION_ERROR) from err
        split = split_fields([(cast(bytes, name), cast(bytes, value)) for name, value in decoded])
        if key is not None and table.maxsize <= cache.max_table:
            if len(cache.blocks) >= cache.max_blocks:
                cache.blocks.clear()
            cache.blocks[key] = (split, table.maxsize, tuple(table.dynamic_entries))
        return split


def _set_table(table: hpack.table.HeaderTable, maxsize: int, entries: _Entries) -> None:
    """Put an HPACK dynamic table in a state it had elsewhere, through its public methods: a size limit of 0
    empties it, then the entries go back in oldest first (`add` puts each in front)."""
    table.maxsize = 0
    table.maxsize = maxsize
    for name, value in reversed(entries):
        table.add(name, value)


def split_fields(fields: Fields) -> HeaderSplit:
    """Check RFC 9113 section 8.2 field rules; return (pseudo-headers, regular fields in order)."""
    pseudo: dict[bytes, bytes] = {}
    regular: Fields = []
    for name, value in fields:
        if name.startswith(b":"):
            if regular:
                raise Fault(f"pseudo-header {name!r} after a regular header")
            if name in pseudo:
                raise Fault(f"duplicate pseudo-header {name!r}")
            pseudo[name] = value
            continue
        if not name or name != name.lower():
            raise Fault(f"header name {name!r} is empty or not lowercase")
        if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
            raise Fault(f"connection-specific header {name!r}")
        regular.append((name, value))
    return pseudo, regular


def request_headers(stream_id: int, pseudo: dict[bytes, bytes], regular: Fields) -> RequestHeaders:
    """The event of a request's header block."""
    unknown = set(pseudo) - _REQUEST_PSEUDO
    if unknown:
        raise Fault(f"unexpected request pseudo-headers {sorted(unknown)}")
    for name in _REQUIRED_REQUEST_PSEUDO:
        if not pseudo.get(name):
            raise Fault(f"request without {name.decode()}")
    timeout = None
    metadata: list[tuple[str, MetadataValue]] = []
    for name, value in regular:
        if name == b"grpc-timeout":
            timeout = _parse_timeout(value)
        else:
            metadata.extend(_metadata_entries(name, value))
    authority = pseudo.get(b":authority")
    return RequestHeaders(
        stream_id=stream_id,
        method=_text(pseudo[b":path"]),
        authority=None if authority is None else _text(authority),
        timeout=timeout,
        metadata=tuple(metadata),
    )


def response_headers(
    stream_id: int, pseudo: dict[bytes, bytes], regular: Fields, *, end_stream: bool
) -> ResponseHeaders | ResponseTrailers:
    """The event of a response's first header block: its headers, or its trailers when it ends the stream."""
    status = pseudo.get(b":status")
    if set(pseudo) != {b":status"} or status is None or not _STATUS.fullmatch(status):
        raise Fault(f"response needs exactly one valid :status pseudo-header, got {pseudo!r}")
    if end_stream:
        return response_trailers(stream_id, int(status), regular, trailers_only=True)
    metadata = tuple(entry for name, value in regular for entry in _metadata_entries(name, value))
    return ResponseHeaders(stream_id=stream_id, http_status=int(status), metadata=metadata)


def check_trailers(pseudo: dict[bytes, bytes], end_stream: bool) -> None:
    """A second header block on a stream must be trailers: no pseudo-headers, and the end of the stream."""
    if pseudo:
        raise Fault("pseudo-headers in trailers")
    if not end_stream:
        raise Fault("second HEADERS without END_STREAM")


def response_trailers(stream_id: int, http_status: int, regular: Fields, *, trailers_only: bool) -> ResponseTrailers:
    """The event of a response's trailers; without grpc-status, the code follows the HTTP status as gRPC maps it."""
    code: int | None = None
    details = ""
    metadata: list[tuple[str, MetadataValue]] = []
    for name, value in regular:
        if name == b"grpc-status":
            if not _GRPC_STATUS.fullmatch(value):
                raise Fault(f"invalid grpc-status {value!r}", GrpcProtocolError)
            code = int(value)
        elif name == b"grpc-message":
            # Percent-encoded UTF-8; gRPC asks decoders to keep bad escapes and bad UTF-8 rather than fail.
            details = urllib.parse.unquote_to_bytes(value).decode("utf-8", errors="replace")
        else:
            metadata.extend(_metadata_entries(name, value))
    if code is None:
        code = _HTTP_TO_GRPC.get(http_status, _GRPC_UNKNOWN)
    return ResponseTrailers(
        stream_id=stream_id, code=code, details=details, metadata=tuple(metadata), trailers_only=trailers_only
    )


def _text(value: bytes) -> str:
    """Header text as grpcio decodes it: UTF-8, or Latin-1 (lossless) when the bytes are not UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _metadata_entries(name: bytes, value: bytes) -> Iterable[tuple[str, MetadataValue]]:
    key = name.decode("latin-1")
    if not key.endswith("-bin"):
        return [(key, _text(value))]
    if value.startswith(b"\x00"):
        # gRPC's "true binary metadata" extension (setting 0xfe03, which grpc core peers advertise): a NUL byte,
        # then the raw value.
        return [(key, value[1:])]
    # gRPC allows several base64 values joined by commas in one field, padded or not.
    entries: list[tuple[str, MetadataValue]] = []
    for part in value.split(b","):
        part = part.strip()
        try:
            entries.append((key, base64.b64decode(part + b"=" * (-len(part) % 4), validate=True)))
        except binascii.Error as err:
            raise Fault(f"invalid base64 in {key}: {part!r}", GrpcProtocolError) from err
    return entries


def _parse_timeout(value: bytes) -> float:
    match = _TIMEOUT.fullmatch(value)
    if match is None:
        raise Fault(f"invalid grpc-timeout {value!r}", GrpcProtocolError)
    return int(match[1]) * _TIMEOUT_UNITS[match[2]]
