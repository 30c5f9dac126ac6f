"""Byte streams inside a replayed tunnel: chosen by identity, checked by content, answered in byte-level order.

The inner `RouterService/Stream` calls that `@exportstream` drivers and resources open are not matched like other
calls (by method and first request: a byte stream has no first request worth the name). Each is chosen by what it
is (`jsreplay.session.streams.StreamIdentity`: kind, driver path, method or encoding), the recordings of one
identity used up in recorded order. A resource stream is bound to its recording by the driver call that passes
its handle (the call that uses the resource), not by when it opened: until that call comes, the stream is given
the handle of the next unused recording of its identity, and the driver call is matched with any live handle
standing for any recorded one (`StreamBook.same`).

The bytes the client sends are compared with the recorded bytes as one sequence, whatever the chunking, as they
arrive (`ByteCheck`, which holds nothing but a few bytes of context): the first difference is a miss naming the
stream, the byte offset and a window of both sides. A recorded reply is sent once the client has sent the bytes
that preceded it in the recording, and a driver call that uses a resource answers once its stream got (and was
sent) what it had when the call was answered in the recording.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc

from jsreplay.cassette.errors import CassetteError
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import ROUTER_STREAM
from jsreplay.replay.playback import RecordingHasNoEnd, _status_code, sendable
from jsreplay.replay.script import ReadOnIndex, Script, ScriptedResponse, response_positions
from jsreplay.session.streams import (
    DATA,
    StreamIdentity,
    driver_paths_from,
    frames,
    resource_handle,
    stream_identity,
)
from jsreplay.session.volatile import IgnoreRule
from jsreplay.tunnel.calls import ElidedMark

log = logging.getLogger("jsreplay.replay")

# How long a resource stream waits for the driver call that uses its handle before it is served the recording it
# was given the handle of; and how long a driver call using a resource waits for that stream to catch up.
BIND_TIMEOUT_S = 10.0
HOLD_TIMEOUT_S = 10.0
WINDOW = 16  # bytes shown from the first difference on
CONTEXT = 8  # bytes shown before it


def printable(data: bytes) -> str:
    return "".join(chr(b) if 32 <= b < 127 else "." for b in data)


def window(before: bytes, after: bytes | None) -> str:
    """`6865|6c6c 'he|ll'`: hex and text around an offset ('|'), `<end>` where one side has no more bytes."""
    if after is None:
        return f"{before.hex()}|<end> '{printable(before)}|'"
    return f"{before.hex()}|{after.hex()} '{printable(before)}|{printable(after)}'"


@dataclass(frozen=True)
class Difference:
    offset: int | None  # None: somewhere (an elided upload's digest differs)
    recorded: str  # window() of the recorded side
    live: str
    note: str = ""

    def __str__(self) -> str:
        where = f"at byte {self.offset}" if self.offset is not None else "in its bytes"
        text = f"{where}: recorded {self.recorded}, got {self.live}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Elided:
    """A recorded upload kept as its length and SHA-256 (`jsreplay record` above its payload threshold); its first
    `kept` bytes may be in the recording as well (an upload that passed the threshold after they were written)."""

    length: int
    sha256: str | None  # hex; None when the recording stops before the upload's end
    kept: int = 0


class ByteCheck:
    """Compares the bytes a client sends with recorded ones, fed as they arrive, in any chunking.

    Walks the recorded chunks in order and holds only the one being compared (a recorded upload's chunks are read
    from the cassette as they are reached), a position in it, the last few live bytes for context, and, for an
    elided recording, a running SHA-256 of everything. `length`: the recorded bytes in all, if known (else summed
    when needed).
    """

    def __init__(self, recorded: Sequence[bytes], elided: Elided | None = None, *, length: int | None = None) -> None:
        self._chunks = recorded
        self._length = length
        self._index = 0  # the chunk the next live byte is compared with
        self._chunk = b""  # which is this
        self._pos = 0  # and where in it
        self._elided = elided
        self._hash = hashlib.sha256() if elided is not None else None
        self._recent = b""  # the last CONTEXT bytes that matched
        self.offset = 0  # live bytes compared so far
        self.difference: Difference | None = None
        self._advance(0)  # (an elided recording may keep its first bytes)

    def _advance(self, index: int) -> None:
        """Move to the first chunk from `index` on that is not empty (or past the last)."""
        count = len(self._chunks)
        while index < count:
            chunk = self._chunks[index]
            if chunk:
                self._index, self._chunk, self._pos = index, chunk, 0
                return
            index += 1
        self._index, self._chunk, self._pos = count, b"", 0

    @property
    def recorded_length(self) -> int:
        if self._elided is not None:
            return self._elided.length
        return self._length if self._length is not None else sum(len(c) for c in self._chunks)

    def _recorded_ahead(self, count: int) -> bytes | None:
        out = bytearray(self._chunk[self._pos : self._pos + count])
        index = self._index + 1
        while len(out) < count and index < len(self._chunks):
            out += self._chunks[index][: count - len(out)]
            index += 1
        return bytes(out) if out else None

    def feed(self, data: bytes) -> Difference | None:
        if self.difference is not None or not data:
            return self.difference
        elided = self._elided
        if elided is None:
            return self._compare(data)
        assert self._hash is not None
        if self.offset + len(data) > elided.length:
            cut = elided.length - self.offset
            self.difference = Difference(
                elided.length,
                window(b"", None),
                window(data[max(0, cut - CONTEXT) : cut], data[cut : cut + WINDOW]),
                f"the recording has {elided.length} bytes, kept as their SHA-256",
            )
            return self.difference
        self._hash.update(data)
        kept = elided.kept - self.offset  # recorded bytes still to compare one by one
        if kept > 0 and self._compare(data[:kept]) is not None:
            return self.difference
        self.offset += max(0, len(data) - max(kept, 0))
        return None

    def _compare(self, data: bytes) -> Difference | None:
        done = 0
        while done < len(data):
            if not self._chunk:  # past the last chunk: the client sends more than was recorded
                self.difference = Difference(
                    self.offset, window(self._recent, None), window(self._recent, data[done : done + WINDOW])
                )
                return self.difference
            chunk = self._chunk
            size = min(len(chunk) - self._pos, len(data) - done)
            mine, theirs = data[done : done + size], chunk[self._pos : self._pos + size]
            if mine != theirs:
                at = next(i for i in range(size) if mine[i] != theirs[i])
                before = (self._recent + mine[:at])[-CONTEXT:]
                self._pos += at
                self.offset += at
                self.difference = Difference(
                    self.offset,
                    window(before, self._recorded_ahead(WINDOW)),
                    window(before, data[done + at : done + at + WINDOW]),
                )
                return self.difference
            self._recent = (self._recent + mine[-CONTEXT:])[-CONTEXT:]
            done += size
            self.offset += size
            self._pos += size
            if self._pos == len(chunk):
                self._advance(self._index + 1)
        return None

    def end(self) -> Difference | None:
        """The client ended its stream: a difference if it sent fewer bytes than recorded (or other, if elided)."""
        if self.difference is not None:
            return self.difference
        if self._elided is not None:
            assert self._hash is not None
            if self.offset < self._elided.length:
                self.difference = Difference(
                    self.offset,
                    "<elided>",
                    window(self._recent, None),
                    f"the client ended after {self.offset} of the {self._elided.length} recorded bytes",
                )
            elif self._elided.sha256 is not None and self._hash.hexdigest() != self._elided.sha256:
                self.difference = Difference(
                    None,
                    f"sha256:{self._elided.sha256}",
                    f"sha256:{self._hash.hexdigest()}",
                    f"same length ({self.offset} bytes) but other bytes; the recording kept only their SHA-256, "
                    "so the first differing byte is not known",
                )
            return self.difference
        ahead = self._recorded_ahead(WINDOW)
        if ahead is not None:
            self.difference = Difference(
                self.offset,
                window(self._recent, ahead),
                window(self._recent, None),
                f"the client ended its stream after {self.offset} of {self.recorded_length} recorded bytes",
            )
        return self.difference


class StreamDiffers(Exception):
    """A driver call is answered no further: the byte stream it uses differed from its recording."""


@dataclass(eq=False)
class RecordedStream:
    """One recorded inner byte stream, with what serving and checking it needs.

    Per client request and per response it holds a few numbers, not bytes: the client's recorded bytes are
    `payloads`, read from the cassette when the check reaches them if they were big (see `InnerMessages`).
    """

    script: Script
    identity: StreamIdentity
    handle: str | None  # a resource stream's handle, from its recorded initial metadata
    payloads: Sequence[bytes]  # per client request, its DATA payload (b"" for other frames), decoded when indexed
    client_length: int  # DATA bytes the client sent in all
    client_seqs: Sequence[int]  # the seq of each request
    client_bytes: Sequence[int]  # DATA bytes the client had sent after each request (prefix sums)
    after_bytes: Sequence[int]  # per response: client DATA bytes recorded before it
    after_end: Sequence[bool]  # per response: it came after the client's closing frame
    response_seqs: Sequence[int]
    elided: Elided | None = None
    used: bool = False
    reserved: bool = False

    def starts_with(self, data: bytes) -> bool:
        """Whether the client's recorded bytes start with `data` (an elided recording cannot tell: yes)."""
        if self.elided is not None:
            return True
        head = bytearray()
        for chunk in self.payloads:
            if len(head) >= len(data):
                break
            head += chunk[: len(data) - len(head)]
        return bytes(head) == data

    def bytes_before(self, seq: int) -> int:
        """Client DATA bytes recorded before the event numbered `seq` (of any call in the tunnel)."""
        count = bisect.bisect_left(self.client_seqs, seq)
        kept = self.client_bytes[count - 1] if count else 0
        mark = _mark_before(self.script.elided, seq)
        return max(kept, mark.length) if mark is not None else kept

    def responses_before(self, seq: int) -> int:
        return bisect.bisect_left(self.response_seqs, seq)  # increasing, as recorded

    def check(self) -> ByteCheck:
        return ByteCheck(self.payloads, self.elided, length=self.client_length)


