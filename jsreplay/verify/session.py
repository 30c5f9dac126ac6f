"""Acting as the recorded client inside one tunnel: the recorded inner calls, sent in recorded causal order.

Every client action of the recording (opening a call, sending its k-th request, half-closing, cancelling) has a
place in the tunnel's event order (`seq`, from the tunnel decoder). Before verify takes an action, every inner
call must have got as far, live, as it had in the recording at that point: opened, sent and half-closed the
same requests, received as many responses (for byte streams: as many bytes), ended if it had ended. That is
the recorded client's causal order, whatever the calls are: sequential DriverCalls, a byte stream exchanged
chunk by chunk, a LogStream kept open while other calls run. A wait gives up after `timeout` seconds without
progress, so a silent exporter costs one timeout per stuck step, not a hang.

Requests are sent with their recorded bytes and application metadata, after `UuidMap` has replaced recorded
driver UUIDs with the live exporter's (learned from the live GetReport response).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import GET_REPORT, GET_REPORT_RESPONSE, ROUTER_STREAM, STREAM_RESPONSE, RouterFrameType
from jsreplay.tunnel.calls import InnerCall
from jsreplay.tunnel.events import Metadata, application_metadata
from jsreplay.verify.handles import Place, live_value, metadata_value
from jsreplay.verify.uuids import UuidMap

log = logging.getLogger("jsreplay.verify")


class LiveEnd(enum.Enum):
    STATUS = "status"  # the exporter ended the call with a status (OK or an error)
    CANCELLED = "cancelled"  # verify cancelled it where the recorded client had
    CLOSED = "closed"  # left open as recorded; verify closed it with the connection at the end
    NO_ANSWER = "no_answer"  # verify gave up waiting, or the connection failed under it
    NOT_SENT = "not_sent"  # never opened (the tunnel never came, or the request cannot be replayed)


@dataclass
class LiveCall:
    """What one recorded inner call became when verify made it."""

    recorded: InnerCall
    sent_metadata: Metadata = ()
    requests: list[bytes] = field(default_factory=list)
    responses: list[bytes] = field(default_factory=list)
    initial_metadata: Metadata | None = None
    trailing_metadata: Metadata = ()
    code: int | None = None
    details: str = ""
    end: LiveEnd = LiveEnd.NOT_SENT
    note: str = ""  # why it ended as it did, when that is not the exporter's status
    started: bool = False
    headers: bool = False  # its initial metadata arrived
    half_closed: bool = False
    finished: bool = False
    data_bytes: int = 0  # byte streams: DATA payload bytes received
    control_frames: int = 0  # byte streams: frames other than DATA and PING

    @property
    def method(self) -> str:
        return self.recorded.method or ""


def _code_number(code: grpc.StatusCode) -> int:
    value = code.value[0]
    return int(value) if isinstance(value, int) else 2


class _Measure:
    """How far a recorded call had got before a given seq."""

    def __init__(self, registry: Registry, call: InnerCall) -> None:
        self.call = call
        self.byte_stream = call.method == ROUTER_STREAM
        # (seq, bytes, control) per response, cumulative, for byte streams.
        self._frames: list[tuple[int, int, int]] = []
        if self.byte_stream:
            total = control = 0
            for message in call.response_messages:
                size, ctrl = frame_measure(registry, message.data)
                total += size
                control += ctrl
                self._frames.append((message.seq, total, control))

    def satisfied_by(self, live: LiveCall, seq: int | None) -> bool:
        """True when `live` has got as far as the recording had before `seq` (None: the whole recording)."""
        rec = self.call

        def before(s: int | None) -> bool:
            return s is not None and (seq is None or s < seq)

        if live.finished:
            return True
        if before(rec.opened_seq) and not live.started:
            return False
        if before(rec.closed_seq) and rec.closed_seq is not None:
            return False
        if sum(1 for m in rec.request_messages if before(m.seq)) > len(live.requests):
            return False
        if before(rec.request_ended_seq) and not live.half_closed:
            return False
        if before(rec.response_headers_seq) and not rec.trailers_only and not live.headers:
            return False
        if self.byte_stream:
            got = [(b, c) for s, b, c in self._frames if before(s)]
            need_bytes, need_control = got[-1] if got else (0, 0)
            return live.data_bytes >= need_bytes and live.control_frames >= need_control
        return len(live.responses) >= sum(1 for m in rec.response_messages if before(m.seq))


def frame_measure(registry: Registry, data: bytes) -> tuple[int, int]:
    """A byte stream's message as (DATA payload bytes, 1 if it is a control frame other than PING)."""
    try:
        frame = registry.parse(STREAM_RESPONSE, data)
    except ProtocolError:
        return len(data), 0
    kind = int(getattr(frame, "frame_type", 0))
    if kind == RouterFrameType.DATA:
        return len(getattr(frame, "payload", b"")), 0
    return 0, 0 if kind == RouterFrameType.PING else 1


