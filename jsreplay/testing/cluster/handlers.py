"""What every controller and client-service call goes through: authentication, the test's hooks, the call record.

`Service` is the base of the ControllerService and ClientService servicers: `_unary` and `_server_stream` wrap
a method's implementation (which gets the request and the caller's namespace and name) into a gRPC handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from jsreplay.testing.cluster.model import AlterResponse, BeforeCall, CallError, CallRecord
from jsreplay.testing.cluster.state import ClusterState
from jsreplay.testing.cluster.tokens import bearer


@dataclass
class Hooks:
    """The test's hooks (see BeforeCall, AlterResponse); shared by the services, changeable at any time."""

    before_call: BeforeCall | None = None
    alter_response: AlterResponse | None = None


class Service:
    """Base of a servicer: authenticates every call, runs the hooks, records the call in `state.calls`."""

    def __init__(self, state: ClusterState, hooks: Hooks) -> None:
        self.state = state
        self.hooks = hooks

    def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any], kind: str) -> tuple[str, str]:
        token = bearer(context)
        identity = self.state.identities.get(token) if token else None
        if identity is None:
            raise CallError(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")
        if identity[0] != kind:
            raise CallError(grpc.StatusCode.PERMISSION_DENIED, f"this method is for a {kind}, not a {identity[0]}")
        return identity[1], identity[2]

    def _unary(
        self,
        method: str,
        kind: str,
        impl: Callable[[Any, str, str], Awaitable[Message]],
        request_type: type[Message],
        response_type: type[Message],
    ) -> grpc.RpcMethodHandler[Any, Any]:
        async def handler(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
            record = CallRecord(method=method, caller="", request=request)
            self.state.calls.append(record)
            try:
                namespace, name = self._authenticate(context, kind)
                record.caller = f"{kind}:{namespace}/{name}"
                if self.hooks.before_call is not None:
                    self.hooks.before_call(method, request)
                response = await impl(request, namespace, name)
                if self.hooks.alter_response is not None:
                    response = self.hooks.alter_response(method, request, response)
                record.responses.append(response)
                record.code = grpc.StatusCode.OK
                return response
            except CallError as e:
                record.code, record.details = e.code, e.details
                await context.abort(e.code, e.details)
                raise  # not reached: abort raises
            except asyncio.CancelledError:
                record.code = grpc.StatusCode.CANCELLED
                raise
            except Exception as e:  # a bug in the cluster or a hook: grpc answers UNKNOWN
                record.code, record.details = grpc.StatusCode.UNKNOWN, repr(e)
                raise
            finally:
                self.state.notify()

        return grpc.unary_unary_rpc_method_handler(
            handler, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
        )

    def _server_stream(
        self,
        method: str,
        kind: str,
        impl: Callable[[Any, str, str], AsyncIterator[Message]],
        request_type: type[Message],
        response_type: type[Message],
    ) -> grpc.RpcMethodHandler[Any, Any]:
        async def handler(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
            record = CallRecord(method=method, caller="", request=request)
            self.state.calls.append(record)
            try:
                namespace, name = self._authenticate(context, kind)
                record.caller = f"{kind}:{namespace}/{name}"
                if self.hooks.before_call is not None:
                    self.hooks.before_call(method, request)
                async for response in impl(request, namespace, name):
                    if self.hooks.alter_response is not None:
                        response = self.hooks.alter_response(method, request, response)
                    record.responses.append(response)
                    self.state.notify()
                    yield response
            except CallError as e:
                record.code, record.details = e.code, e.details
                self.state.notify()
                await context.abort(e.code, e.details)
            except asyncio.CancelledError:
                record.code = grpc.StatusCode.CANCELLED
                self.state.notify()
                raise
            except Exception as e:
                record.code, record.details = grpc.StatusCode.UNKNOWN, repr(e)
                self.state.notify()
                raise
            record.code = grpc.StatusCode.OK
            self.state.notify()

        return grpc.unary_stream_rpc_method_handler(
            handler, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString
        )
