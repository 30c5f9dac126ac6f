"""The recording proxy: a gRPC server that forwards to a real controller/router and records everything."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from jsreplay import __version__
from jsreplay.cassette.format import CassetteWriter
from jsreplay.cassette.migrations import FORMAT_VERSION
from jsreplay.cassette.model import Header, Redaction
from jsreplay.cassette.redaction import DEFAULT_FIELDS, DEFAULT_METADATA_KEYS, Redactor
from jsreplay.grpc_options import SERVER_OPTIONS
from jsreplay.protocol.registry import Registry
from jsreplay.record.elision import DEFAULT_HOLD_BYTES, DEFAULT_THRESHOLD, Elision, ElisionConfig
from jsreplay.record.forward import ForwardingHandler
from jsreplay.record.recorder import Recorder, RecorderStats
from jsreplay.record.routing import RouterTable
from jsreplay.record.upstream import UpstreamChannels, UpstreamTrust
from jsreplay.serving import DEFAULT_LISTEN, BoundServer, ListenTLS, ServesEndpoint, bind, parse_hostport

STOP_GRACE_S = 2.0
STOP_REASON = "jsreplay record stopped"
# The last resort, should a call not end when the proxy cancels it: gRPC cancels what is left this much later.
SERVER_STOP_BOUND_S = 10.0


@dataclass(frozen=True, kw_only=True)
class RecordConfig:
    upstream: str  # HOST:PORT of the real controller
    cassette: Path
    listen: str = DEFAULT_LISTEN
    advertise: str | None = None  # address peers use to reach the proxy, when it differs from --listen
    upstream_trust: UpstreamTrust = field(default_factory=UpstreamTrust)
    tls: ListenTLS = field(default_factory=ListenTLS)
    redact: bool = True
    redact_fields: tuple[str, ...] = ()
    overwrite: bool = False
    schema: bytes | None = None  # the schema to record with (embedded in the header); default: the union
    redact_metadata: tuple[str, ...] = ()  # more metadata keys to redact (--redact-metadata)
    # Client-to-exporter byte streams above this many bytes are kept as length and SHA-256 (None: keep all).
    elide_above: int | None = DEFAULT_THRESHOLD
    elision_hold_bytes: int = DEFAULT_HOLD_BYTES  # recording held back while a byte stream's fate is open


class RecordingProxy(ServesEndpoint):
    """Start with `start()`, stop with `stop()`; or use `jsreplay.recording(...)`."""

    _what = "proxy"

    def __init__(self, config: RecordConfig) -> None:
        parse_hostport(config.upstream, what="--upstream")  # fail before anything is created
        self.config = config
        self._registry = Registry.for_descriptor_set(config.schema) if config.schema else Registry.default()
        self._server: grpc.aio.Server | None = None
        self._bound: BoundServer | None = None
        self._recorder: Recorder | None = None
        self._channels = UpstreamChannels(config.upstream_trust)
        self._handler: ForwardingHandler | None = None
        self._hurry = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None
        self.routes: RouterTable | None = None
        self._active_redactor: Redactor | None = None

    @property
    def stats(self) -> RecorderStats:
        return self._require_recorder().stats

    @property
    def bytes_written(self) -> int:
        return self._require_recorder().bytes_written

    @property
    def elided(self) -> tuple[int, int] | None:
        """Uploads kept as length and digest, and the HTTP/2 DATA bytes not stored (None: elision is off)."""
        elision = self._require_recorder().elision
        return None if elision is None else (elision.elided_streams, elision.elided_bytes)

    @property
    def error(self) -> str | None:
        """Why recording stopped early (a write failure), if it did."""
        return self._require_recorder().error

    @property
    def unknown_fields(self) -> dict[str, list[str]]:
        """Message type -> paths of fields the schema did not know, in messages recorded: redaction by field name
        could not look inside them (empty when nothing was redacted)."""
        redactor = self._active_redactor
        if redactor is None:
            return {}
        return {name: sorted(paths) for name, paths in sorted(redactor.unknown_fields.items())}

    def _require_recorder(self) -> Recorder:
        if self._recorder is None:
            raise RuntimeError("the proxy is not started")
        return self._recorder

    def _redactor(self) -> Redactor | None:
        if not self.config.redact:
            return None
        return Redactor(
            registry=self._registry,
            fields=(*DEFAULT_FIELDS, *self.config.redact_fields),
            metadata_keys=(*DEFAULT_METADATA_KEYS, *self.config.redact_metadata),
        )

    async def start(self) -> None:
        config = self.config
        server = grpc.aio.server(options=SERVER_OPTIONS)
        bound = bind(server, config.listen, config.tls, advertise=config.advertise)
        try:
            redactor = self._active_redactor = self._redactor()
            header = Header(
                format_version=FORMAT_VERSION,
                jsreplay_version=__version__,
                created_unix_ns=time.time_ns(),
                upstreams=(config.upstream,),
                descriptor_set=self._registry.descriptor_set,
                redaction=redactor.description if redactor else Redaction(enabled=False),
            )
            writer = CassetteWriter(config.cassette, header, redactor=redactor, overwrite=config.overwrite)
        except BaseException:
            bound.cleanup()
            raise
        # Without a threshold nothing is elided: no hold, no following the tunnels.
        elision = ElisionConfig(threshold=config.elide_above, hold_bytes=config.elision_hold_bytes)
        elider = Elision.for_registry(elision, self._registry) if config.elide_above is not None else None
        self._recorder = Recorder(writer, elider)
        self.routes = RouterTable(self._registry, bound.endpoint, bound.own_addresses(), ca_pem=bound.ca_pem)
        self._handler = ForwardingHandler(
            recorder=self._recorder,
            registry=self._registry,
            channels=self._channels,
            upstream=config.upstream,
            routes=self.routes,
        )
        server.add_generic_rpc_handlers((self._handler,))
        await server.start()
        self._server, self._bound = server, bound

    async def stop(self, grace: float = STOP_GRACE_S, *, reason: str = STOP_REASON) -> None:
        """Stop: accept no more calls, end every open call and record its end, then close the cassette.

        Unary calls still open get `grace` seconds to finish (less if `hurry()` is called); streams, which may
        never end on their own (an exporter's Status and Listen, router streams), and whatever is left then are
        cancelled by the proxy: the cassette gets a cancel by "proxy" with `reason`, the upstream call is
        cancelled, the peer gets UNAVAILABLE. Safe to call more than once and concurrently; all callers wait
        for the same stop, which goes on even if a caller is cancelled.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace, reason))
        await asyncio.shield(self._stopping)

    def hurry(self) -> None:
        """Cut the grace of a stop in progress (or the next one) short: a second Ctrl-C."""
        self._hurry.set()

    async def _stop(self, grace: float, reason: str) -> None:
        server, self._server = self._server, None
        if server is not None:
            assert self._handler is not None
            # 1. Accept nothing more: the listening socket closes and peers get GOAWAY; a call already on its
            #    way to the handler is refused there. gRPC would cancel what is still open after its grace,
            #    behind the handler's back: give it more than the handler needs, as a last resort only.
            self._handler.begin_stop(reason)
            shutdown = asyncio.ensure_future(server.stop(grace + SERVER_STOP_BOUND_S))
            # 2. End every open call, each recording its end.
            await self._handler.end_open_calls(reason, grace=grace, hurry=self._hurry)
            # 3. With no call left the server's shutdown completes at once.
            await shutdown
        # 4. Only now the upstream channels (no handler can be using them) and the cassette.
        await self._channels.close()
        if self._recorder is not None:
            self._recorder.close()
        if self._bound is not None:
            self._bound.cleanup()


