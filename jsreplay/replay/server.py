"""The replay server: controller, client service, router and (behind each tunnel) exporter, from cassettes."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from array import array
from collections.abc import AsyncIterator, Callable, Container, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import grpc
from google.protobuf.message import DecodeError

from jsreplay.cassette.errors import CassetteError
from jsreplay.grpc_options import SERVER_OPTIONS
from jsreplay.protocol.registry import Registry, StreamKind
from jsreplay.protocol.wire import ROUTER_STREAM, STREAM_REQUEST, STREAM_RESPONSE, RouterFrameType
from jsreplay.replay.coverage import RecordingUse, with_exemptions
from jsreplay.replay.drivers import driver_call_name, recorded_driver_call, tunnel_driver_paths
from jsreplay.replay.exporter import FrameWatch, MockExporter, pump_socket_to_frames
from jsreplay.replay.faults import Delay, Fault, FaultInjector, FaultPlan, Injection, TunnelCut
from jsreplay.replay.introspection import add_introspection
from jsreplay.replay.library import REPLAY_DECODER, Library, Tunnel, load_library
from jsreplay.replay.matching import Matcher, MatchMode
from jsreplay.replay.playback import UNFINISHED_TIMEOUT_S, RecordingHasNoEnd, play
from jsreplay.replay.report import Miss, ReplayReport
from jsreplay.replay.rewrite import ResponseRewriter
from jsreplay.replay.script import Script, ScriptedResponse, call_peer
from jsreplay.serving import DEFAULT_LISTEN, BoundServer, ListenTLS, ServesEndpoint, bind, rpc_method_handler
from jsreplay.session.optional import is_optional, unimplemented_note
from jsreplay.session.tokens import bearer_token
from jsreplay.tunnel.config import DecoderConfig

log = logging.getLogger("jsreplay.replay")

CAUSAL_TIMEOUT_S = 10.0


@dataclass(frozen=True, kw_only=True)
class ReplayConfig:
    cassettes: tuple[Path, ...]
    listen: str = DEFAULT_LISTEN
    advertise: str | None = None
    tls: ListenTLS = field(default_factory=ListenTLS)
    match: MatchMode = MatchMode.DEFAULT
    ignores: tuple[str, ...] = ()
    allow_repeats: bool = False
    speed: float = 0.0  # 0: as fast as causal order allows; 1: recorded pace; N: N times faster
    causal_timeout: float = CAUSAL_TIMEOUT_S
    unfinished_timeout: float = UNFINISHED_TIMEOUT_S  # bounds the calls whose recording has no end
    shift_timestamps: bool = True
    faults: FaultPlan = field(default_factory=FaultPlan)  # injected faults, delays and tunnel cuts
    schema: bytes | None = None  # --schema: decode the cassettes with it instead of their own
    decoder: DecoderConfig = REPLAY_DECODER  # how tunnels are decoded (which inner messages stay in the file)


class TunnelCutInjected(Exception):
    """An injected `--cut-tunnel` ended the router stream: it ends with UNAVAILABLE, as a router's does whose other
    end went away."""


class TunnelInputError(Exception):
    """What a live caller sent into a replayed tunnel does not parse: the call ends with INVALID_ARGUMENT."""


class Fallback(Protocol):
    """Where a miss goes instead of an error (replay's `new_episodes` mode: forward and record it)."""

    async def forward(self, method: str, kind: StreamKind, request: Any, context: grpc.aio.ServicerContext) -> Any: ...

    async def aclose(self) -> None: ...


class _Progress:
    """Which recorded calls the replay has reached, so streamed messages can wait for their causes."""

    def __init__(self) -> None:
        self.started: set[str] = set()
        self.peers: set[str] = set()
        self._changed = asyncio.Event()

    def mark(self, script: Script) -> None:
        self.started.add(script.key)
        if script.peer:
            self.peers.add(script.peer)
        self._changed.set()

    async def wait(self, keys: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not all(k in self.started for k in keys):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return False
        return True


class CausalIndex:
    """For a recorded response: the (peer, script key) of calls by other peers that started before it.

    Only the latest such call per peer counts: once it has been reached, the ones before it were too. The index
    holds each peer's call starts in order (an array of seqs and the keys), and a response's causes are found when
    it is about to be sent, with one bisect per peer, rather than kept for every response of the cassette.
    """

    def __init__(self, scripts: Iterable[Script]) -> None:
        self._by_peer: dict[str, tuple[array[int], list[str]]] = {}
        for script in sorted(scripts, key=lambda s: s.start_seq):
            if script.peer:
                seqs, keys = self._by_peer.setdefault(script.peer, (array("q"), []))
                seqs.append(script.start_seq)
                keys.append(script.key)

    def of(self, script: Script, response_seq: int) -> list[tuple[str, str]]:
        latest: list[tuple[str, str]] = []
        for peer, (seqs, keys) in self._by_peer.items():
            if peer == script.peer:
                continue
            i = bisect.bisect_left(seqs, response_seq) - 1  # the last call of that peer before the response
            if i >= 0 and seqs[i] > script.start_seq:
                latest.append((peer, keys[i]))
        return latest


class ReplayHandler(grpc.GenericRpcHandler):
    def __init__(
        self,
        library: Library,
        config: ReplayConfig,
        advertise: str,
        fallback: Fallback | None = None,
        ca_pem: bytes | None = None,
    ) -> None:
        self._library = library
        self._fallback = fallback
        self._config = config
        self._registry = Registry.default()
        self.report = ReplayReport(cassettes=[str(p) for p in config.cassettes])
        self.matcher = Matcher(
            registry_for=library.registry_for,
            kind_of=self._registry.kind_of,
            mode=config.match,
            ignores=config.ignores,
            allow_repeats=config.allow_repeats,
        )
        self.matcher.add(library.scripts)
        shift = (time.time_ns() - library.created_unix_ns) // 1_000_000_000 if config.shift_timestamps else 0
        self._rewriters = {
            source: ResponseRewriter(registry, advertise=advertise, shift_seconds=max(0, shift), ca_pem=ca_pem)
            for source, registry in library.registries.items()
        }
        self._progress = _Progress()
        self._causes = CausalIndex(library.scripts)
        self._tunnels_used: set[str] = set()
        self._claimed: set[str] = set()  # recorded tunnels whose inner calls a live tunnel is serving
        self.exporters: set[MockExporter] = set()  # the mock exporters of the tunnels open now
        self._started_ns = time.monotonic_ns()
        self.injector = FaultInjector(config.faults)
        self._tunnel_count = 0
        self._peers_seen: set[str] = set()  # live callers, "Client:ns/name", from their call metadata
        self._displaced: set[str] = set()  # recordings an injected fault answered instead of
        self._inner_rows: list[RecordingUse] = []  # inner recordings of the tunnels served, when each closed
        self._unserved_inner: dict[str, list[RecordingUse]] = {}  # recorded tunnel key -> its inner calls
        self._cassette_of = {p.name: str(p) for p in config.cassettes}

    # ------------------------------------------------------------------------------------------ setup

    # ------------------------------------------------------------------------------------------ dispatch

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        kind = StreamKind.BIDI_STREAMING if method == ROUTER_STREAM else self._registry.kind_of(method)

        async def handler(request: object, context: grpc.aio.ServicerContext) -> Any:
            try:
                if method == ROUTER_STREAM:
                    return await self._tunnel(context)
                return await self._serve(method, kind, request if isinstance(request, bytes) else None, context)
            except TunnelCutInjected as err:
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
                return None
            except CassetteError as err:  # responses are read when sent: the file changed since it was loaded
                await self._cassette_error(method, err, context)
                return None
            except TunnelInputError as err:
                self._error(method, str(err))
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
                return None
            except RecordingHasNoEnd as err:  # a cut cassette: answered as far as recorded
                self._unfinished(method, str(err))
                await context.abort(grpc.StatusCode.DATA_LOSS, str(err))
                return None

        return rpc_method_handler(kind, handler)

    def _miss(self, method: str, explanation: str) -> None:
        log.warning("%s", explanation)
        self.report.missed.append(Miss(method=method, reason=explanation, at_s=self._elapsed()))

    def _note(self, note: str) -> None:
        log.info("jsreplay: %s", note)
        if note not in self.report.notes:
            self.report.notes.append(note)

    def _unfinished(self, method: str, reason: str) -> None:
        log.error("%s", reason)
        self.report.unfinished.append(Miss(method=method, reason=reason, at_s=self._elapsed()))

    def _error(self, method: str, reason: str) -> None:
        log.error("%s", reason)
        self.report.errors.append(Miss(method=method, reason=reason, at_s=self._elapsed()))

    async def _cassette_error(self, method: str, err: CassetteError, context: grpc.aio.ServicerContext) -> None:
        reason = f"jsreplay: cannot serve {method}: {err}"
        self._error(method, reason)
        await context.abort(grpc.StatusCode.DATA_LOSS, reason)

    def _elapsed(self) -> float:
        return (time.monotonic_ns() - self._started_ns) / 1e9

    # ------------------------------------------------------------------------------------------ faults

    def _injected(
        self,
        rule: Fault | Delay | TunnelCut,
        occurrence: int,
        method: str,
        driver: str | None,
        recording: str | None = None,
        detail: str = "",
    ) -> None:
        kind = "fault" if isinstance(rule, Fault) else "delay" if isinstance(rule, Delay) else "cut"
        log.info("jsreplay: injected %s %r on %s #%d", kind, rule.spec, method, occurrence)
        self.report.injected.append(
            Injection(kind, rule.spec, method, occurrence, self._elapsed(), driver, recording, detail)
        )

    async def inject(
        self,
        method: str,
        driver: str | None,
        peek: Callable[[Container[str]], Script | None],
        context: grpc.aio.ServicerContext,
        on_cut: Callable[[], None] | None = None,
    ) -> bool:
        """Apply the fault plan to a call about to be served: delay it, cut its tunnel (`on_cut`: inner calls), or
        answer it with an injected status (then True). The recording it would have got is not used up."""
        decision = self.injector.decide(method, driver)
        fault: Fault | None = None
        for rule, occurrence in decision.fired:
            if isinstance(rule, Fault):
                fault = rule
                displaced = peek(self._displaced)
                if displaced is not None:
                    self._displaced.add(displaced.key)
                detail = f"{rule.code}: {rule.details}"
                self._injected(rule, occurrence, method, driver, displaced.key if displaced else None, detail)
            elif isinstance(rule, Delay):
                self._injected(rule, occurrence, method, driver, detail=f"{rule.seconds:g}s")
            elif isinstance(rule, TunnelCut):
                self._injected(rule, occurrence, method, driver, detail="router stream ended with UNAVAILABLE")
        if decision.delay:
            await asyncio.sleep(decision.delay)
        if decision.cut is not None and on_cut is not None:
            on_cut()
            await asyncio.Event().wait()  # the tunnel ends; this inner call with it
        if fault is not None:
            await context.abort(grpc.StatusCode[fault.code], fault.details)
            return True
        return False

    async def _serve(
        self, method: str, kind: StreamKind, first: bytes | None, context: grpc.aio.ServicerContext
    ) -> bytes | None:
        peer = call_peer(tuple(context.invocation_metadata() or ()))
        if peer:
            self._peers_seen.add(peer)
        if await self.inject(method, None, lambda skip: self.matcher.peek(method, first, skip), context):
            return None
        outcome = self.matcher.match(method, first)
        if outcome.script is None:
            if self._fallback is None and is_optional(method) and not self.matcher.recorded(method):
                # A newer peer calling what the recorded controller never served (GetServiceEndpoints from a
                # development exporter replayed from a 0.9.0 cassette): answered as an older controller does.
                self._note(unimplemented_note(method))
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"jsreplay: {method} is not in the cassette")
                return None
            if self._fallback is not None:
                self.report.forwarded.append(Miss(method=method, reason=outcome.explanation, at_s=self._elapsed()))
                return await self._fallback.forward(method, kind, first, context)
            self._miss(method, outcome.explanation)
            await context.abort(grpc.StatusCode.UNKNOWN, outcome.explanation)
            return None
        script = outcome.script
        self._progress.mark(script)
        rewriter = self._rewriters.get(script.key.split("#", 1)[0])

        def rewrite(data: bytes) -> bytes:
            return rewriter.rewrite(method, data) if rewriter is not None else data

        started = time.monotonic()

        async def before_response(index: int, response: ScriptedResponse) -> None:
            await self._pace(response, started)
            causes = self._causes.of(script, response.seq)
            if not causes:
                return
            wanted = [key for peer, key in causes if peer in self._progress.peers]
            if wanted and not await self._progress.wait(wanted, self._config.causal_timeout):
                reason = (
                    f"jsreplay: {script.key} message {index} waited {self._config.causal_timeout:g}s for "
                    f"{', '.join(wanted)}, which never came; sent anyway"
                )
                log.warning("%s", reason)
                self.report.causal_timeouts.append(reason)

        return await play(
            script,
            kind,
            context,
            first_request=first,
            rewrite=rewrite,
            before_response=before_response,
            unfinished_timeout=self._config.unfinished_timeout,
        )

    async def _pace(self, response: ScriptedResponse, started: float) -> None:
        """With --speed N > 0: send each response when it was sent in the recording, N times faster."""
        if self._config.speed <= 0:
            return
        due = started + response.t_ns / 1e9 / self._config.speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    # ------------------------------------------------------------------------------------------ tunnels

    async def _tunnel(self, context: grpc.aio.ServicerContext) -> None:
        token = bearer_token(context.invocation_metadata() or ()) or ""
        own = self._library.tunnels.get(token)
        if own is None and self._fallback is not None:  # a token from a forwarded Dial/Listen
            self.report.forwarded.append(Miss(method=ROUTER_STREAM, reason="new router token", at_s=self._elapsed()))
            await self._fallback.forward(ROUTER_STREAM, StreamKind.BIDI_STREAMING, None, context)
            return
        if own is None:
            known = len(self._library.tunnels)
            explanation = (
                f"jsreplay: no recorded router stream presents this token ({known} recorded); "
                "router tokens come from replayed Dial/Listen responses"
            )
            self._miss(ROUTER_STREAM, explanation)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, explanation)
            return
        self._progress.mark(own.stream)
        response_type = self._registry.message_class(STREAM_RESPONSE)
        first = await context.read()
        if first is grpc.aio.EOF:
            self._tunnels_used.add(own.stream.key)
            return
        frame = self._router_frame(first, 0)
        if frame.frame_type != RouterFrameType.DATA:  # a probe that only says GOAWAY: answer in kind
            self._tunnels_used.add(own.stream.key)
            await context.write(response_type(frame_type=RouterFrameType.GOAWAY).SerializeToString())
            return
        self._tunnels_used.add(own.stream.key)
        self._tunnel_count += 1
        assigned: list[Tunnel] = []
        cut = asyncio.Event()

        async def inject(
            method: str,
            driver: str | None,
            peek: Callable[[Container[str]], Script | None],
            ctx: grpc.aio.ServicerContext,
        ) -> bool:
            return await self.inject(method, driver, peek, ctx, on_cut=cut.set)

        def inner_miss(method: str, explanation: str) -> None:
            # After an injected cut the client's calls and streams in this tunnel end early by design: that is the
            # fault being tested, listed under `injected`, not a miss.
            if cut.is_set() or exporter.cut_by_injection:
                log.info("after an injected tunnel cut: %s", explanation)
                return
            self._miss(method, explanation)

        def inner_scripts() -> list[Script]:
            if not assigned:  # once: a failed read of the frames must not claim a second recording
                assigned.append(self._assign_tunnel(own))
            return assigned[0].inner

        exporter = MockExporter(
            inner_scripts,
            own.registry,
            mode=self._config.match,
            ignores=self._config.ignores,
            allow_repeats=self._config.allow_repeats,
            on_miss=inner_miss,
            on_note=self._note,
            on_error=self._error,
            on_unfinished=self._unfinished,
            unfinished_timeout=self._config.unfinished_timeout,
            inject=inject if self._config.faults else None,
        )
        await exporter.start()
        self.exporters.add(exporter)
        try:
            await self._pipe(context, own, exporter, frame.payload, cut)
        finally:
            self.exporters.discard(exporter)
            try:
                self._tunnel_report(own, exporter, assigned)
            except CassetteError as err:  # the recorded GetReport names the driver calls: the file changed
                log.warning("jsreplay: cannot name the driver calls of %s: %s", own.stream.key, err)
            finally:
                await exporter.stop()
                for tunnel in assigned:  # memory stays bounded by the open tunnels, not the used ones
                    tunnel.release()

    def _tunnel_report(self, own: Tunnel, exporter: MockExporter, assigned: list[Tunnel]) -> None:
        """What a closed tunnel's inner calls add to the report."""
        self.report.inner.extend((script.key, script.method, used) for script, used in exporter.matcher.scripts())
        if exporter.streams is not None:
            self.report.unchecked_streams.update(exporter.streams.unchecked)
        if assigned:
            if not exporter.driver_paths:
                exporter.driver_paths = tunnel_driver_paths(assigned[0].inner, own.registry)
            self._inner_rows.extend(
                RecordingUse(
                    cassette=self._cassette_of.get(script.key.split("#", 1)[0], script.key.split("#", 1)[0]),
                    recording=script.key,
                    method=script.method,
                    served=used,
                    inner=True,
                    driver_call=exporter.driver_call_of(script),
                )
                for script, used in exporter.matcher.scripts() or [(s, 0) for s in assigned[0].inner]
            )

    def _assign_tunnel(self, own: Tunnel) -> Tunnel:
        """The recorded tunnel whose inner calls a new HTTP/2 tunnel gets.

        Tokens only pair the two ends; which Dial's token ends up carrying the real session races (connect() Dials
        twice, for a probe and for the session). So a tunnel that speaks HTTP/2 gets its own token's recording if
        that carried calls, else the first unused recording that did, in recorded order.
        """
        if own.carries_calls and own.stream.key not in self._claimed:
            chosen = own
        else:
            candidates = sorted(
                (t for t in self._library.tunnels.values() if t.carries_calls and t.stream.key not in self._claimed),
                key=lambda t: t.stream.start_seq,
            )
            chosen = candidates[0] if candidates else own
        self._claimed.add(chosen.stream.key)
        self._tunnels_used.add(chosen.stream.key)
        return chosen

    def _router_frame(self, message: bytes, index: int) -> Any:
        try:
            return self._registry.message_class(STREAM_REQUEST).FromString(message)
        except DecodeError as err:
            raise TunnelInputError(
                f"jsreplay: router Stream message {index} is not a {STREAM_REQUEST} ({len(message)} bytes): {err}"
            ) from None

    async def _pipe(
        self,
        context: grpc.aio.ServicerContext,
        tunnel: Tunnel,
        exporter: MockExporter,
        first: bytes,
        cut: asyncio.Event,
    ) -> None:
        reader, writer = await exporter.connect()
        response_type = self._registry.message_class(STREAM_RESPONSE)
        watch, caller = FrameWatch(), FrameWatch(client=True)
        byte_cut = self.injector.byte_cut
        number = self._tunnel_count

        async def send(data: bytes) -> None:
            if byte_cut is not None and byte_cut.after_bytes is not None:
                room = byte_cut.after_bytes - watch.bytes
                if len(data) >= room:
                    data = data[: max(0, room)]
                    if data:
                        watch.feed(data)
                        await context.write(
                            response_type(payload=data, frame_type=RouterFrameType.DATA).SerializeToString()
                        )
                    exporter.cut_by_injection = True  # the tunnel's later misses are consequences of the cut
                    self._injected(
                        byte_cut,
                        number,
                        ROUTER_STREAM,
                        None,
                        tunnel.stream.key,
                        f"router stream ended with UNAVAILABLE after {watch.bytes} bytes",
                    )
                    raise TunnelCutInjected(
                        f"jsreplay: tunnel cut (injected {byte_cut.spec!r}) after {watch.bytes} bytes"
                    )
            watch.feed(data)
            await context.write(response_type(payload=data, frame_type=RouterFrameType.DATA).SerializeToString())

        async def pump_in() -> None:
            caller.feed(first)
            writer.write(first)
            await writer.drain()
            index = 1
            while True:
                message = await context.read()
                if message is grpc.aio.EOF:
                    break
                frame = self._router_frame(message, index)
                index += 1
                if frame.frame_type == RouterFrameType.DATA:
                    caller.feed(frame.payload)
                    writer.write(frame.payload)
                    await writer.drain()
                elif frame.frame_type == RouterFrameType.GOAWAY:
                    break

        outbound = asyncio.create_task(pump_socket_to_frames(reader, send))
        inbound = asyncio.create_task(pump_in())
        cutting = asyncio.create_task(cut.wait())
        try:
            await asyncio.wait((inbound, outbound, cutting), return_when=asyncio.FIRST_COMPLETED)
            if cut.is_set():
                raise TunnelCutInjected("jsreplay: tunnel cut (injected) at an inner call")
            if outbound.done() and isinstance(outbound.exception(), TunnelCutInjected):
                outbound.result()
            if inbound.done():
                inbound.result()  # TunnelInputError: a frame that does not parse
                if writer.can_write_eof():
                    writer.write_eof()
                await outbound
            else:
                # The mock exporter (a gRPC server) dropped the inner connection while the caller still had it
                # open: it only does that for input that is not valid HTTP/2. Waiting for the caller would hang.
                inbound.cancel()
                outbound.result()
                said = f"sent {watch.refusal} and " if watch.refusal else ""
                raise TunnelInputError(
                    f"jsreplay: the HTTP/2 connection inside the tunnel is broken: the mock exporter {said}closed it "
                    f"after {caller.explain()}"
                )
            await context.write(response_type(frame_type=RouterFrameType.GOAWAY).SerializeToString())
        except (ConnectionError, OSError) as err:
            log.debug("tunnel %s: mock exporter connection ended: %s", tunnel.stream.key, err)
        finally:
            inbound.cancel()
            outbound.cancel()
            cutting.cancel()
            writer.close()

    # ------------------------------------------------------------------------------------------ report

    def finish_report(self) -> ReplayReport:
        report = self.report
        report.used = [(s.key, s.method, used) for s, used in self.matcher.scripts() if used]
        report.unused = [(s.key, s.method) for s, used in self.matcher.scripts() if not used]
        report.tunnels_used = sorted(self._tunnels_used)
        report.tunnels_unused = sorted(
            t.stream.key for t in self._library.tunnels.values() if t.stream.key not in self._tunnels_used
        )
        rows = [
            RecordingUse(
                cassette=self._cassette_of.get(s.key.split("#", 1)[0], s.key.split("#", 1)[0]),
                recording=s.key,
                method=s.method,
                served=used,
                peer=s.peer,
            )
            for s, used in self.matcher.scripts()
        ]
        rows += self._inner_rows
        for tunnel in self._library.tunnels.values():
            if tunnel.carries_calls and tunnel.stream.key not in self._claimed:
                rows += self._unserved_tunnel(tunnel)
        report.recordings = with_exemptions(rows, self._peers_seen, self._displaced)
        return report

    def _unserved_tunnel(self, tunnel: Tunnel) -> list[RecordingUse]:
        """The inner calls of a recorded tunnel no live tunnel was given: all left (decoded once, then kept)."""
        key = tunnel.stream.key
        if key not in self._unserved_inner:
            try:
                inner = tunnel.inner
            except CassetteError as err:
                log.warning("jsreplay: cannot list the inner calls of %s: %s", key, err)
                inner = []
            try:
                paths = tunnel_driver_paths(inner, tunnel.registry)  # reads the recorded GetReport if located
            except CassetteError as err:
                log.warning("jsreplay: cannot name the driver calls of %s: %s", key, err)
                paths = {}
            source = key.split("#", 1)[0]
            self._unserved_inner[key] = [
                RecordingUse(
                    cassette=self._cassette_of.get(source, source),
                    recording=s.key,
                    method=s.method,
                    served=0,
                    inner=True,
                    driver_call=driver_call_name(recorded_driver_call(tunnel.registry, s, paths)),
                )
                for s in inner
            ]
            if not tunnel.decoded or key not in self._claimed:
                tunnel.release()
        return self._unserved_inner[key]


