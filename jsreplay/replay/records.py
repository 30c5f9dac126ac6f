"""Single records of a loaded cassette, read back by position: replay keeps where a response is, not its bytes.

The library notes each recorded response's record as (offset, length) while it scans the cassette; when the
response is sent, `RecordFile.event_at` reads that record with one `pread` through the cassette reader's random
access (`CassetteReader.event_at`: the same caps, migrations and decoding as the scan). The reader is opened on
the first read, which checks the header again: a cassette whose header changed since loading is not served.

A tunnel's big inner messages are read back the same way (`TunnelBytes`): their spans of the tunnel's byte stream
lead, through the direction's `RouterDataIndex`, to the router frames' records and the slices of their payloads.
"""

from __future__ import annotations

from pathlib import Path

from jsreplay.cassette.errors import CassetteError, CorruptCassetteError
from jsreplay.cassette.format import MAGIC, CassetteReader
from jsreplay.cassette.model import AnyEvent, ClientMessage, ServerMessage
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import RouterFrameType
from jsreplay.session.tunnels import LocatedTunnel, RouterDataIndex, event_frame
from jsreplay.tunnel.events import Spans


class RecordFile:
    """One cassette, opened on the first read and kept open until `close()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: CassetteReader | None = None

    def _open(self) -> CassetteReader:
        try:
            self._reader = CassetteReader(self.path)
        except CorruptCassetteError:
            raise
        except CassetteError as err:  # e.g. a format version changed to one this jsreplay cannot read
            raise CorruptCassetteError(
                self.path, f"the header changed since the cassette was loaded: {err.reason}", offset=len(MAGIC)
            ) from None
        return self._reader

    def event_at(self, offset: int, length: int) -> AnyEvent:
        """The event whose record is the `length` bytes at `offset` (as `CassetteReader.iter_with_offsets` gave)."""
        reader = self._reader if self._reader is not None else self._open()
        return reader.event_at(offset, length)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None


class TunnelBytes:
    """The byte streams of a recorded tunnel decoded with its messages located: reads a located message back.

    The last frame read in each direction is kept: a message's pieces, and the next message's, are mostly in the
    same router frame.
    """

    __slots__ = ("_call_id", "_file", "_last", "_located", "_registry")

    def __init__(self, file: RecordFile, registry: Registry, call_id: int, located: LocatedTunnel) -> None:
        self._file = file
        self._registry = registry
        self._call_id = call_id
        self._located = located
        self._last: dict[bool, tuple[int, bytes]] = {}  # by_client -> (frame index, payload)

    def read(self, by_client: bool, spans: Spans) -> bytes:
        """The bytes at `spans` (flattened (start, stop) pairs) of the client's or the exporter's byte stream.

        :raises CorruptCassetteError: if the records there are no longer the tunnel's frames (the file changed).
        """
        index = self._located.index(by_client)
        parts: list[bytes] = []
        for i in range(0, len(spans), 2):
            try:
                pieces = list(index.pieces(spans[i], spans[i + 1]))
            except ValueError as err:  # a span the decoder gave is always inside what was indexed
                raise AssertionError(f"a located message outside its tunnel's bytes: {err}") from None
            for frame, first, last in pieces:
                payload = self._payload(by_client, index, frame)
                parts.append(payload[first:last] if first or last < len(payload) else payload)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _payload(self, by_client: bool, index: RouterDataIndex, frame: int) -> bytes:
        last = self._last.get(by_client)
        if last is not None and last[0] == frame:
            return last[1]
        offset, length = index.record(frame)
        payload = self._read_frame(offset, length, index.sent, index.payload_size(frame))
        self._last[by_client] = (frame, payload)
        return payload

    def _read_frame(self, offset: int, length: int, sent: bool, size: int) -> bytes:
        """The payload of the DATA frame of `size` bytes whose record is at `offset`."""
        event = self._file.event_at(offset, length)
        want = ClientMessage if sent else ServerMessage
        if not isinstance(event, want) or event.call_id != self._call_id:
            problem = f"no {want.__name__} of tunnel call {self._call_id} here"
        else:
            try:
                _, decoded = event_frame(self._registry, event)
            except ProtocolError as err:
                problem = f"the router frame here does not decode: {err}"
            else:
                if decoded.frame_type == RouterFrameType.DATA and len(decoded.payload) == size:
                    return decoded.payload
                problem = f"the router frame here is not the DATA frame of {size} bytes"
        raise CorruptCassetteError(self._file.path, f"{problem} (the file changed since loading)", offset=offset)
