"""The RouterService: pairs the two callers that present the same router token and pipes their frames.

The two callers are piped into each other frame by frame, whichever arrives first. A server cannot half-close a
response stream, so each side's call ends once both sides half-closed; when one side's call goes away, the other
is ended too (after a bounded linger if the gone side had sent GOAWAY, since its peer then ends by itself).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
from jumpstarter_protocol import router_pb2

from jsreplay.testing.cluster import tokens
from jsreplay.testing.cluster.model import ROUTER_SERVICE, RouterStreamRecord


class Router:
    """The router's servicer and its pairings.

    `pair_timeout`: how long a caller whose peer has not arrived is held. `linger`: when a caller's call ends
    after it sent GOAWAY, how long its peer may still take to half-close. `queue_depth`: frames held per
    direction. `endpoint` is set by whoever serves the router; Dial hands it out. `notify` announces changes.
    """

    def __init__(self, notify: Callable[[], None], *, pair_timeout: float, linger: float, queue_depth: int) -> None:
        self.notify = notify
        self.pair_timeout = pair_timeout
        self.linger = linger
        self.queue_depth = queue_depth
        self.endpoint = ""
        self.streams: list[RouterStreamRecord] = []
        self._rendezvous: dict[str, _Rendezvous] = {}

    def new_token(self, lease_name: str = "") -> str:
        """A token the router will pair on (what Dial hands out)."""
        now = time.monotonic()
        # Forget tokens nobody ever presented, so a long test does not accumulate them.
        stale = [t for t, r in self._rendezvous.items() if r.arrived == 0 and now - r.created > 10 * 60]
        for t in stale:
            del self._rendezvous[t]
        token = tokens.new_token()
        self._rendezvous[token] = _Rendezvous(lease_name, self.queue_depth)
        return token

    def handlers(self) -> grpc.GenericRpcHandler:
        # Frames are forwarded as raw bytes: StreamRequest and StreamResponse share one wire layout.
        handler = grpc.stream_stream_rpc_method_handler(self._stream)
        return grpc.method_handlers_generic_handler(ROUTER_SERVICE, {"Stream": handler})

    async def _stream(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        token = tokens.bearer(context) or ""
        rendezvous = self._rendezvous.get(token)
        if rendezvous is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown router token")
            return
        arrival = rendezvous.arrived
        rendezvous.arrived += 1
        if rendezvous.arrived == 2:
            del self._rendezvous[token]  # a token pairs exactly two callers
            rendezvous.paired.set()
        record = RouterStreamRecord(lease_name=rendezvous.lease_name, arrival=arrival)
        self.streams.append(record)
        mine, theirs = rendezvous.pipes[arrival], rendezvous.pipes[1 - arrival]
        # Read at once, even before the peer arrives: frames wait in the peer's (bounded) pipe.
        reader = asyncio.create_task(_pump(request_iterator, theirs, record))
        reader.add_done_callback(_retrieve)
        clean = False
        try:
            try:
                async with asyncio.timeout(self.pair_timeout):
                    await rendezvous.paired.wait()
            except TimeoutError:
                self._rendezvous.pop(token, None)
                record.code, record.details = grpc.StatusCode.DEADLINE_EXCEEDED, "no peer arrived"
                await context.abort(record.code, f"no peer presented this router token in {self.pair_timeout}s")
            while True:
                item = await mine.get()
                if item is _EOF:
                    # The peer half-closed. A server cannot half-close a response stream, only end the call,
                    # so keep forwarding this side until it half-closes too (or the peer's call goes away).
                    await _first_of(reader, mine.aborted.wait())
                    break
                if item is _ABORT:
                    break
                assert isinstance(item, bytes)
                await context.write(item)
                record.frames_out += 1
            if not reader.done() and mine.graceful:
                # The peer's call ended after it sent GOAWAY (real peers close their channel as soon as they
                # have read the other side's GOAWAY). This side got that GOAWAY and will end by itself shortly
                # (an exporter once its session socket closes, ~1.3 s); ending its call under it would only
                # make its last write fail. Its frames now go nowhere.
                await asyncio.wait({reader}, timeout=self.linger)
            # Otherwise the peer vanished without a word: end this side at once.
            clean = reader.done() and not reader.cancelled() and reader.exception() is None
        except asyncio.CancelledError:
            record.code = grpc.StatusCode.CANCELLED
            raise
        finally:
            mine.discard()  # nobody reads frames for this side any more
            if not reader.done():
                reader.cancel()
            if not clean:
                # Cancelled (the caller went away: on a cancel its request stream even looks finished) or
                # the peer vanished: make sure the other side ends too.
                theirs.abort(graceful=record.sent_goaway)
            if record.code is None:
                record.code = grpc.StatusCode.OK
            self.notify()


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_EOF: Final = _Marker("EOF")
_ABORT: Final = _Marker("ABORT")


class _Pipe:
    """One direction of a router pairing: bounded for data, never blocking for the end markers."""

    def __init__(self, depth: int) -> None:
        self._queue: asyncio.Queue[bytes | _Marker] = asyncio.Queue()
        self._depth = depth
        self._room = asyncio.Semaphore(depth)
        self.closed = False
        self.discarding = False
        self.graceful = False  # the sender had sent GOAWAY before its call ended
        self.aborted = asyncio.Event()

    async def put(self, data: bytes) -> None:
        if self.discarding:
            return
        await self._room.acquire()
        self._queue.put_nowait(data)

    def discard(self) -> None:
        """The receiver is gone: drop further frames and wake senders waiting for room."""
        if not self.discarding:
            self.discarding = True
            for _ in range(self._depth):
                self._room.release()

    def close(self) -> None:
        """The sender half-closed: the receiver gets EOF after the frames already queued."""
        if not self.closed:
            self.closed = True
            self._queue.put_nowait(_EOF)

    def abort(self, graceful: bool) -> None:
        """The sender's call is gone: the receiver stops, even if it already got EOF."""
        self.closed = True
        self.graceful = graceful
        self.aborted.set()
        self._queue.put_nowait(_ABORT)

    async def get(self) -> bytes | _Marker:
        item = await self._queue.get()
        if isinstance(item, bytes):
            self._room.release()
        return item


@dataclass
class _Rendezvous:
    lease_name: str
    depth: int
    arrived: int = 0
    created: float = field(default_factory=time.monotonic)
    paired: asyncio.Event = field(default_factory=asyncio.Event)
    pipes: tuple[_Pipe, _Pipe] = field(init=False)

    def __post_init__(self) -> None:
        # pipes[i] carries frames *to* the i-th caller.
        self.pipes = (_Pipe(self.depth), _Pipe(self.depth))


def _retrieve(task: asyncio.Task[None]) -> None:
    # A pump fails when its caller goes away; the handler deals with that, don't log it as unretrieved.
    if not task.cancelled():
        task.exception()


async def _pump(source: AsyncIterator[bytes], sink: _Pipe, record: RouterStreamRecord) -> None:
    async for frame in source:
        record.frames_in += 1
        record.bytes_in += len(frame)
        # Control frames are tiny; parsing only those keeps the data path free of protobuf work.
        if len(frame) <= 64 and router_pb2.StreamRequest.FromString(frame).frame_type == router_pb2.FRAME_TYPE_GOAWAY:
            record.sent_goaway = True
        await sink.put(frame)
    sink.close()


async def _first_of(task: asyncio.Task[None], other: Awaitable[Any]) -> None:
    """Wait until `task` finishes or `other` completes; `task` keeps running in the second case."""
    waiter = asyncio.ensure_future(other)
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
