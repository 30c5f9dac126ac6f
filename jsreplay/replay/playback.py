"""Playing one Script on a live server call: initial metadata, responses in causal order, trailers, status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from jsreplay.protocol.registry import StreamKind
from jsreplay.replay.script import Script, ScriptedResponse

log = logging.getLogger("jsreplay.replay")

# How long a call whose recording has no end waits for a request its recording has, and how long such a call with
# streamed responses stays open after its last recorded one, before it fails (`RecordingHasNoEnd`).
UNFINISHED_TIMEOUT_S = 2.0

# Headers gRPC sets itself; sending them as metadata would be refused or duplicated.
_RESERVED = frozenset({"content-type", "grpc-encoding", "grpc-accept-encoding", "user-agent", "te"})


class RecordingHasNoEnd(Exception):
    """The call was answered as far as its recording goes, and the recording has no end (a cut cassette).

    The server fails the call with DATA_LOSS and this message, and lists it in the report as unfinished.
    """

    def __init__(self, script: Script, sent: int) -> None:
        self.method = script.method
        super().__init__(
            f"jsreplay: recording of {script.method} call {script.key} has no end: {script.cut}; "
            f"answered as far as recorded ({sent} of {len(script.responses)} responses sent)"
        )


def sendable(metadata: Any) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((k, v) for k, v in (metadata or ()) if not k.startswith(":") and k.lower() not in _RESERVED)


class RequestCounter:
    """Reads a streaming call's requests in the background and lets responses wait for the n-th one."""

    def __init__(self, context: grpc.aio.ServicerContext, first: list[bytes]) -> None:
        self.received: list[bytes] = list(first)
        self.ended = False
        self._changed = asyncio.Event()
        self._context = context

    async def pump(self, on_message: Callable[[bytes], Awaitable[None]] | None = None) -> None:
        try:
            while True:
                message = await self._context.read()
                if message is grpc.aio.EOF:
                    break
                self.received.append(message)
                if on_message is not None:
                    await on_message(message)
                self._changed.set()
        except Exception as err:  # the call ended (aborted, cancelled, finished) while we were reading
            log.debug("request reader stopped: %r", err)
        finally:
            self.ended = True
            self._changed.set()

    async def wait_for(self, count: int) -> bool:
        """True once `count` requests have arrived; False if the caller half-closed with fewer."""
        while len(self.received) < count:
            if self.ended:
                return False
            self._changed.clear()
            await self._changed.wait()
        return True


async def play(
    script: Script,
    kind: StreamKind,
    context: grpc.aio.ServicerContext,
    *,
    first_request: bytes | None,
    rewrite: Callable[[bytes], bytes],
    before_response: Callable[[int, ScriptedResponse], Awaitable[None]] | None = None,
    unfinished_timeout: float = UNFINISHED_TIMEOUT_S,
) -> bytes | None:
    """Serve `script` on `context`. For unary-response kinds returns the response to hand back to gRPC.

    A recorded response is read from its cassette as the loop reaches it (`RecordedResponses`), not before.
    A script whose recording has no end (`script.cut`) raises `RecordingHasNoEnd` once it has been answered as far
    as recorded: every wait is then bounded by `unfinished_timeout`.
    """
    client_streams = kind in (StreamKind.CLIENT_STREAMING, StreamKind.BIDI_STREAMING)
    counter = RequestCounter(context, [] if first_request is None else [first_request])
    pump: asyncio.Task[None] | None = asyncio.create_task(counter.pump()) if client_streams else None
    if not client_streams:
        counter.ended = True
    sent = 0

    async def requests(count: int) -> None:
        if not script.cut:
            await counter.wait_for(count)
            return
        try:
            await asyncio.wait_for(counter.wait_for(count), unfinished_timeout)
        except TimeoutError:
            raise RecordingHasNoEnd(script, sent) from None

    try:
        if script.initial_metadata is not None and (script.initial_metadata or script.responses):
            await context.send_initial_metadata(sendable(script.initial_metadata))
        unary_response: bytes | None = None
        for index, response in enumerate(script.responses):
            await requests(response.after_requests)
            if before_response is not None:
                await before_response(index, response)
            data = rewrite(response.data)
            if kind in (StreamKind.UNARY, StreamKind.CLIENT_STREAMING):
                unary_response = data
            else:
                await context.write(data)
            sent = index + 1
        await requests(script.status_after_requests)
        if script.cut:
            if kind in (StreamKind.SERVER_STREAMING, StreamKind.BIDI_STREAMING):
                # Streamed: the live caller may still be busy elsewhere (a log stream open for a whole session).
                await asyncio.sleep(unfinished_timeout)
            raise RecordingHasNoEnd(script, sent)
        if script.code is None:
            # The recorded caller cancelled this call (Status and Listen end that way): keep it open until the
            # live caller cancels too. Ending it here would make a real exporter open it again.
            await asyncio.Event().wait()
        code = _status_code(script.code)
        if code is not grpc.StatusCode.OK:
            await context.abort(code, script.details, trailing_metadata=sendable(script.trailing_metadata))
        context.set_trailing_metadata(sendable(script.trailing_metadata))
        return unary_response
    finally:
        if pump is not None and not pump.done():
            pump.cancel()


def _status_code(value: int | None) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN
