"""The generic forwarding handler: every method, raw bytes both ways, every event handed to the recorder.

Methods the schema knows are forwarded with their own stream kind (a unary call forwarded as a stream costs
35-40% more CPU); methods it does not know are forwarded as bidi streams, which carries any kind. Messages
are never decoded on this path except Dial/Listen responses, whose router endpoint is rewritten.

Stopping is the handler's job, not gRPC's: `end_open_calls` lets unary calls finish within a grace period,
then cancels each open call's task itself; the call records a cancel by the proxy, cancels its upstream call
and answers its peer UNAVAILABLE, and returns normally. (Left to `grpc.aio.Server.stop`, the handler tasks are
cancelled behind the proxy's back: they log tracebacks, and their ends race the recorder's close.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from jsreplay.cassette.model import CancelSource, Metadata, Role
from jsreplay.protocol.registry import Registry, StreamKind
from jsreplay.protocol.wire import GET_SERVICE_ENDPOINTS, PUSH_LOGS, ROUTER_STREAM
from jsreplay.record.recorder import Recorder
from jsreplay.record.routing import RouteRefused, RouterTable
from jsreplay.record.upstream import UpstreamChannels, UpstreamError
from jsreplay.serving import rpc_method_handler
from jsreplay.session.tokens import authorization_values, bearer_token

log = logging.getLogger("jsreplay.record")

# Headers that belong to one HTTP/2 hop (or that gRPC sets itself) and must not be copied to the next one.
HOP_BY_HOP = frozenset(
    {
        "te",
        "content-type",
        "grpc-timeout",
        "grpc-encoding",
        "grpc-accept-encoding",
        "user-agent",
        "host",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
    }
)

Handler = Callable[..., Awaitable[Any]]

# How long calls cancelled by `end_open_calls` get to record their end and return.
CANCEL_WAIT_S = 5.0


class _OpenCall:
    """A call being forwarded: its handler task, and whether the proxy's stop ended it.

    The task is never cancelled while it sends to its peer (`sending`): a cancelled send leaves its gRPC batch
    in flight, and the status gRPC then sends fails (a second send of initial metadata: TOO_MANY_OPERATIONS,
    and the call hangs until the server gives up). The send finishes first, then the call ends.
    """

    __slots__ = ("cancelled", "sending", "stopped", "streaming", "task")

    def __init__(self, task: asyncio.Task[Any], streaming: bool) -> None:
        self.task = task
        self.streaming = streaming
        self.stopped = False  # the proxy's stop ended it
        self.sending = False
        self.cancelled = False  # its task was cancelled by the proxy (not gRPC)

    def stop(self, reason: str) -> None:
        self.stopped = True
        if not self.sending and not self.task.done():
            self.cancelled = True
            self.task.cancel(reason)

    async def send(self, sending: Awaitable[None]) -> None:
        """Send to the peer (headers, a message), then end here if the proxy stopped meanwhile."""
        self.sending = True
        try:
            await sending
        finally:
            self.sending = False
        if self.stopped:
            raise asyncio.CancelledError("the proxy is stopping")


def as_metadata(metadata: Any) -> Metadata:
    """gRPC metadata (a Metadata object, a tuple of pairs or None) as the model's tuple of pairs."""
    if not metadata:
        return ()
    return tuple((str(k), v) for k, v in metadata)


def forwardable(metadata: Metadata) -> tuple[tuple[str, str | bytes], ...]:
    return tuple((k, v) for k, v in metadata if not k.startswith(":") and k.lower() not in HOP_BY_HOP)


