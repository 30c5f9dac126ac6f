"""Big uploads kept as their length and SHA-256: what `jsreplay record` does with a flash image sent to a driver.

A client uploads through an inner `RouterService/Stream` call in the tunnel (a resource or an `@exportstream`
driver). Replay never sends those bytes anywhere, it only checks that the client sends the same ones, and a digest
does that; the download direction is always kept, since replay serves it.

How much a stream will carry is not known when it opens, so the recorder holds the recording back (every event, in
order: the file stays in event order) while any new byte stream is undecided, up to `hold_bytes` and
`hold_seconds`. A stream that passes `threshold` meanwhile is elided from its first byte; one that ends below it
is kept; what is still undecided when the hold runs out is kept, and elided from its next gRPC message on should it
pass the threshold later (its first bytes are then in the cassette, the rest and the digest of all are not).

Two sans-I/O walkers follow the client's side of the inner HTTP/2 connection of each recorded router stream: the
scanner as messages arrive (which streams are byte streams, how many bytes each carried, their SHA-256), the
rewriter as the held messages are written (the elided streams' DATA frames emptied, an ELIDED frame after them:
`jsreplay.tunnel.elided`). Anything the scanner cannot follow (not HTTP/2, a compressed or oversized message) is
kept as it is: eliding is an optimisation, never a guess.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import hpack
from google.protobuf.message import Message

from jsreplay.cassette.model import AnyEvent, CallStart, Cancel, ClientMessage, Role, ServerMessage, Status
from jsreplay.protocol.registry import Registry
from jsreplay.protocol.wire import ROUTER_STREAM, STREAM_REQUEST, STREAM_RESPONSE, RouterFrameType
from jsreplay.session.tokens import bearer_token
from jsreplay.tunnel.elided import ElidedSummary, elided_frame
from jsreplay.tunnel.framing import (
    CONNECTION_PREFACE,
    CONTINUATION,
    DATA,
    FLAG_END_HEADERS,
    FLAG_END_STREAM,
    FLAG_PADDED,
    FLAG_PRIORITY,
    HEADERS,
    RST_STREAM,
)
from jsreplay.tunnel.headers import MAX_HEADER_BLOCK_SIZE, MAX_HEADER_LIST_SIZE, MAX_HEADER_TABLE_SIZE

log = logging.getLogger("jsreplay.record")

DEFAULT_THRESHOLD = 16 << 20
DEFAULT_HOLD_BYTES = 48 << 20
_HEADER = struct.Struct(">HBBBI")
_ROUTER_DATA = int(RouterFrameType.DATA)
_ROUTER_PATH = ROUTER_STREAM.encode()


@dataclass(frozen=True)
class ElisionConfig:
    """`threshold`: client bytes above which a byte stream is kept as length and digest (None: keep everything)."""

    threshold: int | None = DEFAULT_THRESHOLD
    hold_bytes: int = DEFAULT_HOLD_BYTES  # recording held back, at most, while a stream is undecided
    hold_seconds: float = 5.0
    max_message: int = 16 << 20  # a gRPC message bigger than this in a byte stream: the stream is kept


class Fate(enum.Enum):
    UNDECIDED = "undecided"
    KEEP = "keep"
    ELIDE = "elide"


@dataclass(eq=False)
class _Upload:
    """One byte stream's client side as the scanner sees it: its gRPC messages cut, its DATA payloads hashed."""

    fate: Fate = Fate.UNDECIDED
    length: int = 0
    closed: bool = False
    ended: bool = False
    digest: str | None = None
    broken: str = ""  # why it cannot be elided
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes | memoryview, parse: Callable[[bytes], Message], max_message: int) -> None:
        if self.broken:
            return
        buf = self.buffer
        buf += data
        pos = 0
        while len(buf) - pos >= 5:
            compressed, size = buf[pos], int.from_bytes(buf[pos + 1 : pos + 5], "big")
            if compressed:
                self.broken = "a compressed message"
            elif size > max_message:
                self.broken = f"a message of {size} bytes"
            if self.broken:
                buf.clear()
                return
            if len(buf) - pos - 5 < size:
                break
            try:
                message = parse(bytes(buf[pos + 5 : pos + 5 + size]))
            except Exception as err:
                self.broken = f"a message that does not decode ({err})"
                buf.clear()
                return
            if int(message.frame_type) == _ROUTER_DATA:
                payload = message.payload
                self.hasher.update(payload)
                self.length += len(payload)
            else:
                self.closed = True
            pos += 5 + size
        del buf[:pos]

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            # Broken (a compressed or undecodable message) after it was elided: the digest would cover only the
            # start, and replay would call the whole upload different; without one, replay says it cannot check.
            self.digest = None if self.broken else self.hasher.hexdigest()
            self.buffer.clear()

    def summary(self) -> ElidedSummary:
        return ElidedSummary(length=self.length, closed=self.closed, sha256=self.digest)