class Payloads(ReadOnIndex[bytes]):
    """The DATA payloads of a byte stream's client messages, each decoded when indexed (b"" for other frames)."""

    __slots__ = ("_messages", "_registry")

    def __init__(self, messages: Sequence[bytes], registry: Registry) -> None:
        self._messages = messages
        self._registry = registry

    def __len__(self) -> int:
        return len(self._messages)

    def _item(self, index: int) -> bytes:
        ((frame_type, payload),) = frames(self._registry, (self._messages[index],), sent_by_client=True)
        return payload if frame_type == DATA else b""


def recorded_stream(script: Script, registry: Registry, names: dict[str, str]) -> RecordedStream:
    """What serving `script` needs, from one pass over its client messages (each read, decoded and dropped)."""
    cumulative = array("q")
    ends: list[bool] = []
    total, ended = 0, False
    for frame_type, payload in frames(registry, script.requests, sent_by_client=True):
        if frame_type == DATA:
            total += len(payload)
        else:
            ended = True
        cumulative.append(total)
        ends.append(ended)
    afters, response_seqs = response_positions(script.responses)
    after_bytes = array("q", (cumulative[a - 1] if a else 0 for a in afters))
    after_end = [ends[a - 1] if a else False for a in afters]
    if script.elided:  # the elided part of the upload: how far the recording said the client had got
        for index, seq in enumerate(response_seqs):
            mark = _mark_before(script.elided, seq)
            if mark is not None:
                after_bytes[index] = max(after_bytes[index], mark.length)
                after_end[index] = after_end[index] or mark.closed
    seqs = script.request_seqs if len(script.request_seqs) == len(cumulative) else ()
    return RecordedStream(
        script=script,
        identity=stream_identity(script.request_metadata, names),
        handle=resource_handle(script.initial_metadata),
        payloads=Payloads(script.requests, registry),
        client_length=total,
        client_seqs=seqs,
        client_bytes=cumulative if seqs else (),
        after_bytes=after_bytes,
        after_end=after_end,
        response_seqs=response_seqs,
        elided=elided_of(script, total),
    )


