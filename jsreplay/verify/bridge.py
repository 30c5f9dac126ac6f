"""The exporter's router stream <-> a local TCP connection that a plain grpc.aio channel opens.

Verify is the recorded client, so it needs an HTTP/2 gRPC client connection *through* the exporter's router
stream. Rather than speak HTTP/2 itself, it lets grpc.aio do that: a throw-away listener on loopback accepts the
channel's one connection, and the bytes are pumped both ways as router frames, as the real router does:

- bytes the channel writes -> `StreamResponse{DATA, payload}` to the exporter;
- the exporter's `StreamRequest` DATA payloads -> the socket; its GOAWAY (or the end of its stream) -> EOF;
- when the channel closes its connection -> a GOAWAY frame to the exporter, which then closes its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc

from jsreplay.grpc_options import MAX_MESSAGE_LENGTH
from jsreplay.protocol.registry import Registry
from jsreplay.protocol.wire import STREAM_REQUEST, STREAM_RESPONSE, RouterFrameType

log = logging.getLogger("jsreplay.verify")

CHUNK = 64 << 10

# The inner channel talks to loopback only; no proxy from the environment, no retries that would hide a
# failure, and the same message limit as everything else.
INNER_CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.enable_retries", 0),
    ("grpc.use_local_subchannel_pool", 1),  # its own connection, closed with the channel
    ("grpc.max_send_message_length", MAX_MESSAGE_LENGTH),
    ("grpc.max_receive_message_length", MAX_MESSAGE_LENGTH),
]


class OneConnection:
    """A loopback listener that accepts exactly one connection (the inner channel's), then stops listening."""

    def __init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._accepted: asyncio.Future[tuple[asyncio.StreamReader, asyncio.StreamWriter]] | None = None
        self.port = 0

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._accepted = loop.create_future()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert self._accepted is not None
            if self._accepted.done():
                writer.close()  # a reconnect after the tunnel broke: the recorded client had one connection
                return
            self._accepted.set_result((reader, writer))
            if self._server is not None:
                self._server.close()

        self._server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def accepted(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert self._accepted is not None
        return await self._accepted

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._accepted is not None and not self._accepted.done():
            self._accepted.cancel()


class RouterBridge:
    """Pumps one accepted socket through one exporter router stream (a server-side `context`)."""

    def __init__(self, context: grpc.aio.ServicerContext, registry: Registry, on_activity: Callable[[], None]) -> None:
        self._context = context
        self._request = registry.message_class(STREAM_REQUEST)
        self._response = registry.message_class(STREAM_RESPONSE)
        self._on_activity = on_activity
        self.exporter_ended = asyncio.Event()  # the exporter sent GOAWAY or ended its stream
        self.bytes_to_exporter = 0
        self.bytes_from_exporter = 0

    async def send_goaway(self) -> None:
        with contextlib.suppress(Exception):  # the exporter may already be gone
            await self._context.write(self._response(frame_type=RouterFrameType.GOAWAY).SerializeToString())

    async def to_exporter(self, reader: asyncio.StreamReader) -> None:
        """Socket -> DATA frames until the channel closes its connection, then GOAWAY."""
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                self.bytes_to_exporter += len(data)
                await self._context.write(
                    self._response(payload=data, frame_type=RouterFrameType.DATA).SerializeToString()
                )
                self._on_activity()
        except Exception as err:  # the socket closed, or the exporter's stream ended under a write
            log.debug("inner connection read ended: %r", err)
        finally:
            await self.send_goaway()

    async def from_exporter(self, writer: asyncio.StreamWriter) -> None:
        """The exporter's frames -> socket, until its GOAWAY or the end of its stream."""
        try:
            while True:
                message = await self._context.read()
                if message is grpc.aio.EOF:
                    break
                frame = self._request.FromString(message)
                self._on_activity()
                if frame.frame_type == RouterFrameType.DATA:
                    if frame.payload:
                        self.bytes_from_exporter += len(frame.payload)
                        writer.write(frame.payload)
                        await writer.drain()
                elif frame.frame_type == RouterFrameType.GOAWAY:
                    break
        except Exception as err:  # the socket closed, or the exporter's stream ended or sent garbage
            log.debug("inner connection write ended: %r", err)
        finally:
            self.exporter_ended.set()
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()

    async def drain_exporter(self) -> None:
        """Read and drop the exporter's frames until it ends (a probe, or a stream verify does not drive)."""
        try:
            while True:
                message = await self._context.read()
                if message is grpc.aio.EOF:
                    break
                self._on_activity()
                if self._request.FromString(message).frame_type == RouterFrameType.GOAWAY:
                    break
        except Exception as err:  # the stream ended under the read, or a frame does not decode
            log.debug("router stream drain ended: %r", err)
        finally:
            self.exporter_ended.set()