class TunnelSession:
    """Drives the recorded inner calls of one tunnel through `channel` (connected through the exporter)."""

    def __init__(
        self,
        calls: list[InnerCall],
        registry: Registry,
        uuids: UuidMap,
        *,
        timeout: float,
        handouts: list[Place] | None = None,
        on_activity: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self._handouts: dict[tuple[int, str, int], list[Place]] = {}
        for place in handouts or ():
            self._handouts.setdefault((place.call, place.part, place.index), []).append(place)
        self.uuids = uuids
        self.timeout = timeout
        self.live = [LiveCall(recorded=c) for c in calls]
        self._measures = [_Measure(registry, c) for c in calls]
        self._on_activity = on_activity
        self._changed = asyncio.Event()
        self._open: list[tuple[grpc.aio.StreamStreamCall, LiveCall]] = []
        self._readers: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------------------------------ waiting

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
        self._on_activity()

    async def _wait(self, predicate: Callable[[], bool]) -> bool:
        """Wait until `predicate()`; False after `timeout` seconds in which nothing in the tunnel moved."""
        while not predicate():
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), self.timeout)
            except TimeoutError:
                return predicate()
        return True

    def _reached(self, seq: int) -> bool:
        return all(m.satisfied_by(live, seq) for m, live in zip(self._measures, self.live, strict=True))

    async def _barrier(self, seq: int) -> bool:
        return await self._wait(lambda: self._reached(seq))

    # ------------------------------------------------------------------------------------------ driving

    async def run(self, channel: grpc.aio.Channel) -> list[LiveCall]:
        try:
            await asyncio.gather(*(self._drive(channel, i) for i in range(len(self.live))))
        finally:
            # Calls the recorded client left open end with the connection, as they did when recorded.
            for call, live in self._open:
                if not live.finished:
                    live.end = LiveEnd.CLOSED
                    call.cancel()
            if self._readers:
                await asyncio.wait(self._readers, timeout=self.timeout)
            for task in self._readers:
                task.cancel()
        return self.live

    def _types(self, method: str) -> tuple[str | None, str | None]:
        info = self.registry.method(method)
        return (info.request_type, info.response_type) if info is not None else (None, None)

    async def _drive(self, channel: grpc.aio.Channel, index: int) -> None:
        live = self.live[index]
        try:
            await self._drive_call(channel, index)
        except Exception as err:
            # A recorded call grpc.aio refuses to make (metadata it rejects, say): report it, and let the calls
            # waiting for it go on.
            log.debug("%s: %r", live.method, err)
            live.note = live.note or f"verify could not make this call: {err}"
            if not live.finished:
                live.end = LiveEnd.NO_ANSWER if live.started else LiveEnd.NOT_SENT
                live.finished = True
            self._notify()

    async def _drive_call(self, channel: grpc.aio.Channel, index: int) -> None:
        live = self.live[index]
        rec = live.recorded
        method = live.method
        if any(m.compressed for m in rec.request_messages):
            live.note = "its recorded requests are compressed; verify sends identity-encoded messages only"
            live.finished = True
            self._notify()
            return
        if not await self._barrier(rec.opened_seq):
            log.debug("%s: starting after waiting %gs for the calls before it", method, self.timeout)
        request_type, _ = self._types(method)
        live.sent_metadata = self.uuids.metadata(_sendable(application_metadata(rec.request_metadata)))
        multicallable = channel.stream_stream(method, request_serializer=None, response_deserializer=None)
        call = multicallable(metadata=live.sent_metadata or None)
        live.started = True
        self._readers.append(asyncio.create_task(self._read(call, live, index)))
        self._notify()
        for message in rec.request_messages:
            await self._barrier(message.seq)
            if live.finished:
                break
            data = self.uuids.message(self.registry, request_type, message.data)
            try:
                await call.write(data)
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError) as err:
                log.debug("%s: write failed: %s", method, err)
                break
            live.requests.append(data)
            self._notify()
        if rec.request_ended and rec.request_ended_seq is not None and not live.finished:
            await self._barrier(rec.request_ended_seq)
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError, RuntimeError):
                await call.done_writing()
            live.half_closed = True
            self._notify()
        await self._finish(call, live, index)

    async def _finish(self, call: grpc.aio.StreamStreamCall, live: LiveCall, index: int) -> None:
        rec = live.recorded
        if rec.code is not None or (rec.reset is not None and not rec.reset_by_client):
            # The exporter ended it when recorded: wait for it to end it now.
            if not await self._wait(lambda: live.finished):
                live.note = f"no status within {self.timeout:g}s"
                live.end = LiveEnd.NO_ANSWER
                call.cancel()
        elif rec.reset is not None and rec.closed_seq is not None:
            # The recorded client cancelled it: do the same at the same point.
            await self._barrier(rec.closed_seq)
            if not live.finished:
                live.end = LiveEnd.CANCELLED
                call.cancel()
        else:
            # No end recorded (a byte stream the connection's close ended): exchange what was recorded, keep it.
            if not await self._wait(lambda: self._measures[index].satisfied_by(live, None)):
                live.note = f"fewer responses than recorded after waiting {self.timeout:g}s"
            self._open.append((call, live))
        self._notify()

    def _learn_handouts(self, index: int, part: str, n: int, decoded: object) -> None:
        for place in self._handouts.get((index, part, n), ()):
            value = live_value(place, decoded)
            if value is not None:
                self.uuids.add(place.value, value)

    async def _read(self, call: grpc.aio.StreamStreamCall, live: LiveCall, index: int) -> None:
        byte_stream = live.method == ROUTER_STREAM
        _, response_type = self._types(live.method)
        try:
            # Headers first: a resource stream's name the resource that later calls pass back.
            live.initial_metadata = _metadata(await call.initial_metadata())
            live.headers = True
            self._learn_handouts(index, "metadata", 0, metadata_value(live.initial_metadata))
            self._notify()
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    break
                assert isinstance(message, bytes)
                if not byte_stream and (index, "response", len(live.responses)) in self._handouts:
                    with contextlib.suppress(ProtocolError):
                        decoded = self.registry.decode(response_type, message) if response_type else None
                        self._learn_handouts(index, "response", len(live.responses), decoded)
                live.responses.append(message)
                if byte_stream:
                    size, control = frame_measure(self.registry, message)
                    live.data_bytes += size
                    live.control_frames += control
                self._notify()
            code = await call.code()
            live.code, live.details = _code_number(code), await call.details() or ""
            live.trailing_metadata = _metadata(await call.trailing_metadata())
            if live.end is LiveEnd.NOT_SENT:
                live.end = LiveEnd.STATUS
        except asyncio.CancelledError:
            if not call.cancelled():
                raise
            if live.end is LiveEnd.NOT_SENT:
                live.end = LiveEnd.NO_ANSWER
        except grpc.aio.AioRpcError as err:
            live.code, live.details = _code_number(err.code()), err.details() or ""
            live.trailing_metadata = _metadata(err.trailing_metadata())
            if live.end is LiveEnd.NOT_SENT:  # otherwise verify ended it itself, and says how
                live.end = LiveEnd.STATUS
        finally:
            if live.initial_metadata is None:
                with contextlib.suppress(Exception):
                    live.initial_metadata = _metadata(await asyncio.wait_for(call.initial_metadata(), 0.5))
            if live.method == GET_REPORT and live.code == 0 and live.responses:
                self._learn(live)
            live.headers = True
            live.finished = True
            self._notify()

    def _learn(self, live: LiveCall) -> None:
        recorded = live.recorded.responses
        if not recorded:
            return
        try:
            old = self.registry.decode(GET_REPORT_RESPONSE, recorded[0])
            new = self.registry.decode(GET_REPORT_RESPONSE, live.responses[0])
        except ProtocolError as err:
            log.debug("GetReport does not decode: %s", err)
            return
        self.uuids.learn(old, new)


# Headers gRPC sets itself; passing them as metadata would be refused or duplicated.
_RESERVED = frozenset({"content-type", "te", "user-agent", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding"})


def _sendable(metadata: Metadata) -> Metadata:
    return tuple((k, v) for k, v in metadata if not k.startswith(":") and k.lower() not in _RESERVED)


def _metadata(metadata: object) -> Metadata:
    if metadata is None:
        return ()
    out: list[tuple[str, str | bytes]] = []
    for item in metadata:  # type: ignore[attr-defined]
        key, value = item[0], item[1]
        out.append((str(key), value if isinstance(value, bytes) else str(value)))
    return tuple(out)