def _mark_before(marks: Sequence[ElidedMark], seq: int) -> ElidedMark | None:
    """The last of `marks` before the event numbered `seq`."""
    found = None
    for mark in marks:
        if mark.seq >= seq:
            break
        found = mark
    return found


def elided_of(script: Script, kept: int) -> Elided | None:
    """What the recording kept of an elided upload; `kept`: its bytes in the recording (before elision began)."""
    if not script.elided:
        return None
    last = script.elided[-1]
    return Elided(last.length, last.sha256, kept)


@dataclass(eq=False)
class LiveStream:
    """A live inner byte stream being served."""

    identity: StreamIdentity
    handle: str | None = None
    recording: RecordedStream | None = None
    received: int = 0  # DATA bytes the client sent
    sent: int = 0  # recorded responses written
    closed: bool = False  # the client sent its closing frame, half-closed, or went away
    miss: str | None = None
    failure: CassetteError | None = None  # the recorded bytes could not be read back (the file changed)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    bound: asyncio.Event = field(default_factory=asyncio.Event)

    def caught_up(self, received: int, sent: int = 0, end: bool = False) -> bool:
        """Whether the client has sent `received` bytes (and closed, if `end`) and been sent `sent` replies; or the
        stream is over (closed, or differing), when there is nothing more to wait for."""
        if self.miss is not None or self.closed:
            return True
        return self.received >= received and self.sent >= sent and not end

    def notify(self) -> None:
        self.changed.set()

    async def until(self, ready: Callable[[], bool], timeout: float | None = None) -> bool:
        async def wait() -> None:
            while not ready():
                self.changed.clear()
                await self.changed.wait()

        if timeout is None:
            await wait()
            return True
        try:
            await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            return False
        return True


