"""Each tunnel's bytes once: a router stream's message is written as a reference to its other end's copy.

Both ends of a tunnel (the client's and the exporter's `RouterService/Stream` calls, which present the same
router token) usually go through one recording proxy, and the router passes what one end sends to the other
unchanged (StreamRequest and StreamResponse have the same fields, so the bytes are the same). So every frame
would be stored twice: once as the sender's client message, once as the receiver's server message.

`TunnelDedupe` sees each event just before and just after the writer writes it (the recorder's one place that
writes) and pairs a message with a recent message of a peer call (same token, the other kind) whose stored data
is the same bytes. It does no I/O: the writer checks again that the data is the same, and writes the reference.

Memory is bounded when only one end is recorded (nothing ever matches): each call keeps at most `max_pending`
messages and `max_pending_bytes` of data per kind, the newest (a larger message is not kept), and forgets them
when it ends.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from jsreplay.cassette.format import StoredMessage, WrittenRecord
from jsreplay.cassette.model import AnyEvent, CallStart, Cancel, ClientMessage, Role, ServerMessage, Status
from jsreplay.session.tokens import bearer_token

# How far into a peer's unmatched messages a message is looked for: the router passes frames on in order, so
# the match is the first one unless a frame was lost (an end that left) or events were written out of order.
PEEK = 8
MAX_PENDING = 256
MAX_PENDING_BYTES = 8 << 20
# Shorter data is stored as is: a reference ([offset, length], up to 13 bytes) would save little or nothing.
MIN_SHARED_BYTES = 16


@dataclass
class _Pending:
    """One call's messages of one kind, written with their data and not yet matched, oldest first."""

    messages: deque[StoredMessage] = field(default_factory=deque)
    data_bytes: int = 0


class TunnelDedupe:
    """Pairs router messages with their other end's copy, by token: `before_write` and `after_write` around
    each `CassetteWriter.write`, in the order events are written."""

    def __init__(
        self,
        *,
        peek: int = PEEK,
        max_pending: int = MAX_PENDING,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        min_bytes: int = MIN_SHARED_BYTES,
    ) -> None:
        self._peek = peek
        self._max_pending = max_pending
        self._max_pending_bytes = max_pending_bytes
        self._min_bytes = min_bytes
        self._token: dict[int, str] = {}  # router call -> its token
        self._calls: dict[str, list[int]] = {}  # token -> its router calls, in start order
        # (call, True for client messages / False for server messages) -> unmatched messages
        self._pending: dict[tuple[int, bool], _Pending] = {}

    def pending_bytes(self) -> int:
        """The data held for messages not yet matched, over every call."""
        return sum(p.data_bytes for p in self._pending.values())

    def before_write(self, event: AnyEvent) -> StoredMessage | None:
        """What the writer may write this event as a reference to (`CassetteWriter.write(same_as=)`): an
        unmatched message of the other end of its tunnel, of the other kind, with the same data. A router call's
        start registers its token; any other event gets None."""
        if isinstance(event, ClientMessage | ServerMessage):
            token = self._token.get(event.call_id)
            if token is None or len(event.data) < self._min_bytes:
                return None
            other_kind = not isinstance(event, ClientMessage)  # what one end sent, the other received
            for peer in self._calls[token]:
                if peer == event.call_id:
                    continue
                pending = self._pending.get((peer, other_kind))
                if pending is None:
                    continue
                for i, message in enumerate(pending.messages):
                    if i == self._peek:
                        break
                    if message.data == event.data:
                        for _ in range(i + 1):  # the match, and what the other end never got
                            pending.data_bytes -= len(pending.messages.popleft().data)
                        return message
            return None
        if isinstance(event, CallStart) and event.role is Role.ROUTER:
            token = bearer_token(event.metadata)
            if token is not None:
                self._token[event.call_id] = token
                self._calls.setdefault(token, []).append(event.call_id)
        return None

    def after_write(self, stored: AnyEvent, record: WrittenRecord) -> None:
        """The writer wrote `stored` (the event as stored) at `record`: a router message written with its data
        waits for its other end; a call's end forgets the call."""
        if isinstance(stored, ClientMessage | ServerMessage):
            if record.reference or stored.call_id not in self._token:
                return  # a reference is never referred to: no chains
            size = len(stored.data)
            if size < self._min_bytes or size > self._max_pending_bytes:
                return
            key = (stored.call_id, isinstance(stored, ClientMessage))
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = _Pending()
            pending.messages.append(StoredMessage(offset=record.offset, length=record.length, data=stored.data))
            pending.data_bytes += size
            while len(pending.messages) > self._max_pending or pending.data_bytes > self._max_pending_bytes:
                pending.data_bytes -= len(pending.messages.popleft().data)  # the oldest: its peer is not coming
        elif isinstance(stored, Status | Cancel):
            self._forget(stored.call_id)

    def _forget(self, call_id: int) -> None:
        token = self._token.pop(call_id, None)
        if token is None:
            return
        calls = self._calls[token]
        calls.remove(call_id)
        if not calls:
            del self._calls[token]
        self._pending.pop((call_id, True), None)
        self._pending.pop((call_id, False), None)
