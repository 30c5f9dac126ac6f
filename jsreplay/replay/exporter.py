"""The mock exporter behind a replayed router tunnel.

Tunnel bytes cannot be replayed byte for byte (chunking, HPACK state, PING data and window updates differ every
run), so the inner HTTP/2 connection is terminated by a real gRPC server whose handler answers each inner call
(GetReport, DriverCall, StreamingDriverCall, LogStream, GetStatus, EndSession, the byte-stream RouterService
calls) from the inner calls decoded out of the recorded frames. The router side pumps the client's frame
payloads into a connection to that server and its replies back out as frames.

That server listens on a unix socket in a private (0700) directory, and the socket's path is removed as soon as
the router side has connected: it serves exactly the one tunnel, and no other local process can reach it (a
loopback TCP port would let any local process call it, unauthenticated, and use up the tunnel's recordings).
grpc.aio cannot serve an already-connected socket (a socketpair), and a per-call secret cannot be added to calls
whose headers come from the real client inside the tunnel; a name that exists only until the one connection is
made is the tightest it allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import Awaitable, Callable, Container
from pathlib import Path

import grpc

from jsreplay.cassette.errors import CassetteError
from jsreplay.grpc_options import SERVER_OPTIONS
from jsreplay.protocol.registry import Registry
from jsreplay.protocol.wire import ROUTER_STREAM
from jsreplay.replay.drivers import driver_call, driver_call_name, recorded_driver_call, tunnel_driver_paths
from jsreplay.replay.matching import Matcher, MatchMode
from jsreplay.replay.playback import UNFINISHED_TIMEOUT_S, RecordingHasNoEnd, play
from jsreplay.replay.script import Script
from jsreplay.replay.streams import StreamBook, StreamDiffers
from jsreplay.serving import rpc_method_handler
from jsreplay.session.optional import is_optional, unimplemented_note

log = logging.getLogger("jsreplay.replay")

# (method, driver call "power.on" or None, the recording a fault would displace, context) -> True if the call was
# answered by an injected fault (the replay server's `ReplayHandler.inject`).
Inject = Callable[
    [str, "str | None", Callable[[Container[str]], "Script | None"], grpc.aio.ServicerContext], Awaitable[bool]
]


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
        on_note: Callable[[str], None] | None = None,
        on_error: Callable[[str, str], None],
        on_unfinished: Callable[[str, str], None] | None = None,
        unfinished_timeout: float = UNFINISHED_TIMEOUT_S,
        inject: Inject | None = None,
    ) -> None:
        self._registry = registry
        self._inject = inject
        self.driver_paths: dict[str, str] = {}  # uuid -> driver path, from the recorded GetReport
        self._on_miss = on_miss
        self._on_note = on_note
        self._on_error = on_error
        self._on_unfinished = on_unfinished or on_error
        self._unfinished_timeout = unfinished_timeout
        self.matcher = Matcher(
            registry_for=lambda _script: registry,
            kind_of=self._registry.kind_of,
            mode=mode,
            ignores=ignores,
            allow_repeats=allow_repeats,
            same=lambda recorded, live: self.streams is not None and self.streams.same(recorded, live),
        )
        self._mode = mode
        self._ignores = ignores
        self.streams: StreamBook | None = None  # the tunnel's byte streams, chosen by identity (replay/streams.py)
        # Resolved at the first inner call, not before: a tunnel that never makes one (connect()'s readiness
        # probe opens the HTTP/2 connection and drops it) must not claim a recording.
        self._scripts = scripts
        self.cut_by_injection = False  # an injected --cut-tunnel ended this tunnel: what follows is no miss
        self._resolved = False
        self._server: grpc.aio.Server | None = None
        self._dir = Path()
        self._socket = Path()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        kind = self._registry.kind_of(method)

        async def handler(request: object, context: grpc.aio.ServicerContext) -> bytes | None:
            try:
                return await serve(request, context)
            except CassetteError as err:  # the tunnel's frames, and its big messages, are read when needed
                reason = f"jsreplay: cannot serve {method} inside the tunnel: {err}"
                self._on_error(method, reason)
                await context.abort(grpc.StatusCode.DATA_LOSS, reason)
                return None

        async def serve(request: object, context: grpc.aio.ServicerContext) -> bytes | None:
            first = request if isinstance(request, bytes) else None
            if not self._resolved:
                scripts = self._scripts()
                streams = StreamBook(
                    scripts,
                    self._registry,
                    check=self._mode is not MatchMode.ORDER,
                    ignores=self._ignores,
                    on_miss=self._on_miss,
                    on_used=self.matcher.note_used,
                    unfinished_timeout=self._unfinished_timeout,
                )
                driver_paths = tunnel_driver_paths(scripts, self._registry)
                self._resolved = True  # only now: what raised above (a CassetteError) is raised again next call
                self.matcher.add(scripts)
                self.driver_paths = driver_paths
                self.streams = streams
            assert self.streams is not None
            if self._inject is not None:
                name = driver_call_name(driver_call(self._registry, method, first, self.driver_paths))
                if await self._inject(method, name, lambda skip: self.matcher.peek(method, first, skip), context):
                    return None
            if method == ROUTER_STREAM:  # a byte stream: chosen by identity, its bytes checked
                try:
                    await self.streams.serve(context)
                except RecordingHasNoEnd as err:
                    self._on_unfinished(method, str(err))
                    await context.abort(grpc.StatusCode.DATA_LOSS, str(err))
                return None
            outcome = self.matcher.match(method, first)
            if outcome.script is None and self._on_note is not None:
                if is_optional(method) and not self.matcher.recorded(method):
                    # A client newer than the recorded exporter calling what it never served (GetStatus,
                    # EndSession, LogStream): answered as an older exporter does.
                    self._on_note(unimplemented_note(method))
                    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"jsreplay: {method} is not in the cassette")
                    return None
            if outcome.script is None:
                self._on_miss(method, outcome.explanation)
                await context.abort(grpc.StatusCode.UNKNOWN, outcome.explanation)
                return None
            uses = self.streams.bind_call(outcome.script, first)  # the resource streams the call uses
            try:
                return await play(
                    outcome.script,
                    kind,
                    context,
                    first_request=first,
                    rewrite=lambda data: data,
                    before_response=self.streams.hold(outcome.script, uses),
                    unfinished_timeout=self._unfinished_timeout,
                )
            except StreamDiffers as err:  # not answered as recorded: the bytes it was to act on differ
                await context.abort(grpc.StatusCode.UNKNOWN, str(err))
                return None
            except RecordingHasNoEnd as err:  # the tunnel's recording was cut during this call
                self._on_unfinished(method, str(err))
                await context.abort(grpc.StatusCode.DATA_LOSS, str(err))
                return None

        return rpc_method_handler(kind, handler)

    def driver_call_of(self, script: Script) -> str | None:
        """ "power.on" for a recorded driver call of this tunnel."""
        return driver_call_name(recorded_driver_call(self._registry, script, self.driver_paths))

    @property
    def address(self) -> str:
        """Where the mock exporter listens, as a gRPC target (a path nobody can reach once `connect` returned)."""
        return f"unix:{self._socket}"

    async def start(self) -> None:
        """Listen on a unix socket in a new private directory (mode 0700: no other user can reach it)."""
        self._dir = Path(tempfile.mkdtemp(prefix="jsreplay-tunnel-"))
        self._socket = self._dir / "exporter.sock"
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers((self,))
        server.add_insecure_port(self.address)
        await server.start()
        self._server = server

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The one connection this mock exporter serves: the tunnel's. Then its socket's path is removed, so no
        other process (not even one of the same user) can connect: a second connection is refused, and cannot
        use up the tunnel's recordings. The listening socket stays open for gRPC, reachable by no name."""
        try:
            return await asyncio.open_unix_connection(self._socket)
        finally:
            self._forget_path()

    def _forget_path(self) -> None:
        with contextlib.suppress(OSError):
            self._socket.unlink()
        with contextlib.suppress(OSError):
            self._dir.rmdir()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0.5)
            self._server = None
        self._forget_path()


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