class _Upstream:
    """The upstream side of one forwarded call, with its outcome read back uniformly."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def outcome(self) -> tuple[Metadata, grpc.StatusCode, str, Metadata]:
        call = self.call
        code = await call.code()
        return (
            as_metadata(await call.initial_metadata()),
            code,
            await call.details() or "",
            as_metadata(await call.trailing_metadata()),
        )


class ForwardingHandler(grpc.GenericRpcHandler):
    """Serves every method by forwarding it upstream (controller calls) or to a router (router streams)."""

    def __init__(
        self,
        *,
        recorder: Recorder,
        registry: Registry,
        channels: UpstreamChannels,
        upstream: str,
        routes: RouterTable,
    ) -> None:
        self._recorder = recorder
        self._registry = registry
        self._channels = channels
        self._upstream = upstream
        self._routes = routes
        self._calls: dict[int, _OpenCall] = {}
        self._stopping: str | None = None  # why, once stopping began

    # ------------------------------------------------------------------------------------------ stopping

    @property
    def open_calls(self) -> int:
        return len(self._calls)

    def begin_stop(self, reason: str) -> None:
        """Refuse calls from now on (UNAVAILABLE, recorded); calls already open go on."""
        if self._stopping is None:
            self._stopping = reason

    async def end_open_calls(self, reason: str, *, grace: float = 0.0, hurry: asyncio.Event | None = None) -> None:
        """End every open call, each recording its end: unary calls get `grace` seconds (or until `hurry` is set)
        to finish on their own; streams, which may never end, and what is left after that are cancelled.

        Calls that do not return within CANCEL_WAIT_S of being cancelled get their cancel recorded here.
        """
        self.begin_stop(reason)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while (hurry is None or not hurry.is_set()) and (remaining := deadline - loop.time()) > 0:
            unary = {call.task for call in self._calls.values() if not call.streaming}
            if not unary:
                break
            waiters: set[asyncio.Future[Any]] = set(unary)
            hurried = asyncio.ensure_future(hurry.wait()) if hurry is not None else None
            if hurried is not None:
                waiters.add(hurried)
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if hurried is not None:
                    hurried.cancel()
        stopped = []
        for call in list(self._calls.values()):
            if not call.task.done():
                call.stop(reason)
                stopped.append(call.task)
        if stopped:
            await asyncio.wait(stopped, timeout=CANCEL_WAIT_S)
        for call_id in self._recorder.open_calls():
            # Only a call whose task did not return in time, or that was never tracked, gets here.
            log.warning("call %d did not end when cancelled; recording its cancel", call_id)
            self._recorder.cancel(call_id, CancelSource.PROXY, reason)

    # ------------------------------------------------------------------------------------------ dispatch

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        kind = self._registry.kind_of(method)

        def bind(fn: Handler) -> Handler:
            async def handler(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
                return await fn(method, kind, request_or_iterator, context)

            return handler

        return rpc_method_handler(kind, bind(self.forward))

    # ------------------------------------------------------------------------------------------ forwarding

    async def _target(self, method: str, metadata: Metadata) -> str:
        """The router a Stream's token belongs to, or the controller upstream; RouteRefused if neither may be."""
        authorizations = len(authorization_values(metadata))
        if authorizations > 1:  # which one counts would differ between here and the upstream
            raise RouteRefused(
                grpc.StatusCode.UNAUTHENTICATED,
                f"jsreplay: {authorizations} authorization headers; a call may carry one; refusing to forward",
            )
        target = self._upstream
        if method == ROUTER_STREAM:
            token = bearer_token(metadata)
            if token is None:
                raise RouteRefused(grpc.StatusCode.PERMISSION_DENIED, "jsreplay: router stream without a bearer token")
            route = self._routes.lookup(token)
            if route is None:
                raise RouteRefused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "jsreplay: router token was not issued by the upstream; refusing to relay",
                )
            target = route
        elif method == PUSH_LOGS:
            token = bearer_token(metadata)
            route = self._routes.telemetry(token) if token else None
            if route is None:
                raise RouteRefused(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "jsreplay: PushLogs from a caller the upstream named no telemetry endpoint to; refusing to relay",
                )
            target = route
        if await self._routes.is_own(target):
            refusal = f"jsreplay: {target} is this proxy itself; refusing to forward to it"
            raise RouteRefused(grpc.StatusCode.FAILED_PRECONDITION, refusal)
        return target

    async def forward(
        self, method: str, kind: StreamKind, request: Any, context: grpc.aio.ServicerContext
    ) -> bytes | None:
        recorder = self._recorder
        metadata = as_metadata(context.invocation_metadata())
        remaining = context.time_remaining()
        timeout = remaining if remaining is not None and remaining < 1e9 else None
        client_streams = kind in (StreamKind.CLIENT_STREAMING, StreamKind.BIDI_STREAMING)
        server_streams = kind in (StreamKind.SERVER_STREAMING, StreamKind.BIDI_STREAMING)
        refusal: RouteRefused | None = None
        try:
            target = await self._target(method, metadata)
        except RouteRefused as refused:
            target, refusal = "", refused
        if self._stopping is not None:
            target = ""
            refusal = RouteRefused(grpc.StatusCode.UNAVAILABLE, f"jsreplay: {self._stopping}; not forwarding new calls")
        call_id = recorder.start_call(
            method=method,
            role=Role.ROUTER if method == ROUTER_STREAM else Role.CONTROLLER,
            metadata=metadata,
            peer=context.peer(),
            target=target,
            timeout_ns=None if timeout is None else int(timeout * 1e9),
            streaming=client_streams or server_streams,
        )
        if refusal is not None:
            recorder.status(call_id, refusal.code.value[0], refusal.details, ())
            await context.abort(refusal.code, refusal.details)
            return None
        task = asyncio.current_task()
        assert task is not None
        this = self._calls[call_id] = _OpenCall(task, streaming=client_streams or server_streams)
        try:
            return await self._forward(call_id, target, method, kind, request, context, metadata, timeout)
        except asyncio.CancelledError:
            if not this.stopped:
                raise  # the caller went away; _forward recorded it
            # The proxy is stopping: the call was ended by `end_open_calls`, not by gRPC. The task ends normally
            # (nothing more to await) and its peer gets a status instead of a reset.
            if this.cancelled:
                task.uncancel()
            stopping = self._stopping or "jsreplay record stopped"
            if recorder.is_open(call_id):  # not if end_open_calls gave up waiting and recorded it
                recorder.cancel(call_id, CancelSource.PROXY, stopping)
            context.set_code(grpc.StatusCode.UNAVAILABLE)
            context.set_details(f"jsreplay: {stopping}")
            return None
        finally:
            del self._calls[call_id]

    async def _forward(
        self,
        call_id: int,
        target: str,
        method: str,
        kind: StreamKind,
        request: Any,
        context: grpc.aio.ServicerContext,
        metadata: Metadata,
        timeout: float | None,
    ) -> bytes | None:
        recorder = self._recorder
        client_streams = kind in (StreamKind.CLIENT_STREAMING, StreamKind.BIDI_STREAMING)
        if not client_streams:
            recorder.client_message(call_id, request)
            recorder.client_half_close(call_id)

        call: Any = None
        pump: asyncio.Task[None] | None = None
        try:
            try:
                channel = await self._channels.get(target, self._routes.telemetry_ca(target))
            except UpstreamError as err:
                details = f"jsreplay: upstream {target} unavailable: {err}"
                recorder.status(call_id, grpc.StatusCode.UNAVAILABLE.value[0], details, ())
                await context.abort(grpc.StatusCode.UNAVAILABLE, details)
                return None

            outgoing = forwardable(metadata)
            match kind:
                case StreamKind.UNARY:
                    call = channel.unary_unary(method)(request, metadata=outgoing, timeout=timeout)
                case StreamKind.SERVER_STREAMING:
                    call = channel.unary_stream(method)(request, metadata=outgoing, timeout=timeout)
                case StreamKind.CLIENT_STREAMING:
                    call = channel.stream_unary(method)(metadata=outgoing, timeout=timeout)
                case _:
                    call = channel.stream_stream(method)(metadata=outgoing, timeout=timeout)
            upstream = _Upstream(call)

            if client_streams:
                pump = asyncio.create_task(self._pump_requests(call_id, context, call))
            response = await self._relay_responses(method, call_id, kind, call, context)
            initial, code, details, trailing = await upstream.outcome()
        except RouteRefused as refused:  # a Dial/Listen response that must not reach the caller
            call.cancel()
            recorder.status(call_id, refused.code.value[0], refused.details, ())
            await context.abort(refused.code, refused.details)
            return None
        except asyncio.CancelledError:
            # The caller went away (cancel or its deadline), or the proxy is stopping: stop the upstream call
            # too. Which of the two it was, `forward` knows; a caller's cancel is recorded here.
            if call is not None:
                call.cancel()
            if not self._is_stopped(call_id):
                recorder.cancel(call_id, CancelSource.CLIENT, "caller cancelled or its deadline passed")
            raise
        finally:
            if pump is not None and not pump.done():
                pump.cancel()

        if code == grpc.StatusCode.UNAVAILABLE and not initial:
            details = f"jsreplay: upstream {target}: {details}"
        recorder.status(call_id, code.value[0], details, trailing)
        if code != grpc.StatusCode.OK:
            await context.abort(code, details, trailing_metadata=forwardable(trailing))
            return None
        context.set_trailing_metadata(forwardable(trailing))
        return response

    async def _send(self, call_id: int, sending: Awaitable[None]) -> None:
        call = self._calls.get(call_id)
        if call is None:  # defensive: `forward` tracks every call it sends for
            await sending
        else:
            await call.send(sending)

    def _is_stopped(self, call_id: int) -> bool:
        call = self._calls.get(call_id)
        return call is not None and call.stopped

    async def _rewrite(self, call_id: int, method: str, data: bytes, context: grpc.aio.ServicerContext) -> bytes | None:
        """The message to forward in place of `data`, if rewritten. A refused one is recorded as received."""
        caller = bearer_token(as_metadata(context.invocation_metadata())) if method == GET_SERVICE_ENDPOINTS else None
        try:
            rewrite = await self._routes.rewrite(method, data, caller)
        except RouteRefused:
            self._recorder.server_message(call_id, data, None)
            raise
        return None if rewrite is None else rewrite.forwarded

    async def _relay_responses(
        self, method: str, call_id: int, kind: StreamKind, call: Any, context: grpc.aio.ServicerContext
    ) -> bytes | None:
        """Stream responses to the caller as they come; for unary responses, return the one message."""
        recorder = self._recorder
        if kind in (StreamKind.UNARY, StreamKind.CLIENT_STREAMING):
            try:
                response: bytes = await call
            except grpc.aio.AioRpcError:
                return None
            initial = as_metadata(await call.initial_metadata())
            recorder.server_headers(call_id, initial)
            if initial:
                await self._send(call_id, context.send_initial_metadata(forwardable(initial)))
            forwarded = await self._rewrite(call_id, method, response, context)
            recorder.server_message(call_id, response, forwarded)
            return forwarded if forwarded is not None else response
        # Streaming responses: headers first, as soon as the upstream sends them (a Status stream may send
        # its headers long before its first message, and the peer may be waiting on them).
        try:
            initial = as_metadata(await call.initial_metadata())
        except grpc.aio.AioRpcError:
            return None
        if initial or not call.done():
            recorder.server_headers(call_id, initial)
            await self._send(call_id, context.send_initial_metadata(forwardable(initial)))
        while True:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError:
                return None
            if message is grpc.aio.EOF:
                return None
            forwarded = await self._rewrite(call_id, method, message, context)
            recorder.server_message(call_id, message, forwarded)
            await self._send(call_id, context.write(forwarded if forwarded is not None else message))

    async def _pump_requests(self, call_id: int, context: grpc.aio.ServicerContext, call: Any) -> None:
        """Caller -> upstream, for client- and bidi-streaming calls."""
        recorder = self._recorder
        try:
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    recorder.client_half_close(call_id)
                    await call.done_writing()
                    return
                recorder.client_message(call_id, message)
                await call.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, grpc.aio.UsageError) as err:
            # The upstream call ended while the caller was still sending; its status tells the rest.
            log.debug("request pump for call %d stopped: %s", call_id, err)