class _Walker:
    """Cuts one direction's HTTP/2 bytes into frames across chunk boundaries: headers whole, payloads in pieces."""

    def __init__(self) -> None:
        self.preface = len(CONNECTION_PREFACE)
        self.head = bytearray()
        self.in_frame = False
        self.frame_type = self.flags = self.stream_id = self.length = 0
        self.left = 0  # payload bytes of the current frame not seen yet

    def _header(self, data: bytes | memoryview, pos: int) -> int:
        """Take frame header bytes from `data` at `pos`; where the frame's payload starts, or -1 while the header is
        not complete (its bytes so far are kept for the next chunk)."""
        take = min(9 - len(self.head), len(data) - pos)
        self.head += data[pos : pos + take]
        if len(self.head) < 9:
            return -1
        self._start(bytes(self.head))
        self.head.clear()
        return pos + take

    def _start(self, header: bytes) -> None:
        high, low, self.frame_type, self.flags, stream_id = _HEADER.unpack(header)
        self.length = self.left = (high << 8) | low
        self.stream_id = stream_id & 0x7FFFFFFF
        self.in_frame = True


class _Scanner(_Walker):
    """The client's side of one tunnel's inner connection, followed as it arrives."""

    def __init__(self, parse: Callable[[bytes], Message], config: ElisionConfig) -> None:
        super().__init__()
        self.uploads: dict[int, _Upload] = {}
        self.broken = ""
        self._parse = parse
        self._config = config
        self._hpack = hpack.Decoder(max_header_list_size=MAX_HEADER_LIST_SIZE)
        self._hpack.max_allowed_table_size = MAX_HEADER_TABLE_SIZE
        self._block = bytearray()  # the header block being received
        self._block_stream = 0
        self._block_end_stream = False
        self._frame = bytearray()  # a HEADERS or CONTINUATION frame's payload
        self._pad = -1  # a padded DATA frame's pad length once read; -1: not read yet
        self._touched: set[int] = set()
        self.new_streams = 0

    def scan(self, data: bytes) -> list[tuple[int, ElidedSummary]]:
        """Follow `data`; what each byte stream it touched had carried after it."""
        if self.broken:
            return []
        try:
            self._scan(memoryview(data))
        except Exception as err:  # a connection the scanner cannot follow is kept as it is
            self.broken = f"the tunnel's HTTP/2 could not be followed: {err}"
            for upload in self.uploads.values():
                upload.broken = upload.broken or self.broken
            return []
        touched, self._touched = self._touched, set()
        return [(s, self.uploads[s].summary()) for s in sorted(touched)]

    def _scan(self, data: memoryview) -> None:
        pos, size = 0, len(data)
        while pos < size:
            if self.preface:
                take = min(self.preface, size - pos)
                pos += take
                self.preface -= take
                continue
            if not self.in_frame:
                pos = self._header(data, pos)
                if pos < 0:
                    return
                self._pad = -1
                self._frame.clear()
                if self.left == 0:
                    self._frame_end()
                continue
            take = min(self.left, size - pos)
            self._payload(data[pos : pos + take])
            pos += take
            self.left -= take
            if self.left == 0:
                self._frame_end()

    def _payload(self, piece: memoryview) -> None:
        kind = self.frame_type
        if kind == HEADERS or kind == CONTINUATION:
            self._frame += piece
            return
        if kind != DATA:
            if kind == RST_STREAM:
                self._frame += piece
            return
        upload = self.uploads.get(self.stream_id)
        if upload is None or (upload.fate is Fate.KEEP and upload.broken):
            return
        # The frame's data lies between its pad length byte and its padding, when PADDED.
        offset = self.length - self.left  # where `piece` starts in the payload
        first, last = 0, len(piece)
        if self.flags & FLAG_PADDED:
            if offset == 0:
                self._pad = piece[0]
                first = 1
            end = self.length - self._pad
            last = max(first, min(last, end - offset))
        if last > first:
            upload.feed(piece[first:last], self._parse, self._config.max_message)
            self._touched.add(self.stream_id)

    def _frame_end(self) -> None:
        self.in_frame = False
        kind, flags, stream_id = self.frame_type, self.flags, self.stream_id
        if kind == HEADERS:
            body = bytes(self._frame)
            start, end = 0, len(body)
            if flags & FLAG_PADDED:
                start, end = 1, len(body) - body[0]
            if flags & FLAG_PRIORITY:
                start += 5
            self._block = bytearray(body[start:end])
            self._block_stream = stream_id
            self._block_end_stream = bool(flags & FLAG_END_STREAM)
        elif kind == CONTINUATION:
            self._block += self._frame
        elif kind == DATA:
            if flags & FLAG_END_STREAM:
                self._ended(stream_id)
            return
        elif kind == RST_STREAM:
            self._ended(stream_id)
            return
        else:
            return
        if len(self._block) > MAX_HEADER_BLOCK_SIZE:
            raise ValueError("header block too large")
        if flags & FLAG_END_HEADERS:
            fields = self._hpack.decode(bytes(self._block), raw=True)
            self._block.clear()
            path = next((v for k, v in fields if k == b":path"), None)
            if path == _ROUTER_PATH and self._block_stream not in self.uploads:
                self.uploads[self._block_stream] = _Upload()
                self._touched.add(self._block_stream)
                self.new_streams += 1
            if self._block_end_stream:
                self._ended(self._block_stream)

    def _ended(self, stream_id: int) -> None:
        upload = self.uploads.get(stream_id)
        if upload is not None:
            upload.end()
            self._touched.add(stream_id)