class StreamBook:
    """The byte streams of one replayed tunnel: recordings by identity, live streams, resource handles."""

    def __init__(
        self,
        scripts: Sequence[Script],
        registry: Registry,
        *,
        check: bool,
        ignores: Sequence[str],
        on_miss: Callable[[str, str], None],
        on_used: Callable[[Script], None],
        unfinished_timeout: float,
    ) -> None:
        self._registry = registry
        self._on_miss = on_miss
        self._on_used = on_used
        self._unfinished_timeout = unfinished_timeout
        self._check = check
        self._rules = tuple(IgnoreRule(p, "--ignore") for p in ignores)
        self.names: dict[str, str] = {}
        for script in scripts:
            if script.method.endswith("/GetReport") and script.responses:
                info = registry.method(script.method)
                if info is not None:
                    self.names = driver_paths_from(registry, info.response_type, script.responses[0].data)
                break
        self.recorded: list[RecordedStream] = []
        for script in scripts:
            if script.method != ROUTER_STREAM:
                continue
            try:
                self.recorded.append(recorded_stream(script, registry, self.names))
            except ProtocolError as err:
                log.warning("%s: %s", script.key, err)
        self._by_handle = {r.handle: r for r in self.recorded if r.handle}
        self._waiting: dict[str, LiveStream] = {}  # handed-out handles of resource streams not bound yet
        self._handed: set[str] = set()  # every handle handed out
        self.unchecked: dict[str, str] = {}  # identity -> why its bytes are not checked

    # ------------------------------------------------------------------------------------------ checking

    def _checked(self, identity: StreamIdentity, recording: RecordedStream) -> bool:
        if recording.elided is not None and recording.elided.sha256 is None:
            self.unchecked.setdefault(
                str(identity), "the recording stops before this upload ended, so it has no digest to check against"
            )
            return False
        if not self._check:
            self.unchecked.setdefault(str(identity), "--match order")
            return False
        rule = next((r for r in self._rules if r.matches(identity.path)), None)
        if rule is not None:
            self.unchecked.setdefault(str(identity), f"--ignore {rule.pattern}")
            return False
        return True

    def same(self, recorded: Any, live: Any) -> bool:
        """Whether a driver call's live value may stand for a recorded one: a handle this replay handed out for a
        resource stream, for any recorded resource handle (the stream is bound to the call's recording)."""
        return isinstance(recorded, str) and recorded in self._by_handle and live in self._handed

    # ------------------------------------------------------------------------------------------ binding

    def _listing(self) -> str:
        counts: dict[StreamIdentity, list[int]] = {}
        for r in self.recorded:
            entry = counts.setdefault(r.identity, [0, 0])
            entry[0] += 1
            entry[1] += 0 if r.used else 1
        shown = [f"{identity} ({n} recorded, {unused} unused)" for identity, (n, unused) in sorted(counts.items())]
        return "; ".join(shown[:8]) + (" …" if len(shown) > 8 else "") or "none"

    def _nearest(self, identity: StreamIdentity) -> str:
        def distance(other: StreamIdentity) -> tuple[bool, bool, bool, str]:
            return (
                other.kind != identity.kind,
                other.target != identity.target,
                other.method != identity.method,
                str(other),
            )

        near = sorted({r.identity for r in self.recorded}, key=distance)
        return ", ".join(str(i) for i in near[:3]) or "none"

    def _choose(self, identity: StreamIdentity) -> tuple[list[RecordedStream], str]:
        candidates = [r for r in self.recorded if r.identity == identity]
        if not candidates:
            return [], (
                f"jsreplay: no recording of byte stream {identity} ({ROUTER_STREAM} inside the tunnel); "
                f"nearest: {self._nearest(identity)}; recorded streams: {self._listing()}"
            )
        unused = [r for r in candidates if not r.used]
        if not unused:
            return [], (
                f"jsreplay: every recording of byte stream {identity} is used up ({len(candidates)} recorded: "
                f"{', '.join(r.script.key for r in candidates[:4])})"
            )
        return unused, ""

    def _bind(self, live: LiveStream, recording: RecordedStream) -> None:
        recording.used = True
        live.recording = recording
        self._on_used(recording.script)
        live.bound.set()
        live.notify()

    def bind_call(self, script: Script, live_request: bytes | None) -> list[LiveStream]:
        """The live resource streams a matched driver call uses, bound to the recordings its recording used."""
        if not self._by_handle or not live_request or not script.requests:
            return []
        recorded_request = script.requests[0]
        recorded = sorted(
            (recorded_request.find(h.encode()), h) for h in self._by_handle if h.encode() in recorded_request
        )
        handed = sorted((live_request.find(h.encode()), h) for h in self._handed if h.encode() in live_request)
        streams: list[LiveStream] = []
        for (_, recorded_handle), (_, live_handle) in zip(recorded, handed, strict=False):
            recording = self._by_handle[recorded_handle]
            live = self._waiting.pop(live_handle, None)
            if live is None:
                continue  # bound before (a second call with the same handle): nothing to hold for
            if recording.used:
                live.miss = (
                    f"jsreplay: byte stream {live.identity} is used by {script.key}, whose recorded resource "
                    f"{recording.script.key} was served already"
                )
                self._on_miss(ROUTER_STREAM, live.miss)
                live.bound.set()
                live.notify()
                continue
            self._bind(live, recording)
            streams.append(live)
        return streams

    def hold(
        self, script: Script, streams: list[LiveStream]
    ) -> Callable[[int, ScriptedResponse], Awaitable[None]] | None:
        """What a driver call using `streams` waits for before each response: each stream to have got the client
        bytes, and been sent the replies, that it had when the recorded call sent that response."""
        if not streams:
            return None

        async def before(index: int, response: ScriptedResponse) -> None:
            for live in streams:
                recording = live.recording
                assert recording is not None
                wanted_bytes = recording.bytes_before(response.seq)
                wanted_sent = recording.responses_before(response.seq)
                done = await live.until(
                    partial(live.caught_up, wanted_bytes, wanted_sent),
                    HOLD_TIMEOUT_S,
                )
                if live.failure is not None:
                    raise live.failure
                if live.miss is not None:
                    raise StreamDiffers(f"{live.miss} (used by {script.method} {script.key})")
                if not done:
                    log.warning(
                        "jsreplay: %s waited %gs for byte stream %s (%d of %d bytes); answered anyway",
                        script.key,
                        HOLD_TIMEOUT_S,
                        live.identity,
                        live.received,
                        wanted_bytes,
                    )

        return before

    # ------------------------------------------------------------------------------------------ serving

    async def serve(self, context: grpc.aio.ServicerContext) -> None:
        metadata = tuple(context.invocation_metadata() or ())
        identity = stream_identity(metadata, self.names)
        unused, explanation = self._choose(identity)
        if not unused:
            self._on_miss(ROUTER_STREAM, explanation)
            await context.abort(grpc.StatusCode.UNKNOWN, explanation)
            return
        live = LiveStream(identity)
        metadata_sent = False
        first: Any = None  # a message read to choose the recording, not yet checked
        if identity.kind == "resource" and self._by_handle:
            given = next((r for r in unused if not r.reserved), unused[0])
            given.reserved = True
            try:
                if given.handle:
                    live.handle = given.handle
                    self._handed.add(given.handle)
                    self._waiting[given.handle] = live
                if given.script.initial_metadata is not None:
                    await context.send_initial_metadata(sendable(given.script.initial_metadata))
                    metadata_sent = True
                try:
                    await asyncio.wait_for(live.bound.wait(), BIND_TIMEOUT_S)
                except TimeoutError:  # no driver call used it: serve the recording whose handle it has
                    if self._waiting.pop(given.handle or "", None) is live and not given.used:
                        self._bind(live, given)
            finally:
                given.reserved = False
            if live.recording is None:
                reason = live.miss or (
                    f"jsreplay: byte stream {identity} (handle {live.handle}) was not used by a driver call in "
                    f"{BIND_TIMEOUT_S:g}s, and the recording it was given is used up"
                )
                if live.miss is None:
                    self._on_miss(ROUTER_STREAM, reason)
                await context.abort(grpc.StatusCode.UNKNOWN, reason)
                return
        else:
            metadata_sent, first = await self._bind_driver(live, unused, context)
            if first is grpc.aio.EOF:
                return
        assert live.recording is not None
        await self._play(live, live.recording, context, metadata_sent=metadata_sent, first=first)

    async def _bind_driver(
        self, live: LiveStream, unused: list[RecordedStream], context: grpc.aio.ServicerContext
    ) -> tuple[bool, Any]:
        """Bind a driver stream: to the first unused recording of its identity, unless there are several and the
        client speaks first; then to the first whose recorded bytes start with what the client sent first (a
        skipped step leaves a recording of the same identity unused, not the next stream served its bytes)."""
        head = unused[0]
        speaks_first = bool(head.script.responses) and head.after_bytes[0] == 0 and not head.after_end[0]
        if len(unused) == 1 or speaks_first:
            self._bind(live, head)
            return False, None
        metadata_sent = False
        if head.script.initial_metadata is not None:  # the client waits for it before it sends
            await context.send_initial_metadata(sendable(head.script.initial_metadata))
            metadata_sent = True
        first = await context.read()
        data = b""
        if first is not grpc.aio.EOF:
            try:
                data = b"".join(p for t, p in frames(self._registry, (first,), sent_by_client=True) if t == DATA)
            except ProtocolError:
                data = b""
        chosen = next((r for r in unused if data and r.starts_with(data)), head)
        self._bind(live, chosen)
        return metadata_sent, first

    async def _read(
        self, live: LiveStream, check: ByteCheck | None, context: grpc.aio.ServicerContext, first: Any = None
    ) -> None:
        recording = live.recording
        assert recording is not None

        def differs(difference: Difference) -> None:
            live.miss = (
                f"jsreplay: byte stream {live.identity} ({recording.script.key}) differs from the recording "
                f"{difference}"
            )
            self._on_miss(ROUTER_STREAM, live.miss)

        graceful = False
        try:
            while live.miss is None:
                message, first = (first, None) if first is not None else (await context.read(), None)
                if message is grpc.aio.EOF:
                    graceful = True
                    break
                for frame_type, payload in frames(self._registry, (message,), sent_by_client=True):
                    if frame_type != DATA:
                        graceful = live.closed = True
                        continue
                    if check is not None and (difference := check.feed(payload)) is not None:
                        differs(difference)
                        break
                    live.received += len(payload)
                live.notify()
        except ProtocolError as err:
            live.miss = f"jsreplay: byte stream {live.identity}: {err}"
            self._on_miss(ROUTER_STREAM, live.miss)
        except CassetteError as err:  # reading the recorded bytes back: the stream ends, the call says why
            live.failure = err
        except Exception as err:  # the call ended (aborted, cancelled) while we were reading
            log.debug("byte stream reader stopped: %r", err)
        finally:
            try:
                if graceful and check is not None and live.miss is None and (difference := check.end()) is not None:
                    differs(difference)
            except CassetteError as err:
                live.failure = err
            live.closed = True
            live.notify()

    async def _play(
        self,
        live: LiveStream,
        recording: RecordedStream,
        context: grpc.aio.ServicerContext,
        *,
        metadata_sent: bool,
        first: Any = None,
    ) -> None:
        script = recording.script
        check = recording.check() if self._checked(live.identity, recording) else None
        reader = asyncio.create_task(self._read(live, check, context, first))
        timeout = self._unfinished_timeout if script.cut else None
        try:
            if not metadata_sent and script.initial_metadata is not None:
                await context.send_initial_metadata(sendable(script.initial_metadata))
            for index, response in enumerate(script.responses):
                need_bytes, need_end = recording.after_bytes[index], recording.after_end[index]
                ready = await live.until(
                    partial(live.caught_up, need_bytes, 0, need_end),
                    timeout,
                )
                if live.failure is not None:
                    raise live.failure
                if live.miss is not None:
                    break
                if not ready or (live.closed and live.received < need_bytes):
                    if script.cut:
                        raise RecordingHasNoEnd(script, live.sent)
                await context.write(response.data)
                live.sent = index + 1
                live.notify()
            if live.miss is None:
                await live.until(lambda: live.closed or live.miss is not None, timeout)
            if live.failure is not None:
                raise live.failure
            if live.miss is not None:
                await context.abort(grpc.StatusCode.UNKNOWN, live.miss)
                return
            if script.cut:
                raise RecordingHasNoEnd(script, live.sent)
            if script.code is None:
                await asyncio.Event().wait()  # recorded as cancelled or closed with the connection
            code = _status_code(script.code)
            if code is not grpc.StatusCode.OK:
                await context.abort(code, script.details, trailing_metadata=sendable(script.trailing_metadata))
            context.set_trailing_metadata(sendable(script.trailing_metadata))
        finally:
            if not reader.done():
                reader.cancel()
