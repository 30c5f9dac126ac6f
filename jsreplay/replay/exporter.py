"""The mock exporter behind a replayed router tunnel.

Tunnel bytes cannot be replayed byte for byte (chunking, HPACK state, PING data and window updates differ every
run), so the inner HTTP/2 connection is terminated by a real gRPC server whose handler answers each inner call
(GetReport, DriverCall, StreamingDriverCall, LogStream, GetStatus, EndSession, the byte-stream RouterService
calls) from the inner calls decoded out of the recorded frames. The router side pumps the client's frame
payloads into a TCP connection to that server and its replies back out as frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from jsreplay.cassette.errors import CassetteError
from jsreplay.grpc_options import SERVER_OPTIONS
from jsreplay.protocol.registry import Registry
from jsreplay.replay.matching import Matcher, MatchMode
from jsreplay.replay.playback import play
from jsreplay.replay.script import Script
from jsreplay.serving import rpc_method_handler

log = logging.getLogger("jsreplay.replay")


class MockExporter(grpc.GenericRpcHandler):
    def __init__(
        self,
        scripts: Callable[[], list[Script]],
        registry: Registry,
        *,
        mode: MatchMode,
        ignores: tuple[str, ...],
        allow_repeats: bool,
        on_miss: Callable[[str, str], None],
        on_error: Callable[[str, str], None],
    ) -> None:
        self._registry = registry
        self._on_miss = on_miss
        self._on_error = on_error
        self.matcher = Matcher(
            registry_for=lambda _script: registry,
            kind_of=self._registry.kind_of,
            mode=mode,
            ignores=ignores,
            allow_repeats=allow_repeats,
        )
        # Resolved at the first inner call, not before: a tunnel that never makes one (connect()'s readiness
        # probe opens the HTTP/2 connection and drops it) must not claim a recording.
        self._scripts = scripts
        self._resolved = False
        self._server: grpc.aio.Server | None = None
        self.port = 0

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        kind = self._registry.kind_of(method)

        async def handler(request: object, context: grpc.aio.ServicerContext) -> bytes | None:
            first = request if isinstance(request, bytes) else None
            if not self._resolved:
                try:
                    scripts = self._scripts()
                except CassetteError as err:  # the tunnel's frames are read on first use
                    reason = f"jsreplay: cannot serve {method} inside the tunnel: {err}"
                    self._on_error(method, reason)
                    await context.abort(grpc.StatusCode.DATA_LOSS, reason)
                    return None
                self._resolved = True
                self.matcher.add(scripts)
            outcome = self.matcher.match(method, first)
            if outcome.script is None:
                self._on_miss(method, outcome.explanation)
                await context.abort(grpc.StatusCode.UNKNOWN, outcome.explanation)
                return None
            return await play(outcome.script, kind, context, first_request=first, rewrite=lambda data: data)

        return rpc_method_handler(kind, handler)

    async def start(self) -> int:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((self,))
        self.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None


async def pump_socket_to_frames(
    reader: asyncio.StreamReader, send: Callable[[bytes], object], chunk: int = 64 << 10
) -> None:
    """Bytes the mock exporter writes -> `send(payload)` until it closes the connection."""
    while True:
        data = await reader.read(chunk)
        if not data:
            return
        result = send(data)
        if asyncio.iscoroutine(result):
            await result