class _Rewriter(_Walker):
    """The same bytes again, as they are written: the elided streams' DATA emptied and marked (ELIDED frames).

    Frame headers are passed on whole (a header cut between two messages is held until it is complete) so an
    emptied frame's header can be changed; ELIDED frames go in only between frames and outside a header block.
    """

    def __init__(self, uploads: dict[int, _Upload]) -> None:
        super().__init__()
        self._uploads = uploads
        self._eliding: set[int] = set()  # streams whose DATA this rewriter empties from now on
        self._finished: set[int] = set()  # streams whose end (END_STREAM, RST_STREAM) this rewriter has passed
        self._message_left: dict[int, int] = {}  # per stream: bytes of its current gRPC message still to come
        self._prefix: dict[int, bytearray] = {}  # per stream: a gRPC message prefix cut between frames
        self._in_block = False
        self._pending: dict[int, ElidedSummary] = {}  # ELIDED frames to write at the next frame boundary
        self._dropping = False  # the current frame's payload is dropped
        self._pad = -1  # a kept padded DATA frame's pad length, once read
        self._keep = -1  # a split frame's bytes still to keep before the rest is dropped
        self._head_out = 0  # bytes of a frame header cut between messages already written as they came
        self.elided: dict[int, int] = {}  # per stream: DATA payload bytes dropped

    def rewrite(self, data: bytes, marks: list[tuple[int, ElidedSummary]]) -> bytes | None:
        """`data` as it is written (None: unchanged); `marks`: what the scanner said after these bytes."""
        out = bytearray()
        changed = False
        view = memoryview(data)
        pos, size = 0, len(data)
        while pos < size:
            if self.preface:
                take = min(self.preface, size - pos)
                out += view[pos : pos + take]
                pos += take
                self.preface -= take
                continue
            if not self.in_frame:
                if not self.head and not self._in_block and self._pending:
                    changed |= self._flush_pending(out)
                take = min(9 - len(self.head), size - pos)
                self.head += view[pos : pos + take]
                pos += take
                if len(self.head) < 9:
                    if self._may_elide():
                        changed = True  # held until the rest of the header comes: it may change
                    else:  # nothing to change: the bytes stay in the message they came in
                        out += self.head[self._head_out :]
                        self._head_out = len(self.head)
                    break
                header = bytes(self.head)
                self.head.clear()
                self._start(header)
                self._dropping = False
                self._keep = -1
                head_out, self._head_out = self._head_out, 0
                if self.frame_type == RST_STREAM or (
                    self.flags & FLAG_END_STREAM and self.frame_type in (DATA, HEADERS)
                ):
                    self._finished.add(self.stream_id)
                keep = self._kept_part(self.stream_id) if self.frame_type == DATA and not head_out else -1
                if keep == 0:
                    self._dropping = True
                    changed = True
                    out += _HEADER.pack(0, 0, DATA, self.flags & FLAG_END_STREAM, self.stream_id)
                elif keep > 0:  # split: the rest of a kept message, then the emptied rest of the frame
                    self._keep = keep
                    changed = True
                    out += _HEADER.pack(keep >> 8, keep & 0xFF, DATA, 0, self.stream_id)
                else:
                    out += header[head_out:]
                    self._pad = -1
                if self.frame_type == HEADERS:
                    self._in_block = not self.flags & FLAG_END_HEADERS
                elif self.frame_type == CONTINUATION:
                    self._in_block = not self.flags & FLAG_END_HEADERS
                if self.left == 0:
                    self.in_frame = False
                continue
            take = min(self.left, size - pos)
            if self._keep > 0:
                take = min(take, self._keep)
                piece = view[pos : pos + take]
                out += piece
                self._track_messages(piece)
                self._keep -= take
                if self._keep == 0:
                    self._eliding.add(self.stream_id)
                    self._dropping = True
                    out += _HEADER.pack(0, 0, DATA, self.flags & FLAG_END_STREAM, self.stream_id)
            elif self._dropping:
                self.elided[self.stream_id] = self.elided.get(self.stream_id, 0) + take
            else:
                piece = view[pos : pos + take]
                out += piece
                if self.frame_type == DATA:
                    self._track_messages(piece)
            pos += take
            self.left -= take
            if self.left == 0:
                self.in_frame = False
        for stream_id, summary in marks:
            if stream_id in self._eliding:
                self._pending[stream_id] = summary
        if not self.in_frame and not self.head and not self._in_block and self._pending:
            changed |= self._flush_pending(out)
        # A header held from the last message, or one held for the next, changes these bytes too.
        return bytes(out) if changed or out != data else None

    def _may_elide(self) -> bool:
        """Whether a frame of this connection may still be changed: a stream of it is (to be) elided and this
        rewriter has not passed its end yet (the scanner, ahead of it, may have)."""
        return any(u.fate is Fate.ELIDE and s not in self._finished for s, u in self._uploads.items())

    def _kept_part(self, stream_id: int) -> int:
        """How much of this DATA frame of `stream_id` is kept before the rest is emptied: 0 for all of it once the
        stream is being elided, -1 for none; elision starts at a gRPC message boundary, so that no message is
        split between kept and elided bytes (the frame is split there, unless it is padded: then at a later one)."""
        if stream_id in self._eliding:
            return 0
        upload = self._uploads.get(stream_id)
        if upload is None or upload.fate is not Fate.ELIDE or self._prefix.get(stream_id):
            return -1
        rest = self._message_left.get(stream_id, 0)  # of the message under way
        if rest == 0:
            self._eliding.add(stream_id)
            return 0
        if rest < self.length and not self.flags & FLAG_PADDED:
            return rest
        return -1

    def _track_messages(self, piece: memoryview) -> None:
        """Follow gRPC message boundaries in a kept DATA frame of a byte stream, its padding aside."""
        stream_id = self.stream_id
        if stream_id not in self._uploads:
            return
        if self.flags & FLAG_PADDED:
            offset = self.length - self.left  # where `piece` starts in the payload
            first = 0
            if offset == 0:
                self._pad = piece[0]
                first = 1
            last = max(first, min(len(piece), self.length - self._pad - offset))
            piece = piece[first:last]
        left = self._message_left.get(stream_id, 0)
        prefix = self._prefix.setdefault(stream_id, bytearray())
        pos, size = 0, len(piece)
        while pos < size:
            if left:
                take = min(left, size - pos)
                left -= take
                pos += take
                continue
            take = min(5 - len(prefix), size - pos)
            prefix += piece[pos : pos + take]
            pos += take
            if len(prefix) == 5:
                left = int.from_bytes(prefix[1:5], "big")
                prefix.clear()
        self._message_left[stream_id] = left

    def _flush_pending(self, out: bytearray) -> bool:
        for stream_id, summary in self._pending.items():
            out += elided_frame(stream_id, summary)
        self._pending.clear()
        return True


