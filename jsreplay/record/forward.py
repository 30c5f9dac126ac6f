"""The generic forwarding handler: every method, raw bytes both ways, every event handed to the recorder.

Methods the schema knows are forwarded with their own stream kind (a unary call forwarded as a stream costs
35-40% more CPU); methods it does not know are forwarded as bidi streams, which carries any kind. Messages
are never decoded on this path except Dial/Listen responses, whose router endpoint is rewritten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from jsreplay.cassette.model import CancelSource, Metadata, Role
from jsreplay.protocol.registry import Registry, StreamKind
from jsreplay.protocol.wire import ROUTER_STREAM
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
        if not client_streams:
            recorder.client_message(call_id, request)
            recorder.client_half_close(call_id)

        try:
            channel = await self._channels.get(target)
        except UpstreamError as err:
            details = f"jsreplay: upstream {target} unavailable: {err}"
            recorder.status(call_id, grpc.StatusCode.UNAVAILABLE.value[0], details, ())
            await context.abort(grpc.StatusCode.UNAVAILABLE, details)
            return None

        outgoing = forwardable(metadata)
        call: Any
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

        pump: asyncio.Task[None] | None = None
        if client_streams:
            pump = asyncio.create_task(self._pump_requests(call_id, context, call))
        try:
            response = await self._relay_responses(method, call_id, kind, call, context)
            initial, code, details, trailing = await upstream.outcome()
        except RouteRefused as refused:  # a Dial/Listen response that must not reach the caller
            call.cancel()
            recorder.status(call_id, refused.code.value[0], refused.details, ())
            await context.abort(refused.code, refused.details)
            return None
        except asyncio.CancelledError:
            # The caller went away (cancel or its deadline): stop the upstream call too.
            call.cancel()
            if pump is not None:
                pump.cancel()
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

    async def _rewrite(self, call_id: int, method: str, data: bytes) -> bytes | None:
        """The message to forward in place of `data`, if rewritten. A refused one is recorded as received."""
        try:
            rewrite = await self._routes.rewrite(method, data)
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
                await context.send_initial_metadata(forwardable(initial))
            forwarded = await self._rewrite(call_id, method, response)
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
            await context.send_initial_metadata(forwardable(initial))
        while True:
            try:
                message = await call.read()
            except grpc.aio.AioRpcError:
                return None
            if message is grpc.aio.EOF:
                return None
            forwarded = await self._rewrite(call_id, method, message)
            recorder.server_message(call_id, message, forwarded)
            await context.write(forwarded if forwarded is not None else message)

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