# HTTP/2 error codes (RFC 9113, section 7), for what a GOAWAY says.
H2_ERRORS = (
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "INTERNAL_ERROR",
    "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT",
    "STREAM_CLOSED",
    "FRAME_SIZE_ERROR",
    "REFUSED_STREAM",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECT_ERROR",
    "ENHANCE_YOUR_CALM",
    "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
)
_FRAME_TYPES = (
    "DATA",
    "HEADERS",
    "PRIORITY",
    "RST_STREAM",
    "SETTINGS",
    "PUSH_PROMISE",
    "PING",
    "GOAWAY",
    "WINDOW_UPDATE",
    "CONTINUATION",
)
_GOAWAY = 7
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class FrameWatch:
    """Follows one direction of the inner HTTP/2 connection by its frame headers, to explain how it ended.

    Payloads are skipped, not buffered, except a GOAWAY's. `client=True`: the caller's side, which starts with the
    connection preface.
    """

    def __init__(self, *, client: bool = False) -> None:
        self._buffer = bytearray()
        self._skip = 0
        self._preface = len(_PREFACE) if client else 0  # preface bytes still to come
        self.bytes = 0
        self.bad_preface = False
        self.last: str | None = None  # the last frame header seen: "SETTINGS on stream 1, 0 bytes"
        self.refusal: str | None = None  # "GOAWAY PROTOCOL_ERROR (what the exporter said)"

    def feed(self, data: bytes) -> None:
        self.bytes += len(data)
        if self._preface:
            head, data = data[: self._preface], data[self._preface :]
            start = len(_PREFACE) - self._preface
            if head != _PREFACE[start : start + len(head)]:
                self.bad_preface = True
            self._preface -= len(head)
        if self._skip:
            skipped = min(self._skip, len(data))
            self._skip -= skipped
            data = data[skipped:]
        self._buffer += data
        while len(self._buffer) >= 9:
            length = int.from_bytes(self._buffer[:3], "big")
            kind, stream = self._buffer[3], int.from_bytes(self._buffer[5:9], "big") & 0x7FFFFFFF
            name = _FRAME_TYPES[kind] if kind < len(_FRAME_TYPES) else f"type 0x{kind:x}"
            self.last = f"{name} on stream {stream}, {length} bytes"
            if kind != _GOAWAY:
                if len(self._buffer) >= 9 + length:
                    del self._buffer[: 9 + length]
                else:
                    self._skip = 9 + length - len(self._buffer)
                    self._buffer.clear()
                continue
            if len(self._buffer) < 9 + length:
                return
            payload = bytes(self._buffer[9 : 9 + length])
            del self._buffer[: 9 + length]
            code = int.from_bytes(payload[4:8], "big") if length >= 8 else 0
            if code:
                name = H2_ERRORS[code] if code < len(H2_ERRORS) else f"error 0x{code:x}"
                debug = payload[8:].decode("utf-8", "replace")
                self.refusal = f"GOAWAY {name}" + (f" ({debug})" if debug else "")

    def explain(self) -> str:
        """What the caller sent, for when the mock exporter dropped the connection."""
        if self.bad_preface:
            return f"{self.bytes} bytes from the caller, which do not start with the HTTP/2 connection preface"
        return f"{self.bytes} bytes from the caller; the last frame header: {self.last or 'none'}"
