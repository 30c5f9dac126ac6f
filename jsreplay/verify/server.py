"""The verify server: the controller and the router for one real exporter, and the recorded client behind it.

The exporter's controller calls are answered from the cassette with replay's matcher (`replay.matching`),
response rewriting (`replay.rewrite`: router endpoints point here) and serving (`replay.serving.play`). What
differs from `jsreplay replay` is who is missing: there is no client, so verify schedules what the client's
actions used to cause, and then acts as that client inside the tunnels:

- **Status** messages go out in recorded order; a message that followed tunnels in the recording (the lease
  ending, `leased=false`) is held until those tunnels have been driven to their end.
- **Listen** messages go out for the tunnels verify will drive: sessions and probes (`plan`).
- **Streams the recorded exporter cancelled** (Status and Listen end that way) stay open until the live
  exporter cancels them too, instead of ending with a status the exporter never saw.
- **Router streams**: the exporter presents the recorded token; a session is driven by `session.TunnelSession`
  over `bridge.RouterBridge`; a probe gets a GOAWAY at once.
- **A controller call the cassette does not expect** is reported, and still answered with the nearest
  recording of that method (when there is one), so one unexpected field does not stop the whole session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from jsreplay.grpc_options import SERVER_OPTIONS
from jsreplay.inspect.ignores import Normalizer
from jsreplay.protocol.registry import ProtocolError, StreamKind
from jsreplay.protocol.wire import (
    GET_REPORT,
    GET_REPORT_RESPONSE,
    LISTEN,
    REGISTER,
    REGISTER_REQUEST,
    ROUTER_STREAM,
    short_method,
)
from jsreplay.replay.matching import Matcher, MatchMode
from jsreplay.replay.playback import play, sendable
from jsreplay.replay.rewrite import ResponseRewriter
from jsreplay.replay.script import Script
from jsreplay.serving import DEFAULT_LISTEN, BoundServer, ListenTLS, ServesEndpoint, bind, rpc_method_handler
from jsreplay.session.drivers import driver_names
from jsreplay.session.optional import is_optional
from jsreplay.session.tokens import bearer_token
from jsreplay.verify.bridge import INNER_CHANNEL_OPTIONS, OneConnection, RouterBridge
from jsreplay.verify.compare import compare_call
from jsreplay.verify.plan import Plan, PlannedTunnel, TunnelKind, load_plan
from jsreplay.verify.report import (
    ControllerMiss,
    TunnelReport,
    TunnelState,
    VerifyReport,
    fold_misses,
    fold_tunnels,
)
from jsreplay.verify.session import LiveCall, TunnelSession
from jsreplay.verify.uuids import UuidMap

log = logging.getLogger("jsreplay.verify")

DEFAULT_TIMEOUT_S = 30.0
SETTLE_QUIET_S = 0.5  # after the last held message: how long without controller calls ends the session
SETTLE_LIMIT_S = 5.0
PROBE_LINGER_S = 5.0  # how long a probe or an extra stream may take to close after our GOAWAY
REOPEN_CAP = 3  # re-opened streams held open per method; more are refused (and all are reported once)
RUN_LIMIT_STEPS = 4  # the whole session, once the exporter is connected, takes at most this many timeouts


class VerifyError(Exception):
    """Verify could not run (no exporter connected, a cassette with nothing to verify): exit status 2."""


@dataclass(frozen=True, kw_only=True)
class VerifyConfig:
    cassette: Path
    listen: str = DEFAULT_LISTEN
    advertise: str | None = None
    tls: ListenTLS = field(default_factory=ListenTLS)
    ignores: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT_S  # connect wait, and the longest wait for any next step after that
    schema: bytes | None = None  # --schema: decode the cassette with it instead of its own


@dataclass
class _TunnelRun:
    planned: PlannedTunnel
    announced: bool = False
    opened: bool = False
    done: bool = False
    gave_up: bool = False
    session: TunnelSession | None = None
    detail: str = ""


class VerifyHandler(grpc.GenericRpcHandler):
    def __init__(self, plan: Plan, config: VerifyConfig, advertise: str) -> None:
        self.plan = plan
        self.config = config
        self.registry = plan.registry
        self.matcher = Matcher(
            registry_for=plan.library.registry_for,
            kind_of=self.registry.kind_of,
            mode=MatchMode.DEFAULT,
            ignores=config.ignores,
        )
        self.matcher.add(plan.scripts)
        shift = (time.time_ns() - plan.library.created_unix_ns) // 1_000_000_000
        self.rewriter = ResponseRewriter(self.registry, advertise=advertise, shift_seconds=max(0, shift))
        self.runs = {token: _TunnelRun(planned=t) for token, t in plan.tunnels.items()}
        for run in self.runs.values():
            if run.planned.kind is TunnelKind.SKIP:
                run.done = True
        self.uuids = UuidMap()
        self.connected = asyncio.Event()
        self.closing = asyncio.Event()  # verify is stopping: end the streams held open
        self.exporter = ""
        self.misses: list[ControllerMiss] = []
        self.extra: list[TunnelReport] = []
        self.notes: list[str] = []
        self.live_reports: list[dict[str, Any]] = []
        self.controller_calls = 0
        self.held = 0  # streamed messages waiting for tunnels to finish
        self.last_activity = time.monotonic()
        self.last_controller = time.monotonic()
        self._changed = asyncio.Event()
        # The recorded exporter's controller events, (script key, what, index) -> seq: its call starts, and the
        # messages and ends of its streams. A streamed event goes out once the messages and ends before it have.
        self.events: dict[tuple[str, str, int], int] = {}
        self.happened: set[tuple[str, str, int]] = set()
        for script in plan.scripts:
            self.events[(script.key, "start", 0)] = script.start_seq
            if self.registry.kind_of(script.method) is StreamKind.SERVER_STREAMING:
                for i, response in enumerate(script.responses):
                    self.events[(script.key, "message", i)] = response.seq
                if script.key in plan.end_seqs:
                    self.events[(script.key, "end", 0)] = plan.end_seqs[script.key]
        self.reopened: dict[str, int] = {}  # streams the exporter opened again after their recordings were used
        self.optional: list[str] = []  # optional RPCs the cassette does not have, answered UNIMPLEMENTED

    # ------------------------------------------------------------------------------------------ progress

    def close(self) -> None:
        self.closing.set()
        self.activity()

    def activity(self) -> None:
        self.last_activity = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(0.0, timeout))

    def tunnels_done(self) -> bool:
        return all(run.done or run.gave_up for run in self.runs.values())

    def happen(self, key: str, what: str, index: int = 0) -> None:
        self.happened.add((key, what, index))
        self.activity()

    def waiting_for(self, key: str, seq: int) -> list[str]:
        """What the recording had done before `seq` that has not happened live (other calls than `key`): the
        messages and ends of the exporter's other streams, and tunnels that had ended (a tunnel's start is not a
        cause: the client's end opens as the Listen message goes out, racing it). The exporter's own unary calls are not
        waited for: when they came before a message in the recording is a race of the recording (the 0.9.0
        exporter reports LEASE_READY after its Listen stream has yielded, and a recording may show it before)."""
        pending = [
            f"{what} {index} of {k}" if what == "message" else f"{what} of {k}"
            for (k, what, index), at in self.events.items()
            if at < seq and k != key and what != "start" and (k, what, index) not in self.happened
        ]
        pending.extend(
            f"tunnel {run.planned.key}"
            for run in self.runs.values()
            if run.planned.end_seq < seq and not (run.done or run.gave_up)
        )
        return pending

    def give_up(self) -> None:
        """The exporter stopped making progress: stop waiting for tunnels it has not finished."""
        for run in self.runs.values():
            if not run.done:
                run.gave_up = True
        self.activity()

    # ------------------------------------------------------------------------------------------ dispatch

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        kind = StreamKind.BIDI_STREAMING if method == ROUTER_STREAM else self.registry.kind_of(method)

        async def handler(request: object, context: grpc.aio.ServicerContext) -> Any:
            if method == ROUTER_STREAM:
                return await self._router(context)
            return await self._controller(method, kind, request if isinstance(request, bytes) else None, context)

        return rpc_method_handler(kind, handler)

    # ------------------------------------------------------------------------------------------ controller

    def _note_caller(self, context: grpc.aio.ServicerContext) -> None:
        if not self.exporter:
            metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            name, namespace = metadata.get("jumpstarter-name", ""), metadata.get("jumpstarter-namespace", "")
            self.exporter = f"{namespace}/{name}" if namespace and name else name
        self.connected.set()

    def _fallback(self, method: str) -> Script | None:
        """The recording to answer an unexpected call with: the first unused one of its method, else the last."""
        scripts = [(s, used) for s, used in self.matcher.scripts() if s.method == method]
        if not scripts:
            return None
        return next((s for s, used in scripts if not used), scripts[-1][0])

    def _completed(self, script: Script) -> Script:
        """A unary recording the recorded exporter cancelled has no answer: use one of its method that has."""
        if script.code is not None or script.responses:
            return script
        for other, _ in self.matcher.scripts():
            if other.method == script.method and other.code == 0 and other.responses:
                return other
        return script

    async def _controller(
        self, method: str, kind: StreamKind, first: bytes | None, context: grpc.aio.ServicerContext
    ) -> bytes | None:
        self._note_caller(context)
        self.controller_calls += 1
        self.last_controller = time.monotonic()
        self.activity()
        if method == REGISTER and first is not None:
            with contextlib.suppress(ProtocolError):
                reports = self.registry.decode(REGISTER_REQUEST, first).get("reports") or []
                self.live_reports.extend(r for r in reports if isinstance(r, dict))
        outcome = self.matcher.match(method, first)
        script = outcome.script
        if script is not None and not outcome.repeated:
            self.happen(script.key, "start")
        if script is None and kind is StreamKind.SERVER_STREAMING and self._used_up(method, first):
            # A stream opened again after its recordings were played (the exporter retries Listen and Status
            # when they end): a controller would hold it open with nothing new to say; verify does the same.
            count = self.reopened.get(method, 0) + 1
            self.reopened[method] = count
            if count > REOPEN_CAP:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "jsreplay verify: re-opened too often")
                return None
            await self.closing.wait()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "jsreplay verify: finished")
            return None
        if script is None and is_optional(method) and self._fallback(method) is None:
            # An optional RPC the recorded session did not make: answered as a controller without it would.
            self.optional.append(method)
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not in the cassette")
            return None
        if script is None:
            fallback = self._fallback(method)
            log.warning("%s", outcome.explanation)
            self.misses.append(ControllerMiss(method, outcome.explanation, fallback.key if fallback else None))
            if fallback is None:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, outcome.explanation)
                return None
            script = fallback
            self.happen(script.key, "start")  # it stands for the recorded call in the causal order
        if kind is StreamKind.SERVER_STREAMING:
            await self._stream(method, script, context)
            return None
        if kind in (StreamKind.UNARY, StreamKind.CLIENT_STREAMING):
            script = self._completed(script)
        return await play(
            script, kind, context, first_request=first, rewrite=lambda data: self.rewriter.rewrite(method, data)
        )

    def _used_up(self, method: str, first: bytes | None) -> bool:
        """Whether a recording of `method` matches `first` but has been served already."""
        return any(
            used and not self.matcher.differences(s, first) for s, used in self.matcher.scripts() if s.method == method
        )

    async def _stream(self, method: str, script: Script, context: grpc.aio.ServicerContext) -> None:
        if script.initial_metadata is not None:
            await context.send_initial_metadata(sendable(script.initial_metadata))
        for i, response in enumerate(script.responses):
            await self._hold(script.key, response.seq, f"{short_method(method)} message {i}")
            if self.closing.is_set():
                await context.abort(grpc.StatusCode.UNAVAILABLE, "jsreplay verify: finished")
            data = self.rewriter.rewrite(method, response.data)
            if method == LISTEN and not self._announce(response.data):
                self.happen(script.key, "message", i)
                continue
            await context.write(data)
            self.last_controller = time.monotonic()
            self.happen(script.key, "message", i)
        end = self.plan.end_seqs.get(script.key)
        if script.code is not None and end is not None:
            # The end of a stream is an event like its messages: a Listen that a controller ended at the end
            # of the lease ends only after the lease has ended here too (else the exporter opens it again).
            await self._hold(script.key, end, f"the end of {short_method(method)}")
        self.happen(script.key, "end")
        if script.code is None:
            # The recorded exporter cancelled this stream (Status, Listen): the live one will too, or verify
            # ends it when it stops (ending it here rather than letting the server cancel the handler, which
            # gRPC logs as an unhandled error).
            await self.closing.wait()
            await context.abort(grpc.StatusCode.UNAVAILABLE, "jsreplay verify: finished")
        if script.code != 0:
            code = next((c for c in grpc.StatusCode if c.value[0] == script.code), grpc.StatusCode.UNKNOWN)
            await context.abort(code, script.details, trailing_metadata=sendable(script.trailing_metadata))
        context.set_trailing_metadata(sendable(script.trailing_metadata))

    async def _hold(self, key: str, seq: int, what: str) -> None:
        """Hold a streamed event of recording `key` until what came before it in the recording has happened:
        the exporter's earlier controller calls, the earlier messages and ends of its other streams, and the
        tunnels opened before it (driven to their end). Gives up after the timeout without progress."""
        if not self.waiting_for(key, seq):
            return
        self.held += 1
        try:
            while (pending := self.waiting_for(key, seq)) and not self.closing.is_set():
                if time.monotonic() - self.last_activity >= self.config.timeout:
                    self.notes.append(
                        f"{what} sent after {self.config.timeout:g}s without progress, before: {', '.join(pending[:3])}"
                    )
                    return
                await self.changed(1.0)
        finally:
            self.held -= 1

    def _announce(self, data: bytes) -> bool:
        """Whether to send a Listen message: only for tunnels verify will drive."""
        info = self.registry.method(LISTEN)
        try:
            token = str(getattr(self.registry.parse(info.response_type, data), "router_token", "")) if info else ""
        except ProtocolError:
            token = ""
        run = self.runs.get(token)
        if run is None:
            self.notes.append("a recorded Listen message names a router token with no recorded tunnel; not sent")
            return False
        if run.planned.kind is TunnelKind.SKIP:
            self.notes.append(f"tunnel {run.planned.key} not announced: {run.planned.reason}")
            return False
        run.announced = True
        return True

    # ------------------------------------------------------------------------------------------ router

    async def _router(self, context: grpc.aio.ServicerContext) -> None:
        self.activity()
        token = bearer_token(context.invocation_metadata() or ()) or ""
        run = self.runs.get(token)
        bridge = RouterBridge(context, self.registry, self.activity)
        if run is None or run.opened or run.planned.kind is TunnelKind.SKIP:
            what = "a token verify did not hand out" if run is None else f"the token of {run.planned.key} again"
            self.extra.append(TunnelReport("", "unknown", TunnelState.EXTRA, f"the exporter presented {what}"))
            await self._close(bridge)
            return
        run.opened = True
        try:
            if run.planned.kind is TunnelKind.PROBE:
                await self._close(bridge)
                run.detail = "closed with GOAWAY, as the recorded probe was"
            else:
                await self._drive(run, context, bridge)
        finally:
            run.done = True
            self.activity()

    async def _close(self, bridge: RouterBridge) -> None:
        await bridge.send_goaway()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(bridge.drain_exporter(), PROBE_LINGER_S)

    async def _drive(self, run: _TunnelRun, context: grpc.aio.ServicerContext, bridge: RouterBridge) -> None:
        listener = OneConnection()
        port = await listener.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=INNER_CHANNEL_OPTIONS)
        session = TunnelSession(
            run.planned.calls,
            self.registry,
            self.uuids,
            timeout=self.config.timeout,
            handouts=run.planned.handouts,
            on_activity=self.activity,
        )
        run.session = session
        pumps: list[asyncio.Task[None]] = []
        writers: list[asyncio.StreamWriter] = []

        async def connect() -> None:
            reader, writer = await listener.accepted()
            writers.append(writer)
            pumps.append(asyncio.create_task(bridge.to_exporter(reader)))
            pumps.append(asyncio.create_task(bridge.from_exporter(writer)))

        connecting = asyncio.create_task(connect())
        try:
            await session.run(channel)
        finally:
            await channel.close()
            listener.close()
            connecting.cancel()
            # gRPC may keep the closed channel's connection a while: close the socket so the exporter hears
            # the end now (to_exporter sends the GOAWAY), then let it close its side.
            for writer in writers:
                writer.close()
            if pumps:
                _, pending = await asyncio.wait(pumps, timeout=PROBE_LINGER_S)
                for task in pending:
                    task.cancel()
        run.detail = f"{len(run.planned.calls)} inner calls"

    # ------------------------------------------------------------------------------------------ report

    def report(self) -> VerifyReport:
        report = VerifyReport(cassette=str(self.plan.cassette), exporter=self.exporter)
        recorded_normalizer = Normalizer(ignores=self.config.ignores, drivers=driver_names(self.plan.recorded_reports))
        live_reports = list(self.live_reports)
        for run in self.runs.values():
            if run.session is None:
                continue
            for live in run.session.live:
                if live.method == GET_REPORT and live.code == 0 and live.responses:
                    with contextlib.suppress(ProtocolError):
                        value = self.registry.decode(GET_REPORT_RESPONSE, live.responses[0])
                        live_reports.extend(r for r in value.get("reports") or [] if isinstance(r, dict))
        live_normalizer = Normalizer(ignores=self.config.ignores, drivers=driver_names(live_reports))
        for planned in self.plan.tunnel_by_start():
            run = self.runs[planned.token]
            report.tunnels.append(self._tunnel_report(run))
            if planned.elided_upload:
                report.notes.append(f"tunnel {planned.key} not verified: {planned.reason}")
            if planned.kind is not TunnelKind.SESSION:
                continue
            prefix = f"RouterService/Stream[{planned.index}] > "
            seen: dict[str, int] = {}
            lives = run.session.live if run.session is not None else None
            for i, recorded in enumerate(planned.calls):
                short = short_method(recorded.method or "?")
                n = seen.get(short, 0)
                seen[short] = n + 1
                path = f"{prefix}{short}[{n}]"
                if lives is None:
                    live = LiveCall(recorded=recorded, note=f"not sent: {self._why_not_opened(run)}")
                else:
                    live = lives[i]
                report.calls.append(
                    compare_call(
                        self.registry,
                        recorded,
                        live,
                        path,
                        recorded_normalizer=recorded_normalizer,
                        live_normalizer=live_normalizer,
                    )
                )
            if planned.reason:
                report.notes.append(f"tunnel {planned.key}: decoding stopped early: {planned.reason}")
        report.tunnels.extend(fold_tunnels(self.extra))
        report.misses = fold_misses(self.misses)
        for method, count in self.reopened.items():
            report.misses.append(
                ControllerMiss(
                    method,
                    f"opened again {count} time(s) after its recording was played (held open, as a controller"
                    " would; more than "
                    f"{REOPEN_CAP} refused)",
                    None,
                    count=count,
                )
            )
        # The exporter's recorded controller calls that came before the last event verify played, not made.
        horizon = max((self.events.get(e, 0) for e in self.happened if e[1] != "start"), default=0)
        report.missing_controller = [
            (s.key, s.method) for s, used in self.matcher.scripts() if not used and s.start_seq < horizon
        ]
        for method in dict.fromkeys(self.optional):
            report.notes.append(
                f"the exporter called {short_method(method)} (optional, not in the cassette): answered UNIMPLEMENTED"
            )
        report.controller_calls = self.controller_calls
        missing = set(report.missing_controller)
        report.unused = [
            (s.key, s.method) for s, used in self.matcher.scripts() if not used and (s.key, s.method) not in missing
        ]
        if self.uuids.unmatched:
            unmatched = ", ".join(sorted(set(self.uuids.unmatched)))
            report.notes.append(f"recorded drivers with no live driver at the same place: {unmatched}")
        if not any(t.kind is TunnelKind.SESSION for t in self.plan.tunnels.values()):
            # SAME then speaks of the controller calls alone: say so, rather than let it read as the whole session.
            report.notes.append(
                "the cassette holds no tunnel with inner calls: only the exporter's controller calls were compared "
                "(no driver was called)"
            )
        report.notes.extend(dict.fromkeys(self.notes))
        return report

    def _why_not_opened(self, run: _TunnelRun) -> str:
        if not run.announced:
            return "its Listen message was never sent (the exporter did not open Listen for the lease)"
        return "the exporter never opened the router stream its Listen message announced"

    def _tunnel_report(self, run: _TunnelRun) -> TunnelReport:
        planned = run.planned
        if planned.kind is TunnelKind.SKIP:
            return TunnelReport(planned.key, planned.kind.value, TunnelState.SKIPPED, planned.reason)
        if not run.opened:
            return TunnelReport(planned.key, planned.kind.value, TunnelState.NOT_OPENED, self._why_not_opened(run))
        return TunnelReport(planned.key, planned.kind.value, TunnelState.DRIVEN, run.detail)


class Verifier(ServesEndpoint):
    """The verify server; `verifying()` is the usual way to run one."""

    _what = "verify server"

    def __init__(self, config: VerifyConfig) -> None:
        self.config = config
        self.plan = load_plan(config.cassette, config.schema)
        if not self.plan.scripts:
            raise VerifyError(f"{config.cassette} has no exporter calls to verify against (was an exporter recorded?)")
        self._server: grpc.aio.Server | None = None
        self._bound: BoundServer | None = None
        self.handler: VerifyHandler | None = None

    async def start(self) -> None:
        server = grpc.aio.server(options=SERVER_OPTIONS)
        bound = bind(server, self.config.listen, self.config.tls, advertise=self.config.advertise)
        self.handler = VerifyHandler(self.plan, self.config, bound.endpoint)
        server.add_generic_rpc_handlers((self.handler,))
        await server.start()
        self._server, self._bound = server, bound

    async def stop(self, grace: float = 0.5) -> None:
        if self.handler is not None:
            self.handler.close()
            await asyncio.sleep(0)  # let the held streams end themselves
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._bound is not None:
            self._bound.cleanup()
            self._bound = None

    async def wait(self, timeout: float | None = None) -> VerifyReport:
        """Wait for an exporter, drive the recorded session through it, and report.

        `timeout` (default: the config's) bounds the wait for the exporter's first call; after that, verify
        gives up on whatever has made no progress for the config's timeout. Raises VerifyError when no exporter
        connected in time. The server keeps answering afterwards (an exporter that stops can still Unregister)
        until the `verifying()` block ends.
        """
        handler = self.handler
        if handler is None:
            raise RuntimeError("the verify server is not started")
        connect_timeout = self.config.timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(handler.connected.wait(), connect_timeout)
        except TimeoutError:
            raise VerifyError(f"no exporter connected to {self.endpoint} within {connect_timeout:g}s") from None
        step = self.config.timeout
        deadline = time.monotonic() + RUN_LIMIT_STEPS * step
        while not handler.tunnels_done():
            idle = time.monotonic() - handler.last_activity
            if idle >= step:
                log.warning("the exporter made no progress for %gs; reporting what happened", step)
                handler.give_up()
                break
            if time.monotonic() >= deadline:
                handler.notes.append(
                    f"verify stopped driving after {RUN_LIMIT_STEPS * step:g}s (--timeout x{RUN_LIMIT_STEPS})"
                )
                handler.give_up()
                break
            await handler.changed(min(step - idle, max(0.01, deadline - time.monotonic())))
        await self._settle(handler)
        return handler.report()

    async def _settle(self, handler: VerifyHandler) -> None:
        """Let the messages held for the tunnels go out, and the exporter's answers to them (its ReportStatus)."""
        limit = time.monotonic() + min(SETTLE_LIMIT_S, self.config.timeout)
        while time.monotonic() < limit:
            quiet = time.monotonic() - handler.last_controller
            if handler.held == 0 and quiet >= SETTLE_QUIET_S:
                return
            await handler.changed(min(SETTLE_QUIET_S, max(0.01, SETTLE_QUIET_S - quiet)))


@asynccontextmanager
async def verifying(
    cassette: str | Path,
    *,
    listen: str = DEFAULT_LISTEN,
    advertise: str | None = None,
    tls: ListenTLS | None = None,
    ignores: Iterable[str] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> AsyncIterator[Verifier]:
    """Serve a cassette to a real exporter for the duration of the block::

    async with jsreplay.verify.verifying("session.msgpack") as v:
        ...  # start an exporter with endpoint v.endpoint, trusting v.ca_pem
        report = await v.wait()
    assert report.same, report.render_text()
    """
    verifier = Verifier(
        VerifyConfig(
            cassette=Path(cassette),
            listen=listen,
            advertise=advertise,
            tls=tls or ListenTLS(),
            ignores=tuple(ignores),
            timeout=timeout,
        )
    )
    await verifier.start()
    try:
        yield verifier
    finally:
        await verifier.stop()