class ReplayServer(ServesEndpoint):
    _what = "replay server"

    # Called with each server's final report when it stops (the pytest plugin's --jsreplay-coverage collects the
    # coverage of every replay in a test process this way, the fixture's and `jsreplay.replaying`'s alike).
    observers: ClassVar[list[Callable[[ReplayReport], None]]] = []

    def __init__(self, config: ReplayConfig, fallback: Callable[[str], Fallback] | None = None) -> None:
        """`fallback(advertised_endpoint)` makes where misses go; None: misses are errors."""
        self.config = config
        self._fallback_factory = fallback
        self._fallback: Fallback | None = None
        self._library = load_library(list(config.cassettes), config.schema, config.decoder)
        self._server: grpc.aio.Server | None = None
        self._bound: BoundServer | None = None
        self.handler: ReplayHandler | None = None

    @property
    def library(self) -> Library:
        """The loaded index of the cassettes (scripts, tunnels), as served."""
        return self._library

    async def start(self) -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        bound = bind(server, self.config.listen, self.config.tls, advertise=self.config.advertise)
        if self._fallback_factory is not None:
            self._fallback = self._fallback_factory(bound.endpoint)
        self.handler = ReplayHandler(self._library, self.config, bound.endpoint, self._fallback, bound.ca_pem)
        await add_introspection(server, (loaded.header for _, loaded in self._library.cassettes))
        server.add_generic_rpc_handlers((self.handler,))
        await server.start()
        self._server, self._bound = server, bound

    async def stop(self, grace: float = 1.0) -> ReplayReport:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._bound is not None:
            self._bound.cleanup()
        self._library.close()
        if self._fallback is not None:
            await self._fallback.aclose()
            self._fallback = None
        if self.handler is None:
            return ReplayReport(cassettes=[str(p) for p in self.config.cassettes])
        report = self.handler.finish_report()
        for observer in self.observers:
            observer(report)
        return report

    @property
    def report(self) -> ReplayReport:
        if self.handler is None:
            raise RuntimeError("the replay server is not started")
        return self.handler.finish_report()