@asynccontextmanager
async def recording(
    *,
    upstream: str,
    cassette: str | Path,
    listen: str = DEFAULT_LISTEN,
    advertise: str | None = None,
    upstream_ca: bytes | None = None,
    upstream_insecure: bool = False,
    upstream_plaintext: bool = False,
    tls: ListenTLS | None = None,
    redact: bool = True,
    redact_fields: Iterable[str] = (),
    overwrite: bool = False,
    schema: bytes | None = None,
    redact_metadata: Iterable[str] = (),
    elide_above: int | None = DEFAULT_THRESHOLD,
    elision_hold_bytes: int = DEFAULT_HOLD_BYTES,
) -> AsyncIterator[RecordingProxy]:
    """Run a recording proxy for the duration of the block::

    async with jsreplay.recording(upstream="controller:443", cassette="run.msgpack") as proxy:
        ...  # point peers at proxy.endpoint, trusting proxy.ca_pem
    """
    proxy = RecordingProxy(
        RecordConfig(
            upstream=upstream,
            cassette=Path(cassette),
            listen=listen,
            advertise=advertise,
            upstream_trust=UpstreamTrust(ca_pem=upstream_ca, insecure=upstream_insecure, plaintext=upstream_plaintext),
            tls=tls or ListenTLS(),
            redact=redact,
            redact_fields=tuple(redact_fields),
            overwrite=overwrite,
            schema=schema,
            redact_metadata=tuple(k.lower() for k in redact_metadata),
            elide_above=elide_above,
            elision_hold_bytes=elision_hold_bytes,
        )
    )
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
