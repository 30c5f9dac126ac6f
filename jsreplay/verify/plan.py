"""What verify will do, read from one cassette: the exporter's controller calls and the tunnels to drive.

The controller calls come from `jsreplay.replay.library` as replay loads them (scripts), keeping the exporter's
only: verify plays the controller for one exporter, and the recorded client's calls (CreateLease, Dial...) are
not for it to answer. Tunnels are keyed by the router token the exporter will present (the recorded, usually
redacted, value that the replayed Listen response hands it). Each is one of:

- `session`: the recorded tunnel carried an inner HTTP/2 connection; verify acts as the recorded client.
- `probe`: no inner connection at all (the client's readiness probe, which connects and closes at once);
  verify accepts the exporter's stream and ends it with a GOAWAY, as the probe did.
- `skip`: the recording cannot be driven (its frames do not decode); its Listen message is not sent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsreplay.cassette.model import Call, Role, metadata_get
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import (
    EXPORTER_METHODS,
    GET_REPORT,
    GET_REPORT_RESPONSE,
    REGISTER,
    REGISTER_REQUEST,
    ROUTER_STREAM,
)
from jsreplay.replay.library import Library, load_library, whole_cassette
from jsreplay.replay.script import Script
from jsreplay.session.tokens import bearer_token
from jsreplay.session.tunnels import RecordedTunnel, TunnelSide, better_carrier, decode_router_call
from jsreplay.tunnel.calls import InnerCall
from jsreplay.verify.handles import Place, find_handouts


class TunnelKind(enum.Enum):
    SESSION = "session"
    PROBE = "probe"
    SKIP = "skip"


@dataclass
class PlannedTunnel:
    token: str  # the bearer value the exporter will present
    key: str  # the recording it comes from, e.g. "session.msgpack#12"
    start_seq: int  # when the tunnel's first end opened, in cassette order
    kind: TunnelKind
    end_seq: int = 0  # the last event of either end, in cassette order
    calls: list[InnerCall] = field(default_factory=list)  # inner calls with a method, in stream-id order
    index: int | None = None  # session tunnels: 0, 1, ... in start order (the `[n]` of report paths)
    reason: str = ""  # why a tunnel is skipped, or how its decoding stopped early
    handouts: list[Place] = field(default_factory=list)  # values the exporter handed out and the client sent back
    elided_upload: bool = False  # skipped: the client uploaded bytes the recording kept as length and digest only


@dataclass
class Plan:
    cassette: Path
    library: Library
    registry: Registry
    scripts: list[Script]  # the exporter's controller calls
    tunnels: dict[str, PlannedTunnel]
    recorded_reports: list[dict[str, Any]]  # decoded driver reports (Register requests, GetReport responses)
    exporter: str = ""  # "namespace/name" the recording's exporter used, when known
    end_seqs: dict[str, int] = field(default_factory=dict)  # script key -> seq of its recorded status

    def tunnel_by_start(self) -> list[PlannedTunnel]:
        return sorted(self.tunnels.values(), key=lambda t: t.start_seq)


def _is_exporters(script: Script) -> bool:
    if script.peer:
        return script.peer.startswith("Exporter:")
    return script.method in EXPORTER_METHODS


def load_plan(cassette: Path, schema: bytes | None = None) -> Plan:
    library = load_library([cassette], schema)
    path = library.cassettes[0][0]
    loaded = whole_cassette(path)  # verify drives every tunnel: decode the whole (small) cassette here
    registry = library.registries[path.name]
    scripts = [s for s in library.scripts if _is_exporters(s)]
    decoded: dict[str, tuple[RecordedTunnel, Call]] = {}
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    reports: list[dict[str, Any]] = []
    exporter = ""
    end_seqs: dict[str, int] = {}
    for call in loaded.calls():
        if call.status is not None:
            end_seqs[f"{path.name}#{call.call_id}"] = call.status.seq
        if call.method != ROUTER_STREAM or call.role is not Role.ROUTER:
            if call.method == REGISTER:
                exporter = exporter or _identity(call)
                for data in call.requests:
                    reports.extend(_decode_reports(registry, REGISTER_REQUEST, data))
            continue
        token = bearer_token(call.start.metadata) or ""
        starts[token] = min(starts.get(token, call.start.seq), call.start.seq)
        ends[token] = max(ends.get(token, 0), max((e.seq for e in call.events), default=call.start.seq))
        tunnel = decode_router_call(call, registry)
        current = decoded.get(token)
        if better_carrier(current[0].side if current else None, tunnel.side):
            decoded[token] = (tunnel, call)
    tunnels: dict[str, PlannedTunnel] = {}
    for token, (tunnel, call) in decoded.items():
        key = f"{path.name}#{call.call_id}"
        calls = [c for c in tunnel.calls if c.method]
        if tunnel.side is TunnelSide.UNKNOWN:
            kind = TunnelKind.SKIP if tunnel.error else TunnelKind.PROBE
        elif not calls:
            kind = TunnelKind.SKIP
        else:
            kind = TunnelKind.SESSION
        reason = tunnel.error or ("" if kind is not TunnelKind.SKIP else "no inner call decoded")
        elided = [c for c in calls if c.elided]
        if kind is TunnelKind.SESSION and elided:
            # Driving the session would send the exporter an empty upload in its place: not what was recorded.
            kind = TunnelKind.SKIP
            sizes = ", ".join(f"stream {c.stream_id}: {c.elided[-1].length} bytes" for c in elided)
            reason = (
                f"it uploads bytes the recording kept as length and SHA-256 only ({sizes}; jsreplay record "
                "--elide-above), which verify cannot send; record with --keep-payloads to verify this session"
            )
        tunnels[token] = PlannedTunnel(
            token=token,
            key=key,
            start_seq=starts[token],
            end_seq=ends[token],
            kind=kind,
            calls=calls,
            reason=reason,
            handouts=find_handouts(registry, calls) if kind is TunnelKind.SESSION else [],
            elided_upload=bool(elided),
        )
        for inner in calls:
            if inner.method == GET_REPORT:
                for data in inner.responses:
                    reports.extend(_decode_reports(registry, GET_REPORT_RESPONSE, data))
    index = 0
    for planned in sorted(tunnels.values(), key=lambda t: t.start_seq):
        if planned.kind is TunnelKind.SESSION:
            planned.index = index
            index += 1
    return Plan(
        cassette=cassette,
        library=library,
        registry=registry,
        scripts=scripts,
        tunnels=tunnels,
        recorded_reports=reports,
        exporter=exporter,
        end_seqs=end_seqs,
    )


def _identity(call: Call) -> str:
    name = metadata_get(call.start.metadata, "jumpstarter-name")
    namespace = metadata_get(call.start.metadata, "jumpstarter-namespace")
    if not isinstance(name, str) or not name:
        return ""
    return f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name


def _decode_reports(registry: Registry, type_name: str, data: bytes) -> list[dict[str, Any]]:
    try:
        value = registry.decode(type_name, data)
    except ProtocolError:
        return []
    reports = value.get("reports") or []
    return [r for r in reports if isinstance(r, dict)]