@asynccontextmanager
async def replaying(
    *cassettes: str | Path,
    listen: str = DEFAULT_LISTEN,
    tls: ListenTLS | None = None,
    match: MatchMode | str = MatchMode.DEFAULT,
    ignores: Iterable[str] = (),
    allow_repeats: bool = False,
    speed: float = 0.0,
    causal_timeout: float = CAUSAL_TIMEOUT_S,
    unfinished_timeout: float = UNFINISHED_TIMEOUT_S,
    faults: FaultPlan | None = None,
    decoder: DecoderConfig = REPLAY_DECODER,
) -> AsyncIterator[ReplayServer]:
    """Serve cassettes for the duration of the block::

    async with jsreplay.replaying("cassettes/power.msgpack") as server:
        ...  # point a client at server.endpoint, trusting server.ca_pem

    `decoder`: how tunnels are decoded; its `locate_over` says which inner messages are read from the cassette
    when sent rather than held.
    """
    server = ReplayServer(
        ReplayConfig(
            cassettes=tuple(Path(c) for c in cassettes),
            listen=listen,
            tls=tls or ListenTLS(),
            match=MatchMode(match),
            ignores=tuple(ignores),
            allow_repeats=allow_repeats,
            speed=speed,
            causal_timeout=causal_timeout,
            unfinished_timeout=unfinished_timeout,
            faults=faults or FaultPlan(),
            decoder=decoder,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
