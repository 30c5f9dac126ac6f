"""Recording new episodes into an existing cassette: what replay's `new_episodes` mode forwards on a miss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc

from jsreplay.cassette.format import CassetteWriter
from jsreplay.cassette.redaction import Redactor
from jsreplay.protocol.registry import Registry, StreamKind
from jsreplay.record.elision import DEFAULT_THRESHOLD, Elision, ElisionConfig
from jsreplay.record.forward import ForwardingHandler
from jsreplay.record.recorder import Recorder
from jsreplay.record.routing import RouterTable
from jsreplay.record.upstream import UpstreamChannels, UpstreamTrust
from jsreplay.serving import OwnAddresses


class EpisodeRecorder:
    """Forwards calls the replay could not match to the upstream, appending them to the cassette.

    Router streams for tokens it saw in forwarded Dial/Listen responses go to the routers the upstream named,
    as with `jsreplay record`; numbering continues from the cassette's last event.
    """

    def __init__(
        self,
        cassette: Path,
        *,
        upstream: str,
        trust: UpstreamTrust,
        advertise: str,
        listen: str | None = None,
        redact: bool = True,
        elide_above: int | None = DEFAULT_THRESHOLD,
    ):
        registry = Registry.default()
        writer = CassetteWriter.append_to(cassette, redactor=Redactor(registry=registry) if redact else None)
        # A format 1 cassette is appended to in format 1: no ELIDED frames, which an older reader would misread.
        elide = elide_above is not None and writer.format_2
        elision = ElisionConfig(threshold=elide_above)
        self.recorder = Recorder(writer, Elision.for_registry(elision, registry) if elide else None)
        self._channels = UpstreamChannels(trust)
        self._handler = ForwardingHandler(
            recorder=self.recorder,
            registry=registry,
            channels=self._channels,
            upstream=upstream,
            # Never route to the replay server itself: where peers reach it, and where it listens.
            routes=RouterTable(registry, advertise, OwnAddresses(advertise, *([listen] if listen else []))),
        )

    async def forward(self, method: str, kind: StreamKind, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self._handler.forward(method, kind, request, context)

    async def aclose(self) -> None:
        await self._channels.close()
        self.recorder.close()