class _Replies(_Walker):
    """The exporter's side of the inner connection, by frame headers only: which streams it sent data on."""

    def __init__(self) -> None:
        super().__init__()
        self.preface = 0  # the server sends no preface
        self.answered: set[int] = set()

    def scan(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos < size:
            if not self.in_frame:
                pos = self._header(data, pos)
                if pos < 0:
                    return
                if self.frame_type == DATA and self.length:
                    self.answered.add(self.stream_id)
                if self.left == 0:
                    self.in_frame = False
                continue
            take = min(self.left, size - pos)
            pos += take
            self.left -= take
            if self.left == 0:
                self.in_frame = False


@dataclass(eq=False)
class _Tunnel:
    """One recorded router stream: which of its directions is the client's, and its walkers."""

    scanner: _Scanner
    rewriter: _Rewriter
    key: object  # the router token (both ends of a tunnel present it), or the call id without one
    replies: _Replies = field(default_factory=_Replies)
    client_sends: bool | None = None  # this end's own messages carry the client's bytes; None: not known yet

    def client_bytes(
        self, event: ClientMessage | ServerMessage, parse_frame: Callable[[bool, bytes], Message]
    ) -> Message | None:
        """The router frame of `event` if it carries the client's side of the inner connection (the exporter's
        side goes to `replies`)."""
        sent = isinstance(event, ClientMessage)
        frame = parse_frame(sent, event.data)
        if int(frame.frame_type) != _ROUTER_DATA:
            return None
        payload = frame.payload
        if self.client_sends is None:
            if not payload:
                return None
            self.client_sends = sent if payload[:1] == CONNECTION_PREFACE[:1] else not sent
        if sent == self.client_sends:
            return frame
        self.replies.scan(payload)
        return None


@dataclass(eq=False)
class _Held:
    event: AnyEvent
    tunnel: _Tunnel | None = None
    carries: bool = False  # the client's side of the inner connection
    # Its parsed router frame while it is written at once; dropped when it waits in the hold (it would hold the
    # payload twice), and parsed again when written.
    frame: Message | None = None
    marks: list[tuple[int, ElidedSummary]] = field(default_factory=list)


class Elision:
    """Decides, for the recorder, which events are written when, and with what bytes."""

    def __init__(
        self,
        config: ElisionConfig,
        parse_frame: Callable[[bool, bytes], Message],
        parse_request: Callable[[bytes], Message],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._parse_frame = parse_frame  # (sent by this peer, bytes) -> StreamRequest or StreamResponse
        self._parse_request = parse_request  # an inner byte stream's StreamRequest
        self._clock = clock
        self._tunnels: dict[int, _Tunnel] = {}
        self._held: deque[_Held] = deque()
        self._held_bytes = 0
        self._held_since = 0.0
        # Per upload (a tunnel's token and the inner stream: both ends of a tunnel see the same one), the HTTP/2
        # DATA bytes not stored at the end that dropped the most.
        self._elided: dict[tuple[object, int], int] = {}

    @property
    def elided_streams(self) -> int:
        """Uploads kept as length and digest (one per tunnel and stream, however many of its ends were recorded)."""
        return len(self._elided)

    @property
    def elided_bytes(self) -> int:
        return sum(self._elided.values())

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def submit(self, event: AnyEvent) -> list[AnyEvent]:
        """`event` as the recorder made it; the events to write now, in order (maybe none, maybe many)."""
        if isinstance(event, CallStart):
            if event.role is Role.ROUTER and event.method == ROUTER_STREAM:
                scanner = _Scanner(self._parse_request, self.config)
                token = bearer_token(event.metadata)
                self._tunnels[event.call_id] = _Tunnel(
                    scanner, _Rewriter(scanner.uploads), key=token if token is not None else event.call_id
                )
            return self._pass(_Held(event))
        tunnel = self._tunnels.get(event.call_id)
        held = _Held(event)
        if tunnel is not None and isinstance(event, ClientMessage | ServerMessage):
            try:
                frame = tunnel.client_bytes(event, self._parse_frame)
            except Exception:  # a router frame that does not decode is recorded as it came
                frame = None
            if frame is not None:
                held.tunnel, held.carries, held.frame = tunnel, True, frame
                held.marks = tunnel.scanner.scan(frame.payload)
            self._decide(tunnel)
        if isinstance(event, Status | Cancel) and tunnel is not None:
            for upload in tunnel.scanner.uploads.values():  # the tunnel ended: its streams with it
                upload.end()
                if upload.fate is Fate.UNDECIDED:
                    upload.fate = Fate.KEEP
        return self._pass(held)

    def flush(self) -> list[AnyEvent]:
        """Everything held, now (the recording is closing): undecided streams are kept."""
        for tunnel in self._tunnels.values():
            for upload in tunnel.scanner.uploads.values():
                if upload.fate is Fate.UNDECIDED:
                    upload.fate = Fate.KEEP
        return self._release()

    def _decide(self, tunnel: _Tunnel) -> None:
        threshold = self.config.threshold
        answered = tunnel.replies.answered
        for stream_id, upload in tunnel.scanner.uploads.items():
            if upload.fate is Fate.ELIDE:
                continue
            if upload.broken:
                upload.fate = Fate.KEEP
            elif upload.fate is Fate.UNDECIDED and stream_id in answered and upload.length <= (threshold or 0):
                # The exporter sends on it: a console, a serial port, a download, not an upload. Written now (and
                # elided from a message boundary on should it still pass the threshold).
                upload.fate = Fate.KEEP
            elif threshold is not None and upload.length > threshold:
                if upload.fate is Fate.KEEP:
                    log.info("a byte stream passed %d bytes after it was written: eliding the rest", threshold)
                upload.fate = Fate.ELIDE
            elif upload.ended and upload.fate is Fate.UNDECIDED:
                upload.fate = Fate.KEEP

    def _undecided(self) -> bool:
        return any(u.fate is Fate.UNDECIDED for t in self._tunnels.values() for u in t.scanner.uploads.values())

    def _pass(self, held: _Held) -> list[AnyEvent]:
        if not self._held:
            self._held_since = self._clock()
        self._held.append(held)
        data = getattr(held.event, "data", b"")
        self._held_bytes += len(data)
        if not self._undecided():
            return self._release()
        if self._held_bytes > self.config.hold_bytes or self._clock() - self._held_since > self.config.hold_seconds:
            return self.flush()
        held.frame = None
        return []

    def _release(self) -> list[AnyEvent]:
        out: list[AnyEvent] = []
        while self._held:
            held = self._held.popleft()
            out.append(self._rewritten(held))
            if isinstance(held.event, Status | Cancel):  # the call's last event: its walkers are done
                self._tunnels.pop(held.event.call_id, None)
        self._held_bytes = 0
        return out

    def expire(self) -> list[AnyEvent]:
        """What the hold releases as time passes (the recorder asks when `hold_seconds` are up)."""
        if self._held and self._clock() - self._held_since > self.config.hold_seconds:
            return self.flush()
        return []

    @classmethod
    def for_registry(cls, config: ElisionConfig, registry: Registry) -> Elision:
        request = registry.message_class(STREAM_REQUEST)
        response = registry.message_class(STREAM_RESPONSE)

        def parse_frame(sent: bool, data: bytes) -> Message:
            return (request if sent else response).FromString(data)

        return cls(config, parse_frame, request.FromString)

    def _rewritten(self, held: _Held) -> AnyEvent:
        event, tunnel = held.event, held.tunnel
        if tunnel is None or not held.carries:
            return event
        assert isinstance(event, ClientMessage | ServerMessage)
        frame = (
            held.frame if held.frame is not None else self._parse_frame(isinstance(event, ClientMessage), event.data)
        )
        payload = tunnel.rewriter.rewrite(frame.payload, held.marks)
        for stream_id, dropped in tunnel.rewriter.elided.items():
            key = (tunnel.key, stream_id)
            self._elided[key] = max(self._elided.get(key, 0), dropped)
        if payload is None:
            return event
        rewritten = type(frame)(payload=payload, frame_type=frame.frame_type)
        data = rewritten.SerializeToString()
        if isinstance(event, ClientMessage):
            return ClientMessage(call_id=event.call_id, seq=event.seq, t_ns=event.t_ns, data=data)
        return ServerMessage(call_id=event.call_id, seq=event.seq, t_ns=event.t_ns, data=data, forwarded=None)
