"""What `jsreplay verify` found: per inner call, per tunnel, and the controller calls nobody expected.

Text for people, JSON (`format: jsreplay-verify/1`, shape in docs/verify.md) for tools. Exit codes: 0 when
the exporter behaved as recorded, 1 when anything differs, is missing or is extra.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jsreplay.inspect.values import inline_text, to_json
from jsreplay.protocol.wire import short_method

JSON_FORMAT = "jsreplay-verify/1"
JSON_MAX_BYTES = 256
TEXT_VALUE = 80  # characters of a value shown in text output
TEXT_DIFFERENCES = 8  # differences shown per call in text output (JSON has them all)
TEXT_EXPLANATION = 300  # characters of a controller miss's explanation in text output


class Verdict(enum.Enum):
    SAME = "same"
    DIFFERENT = "different"
    MISSING = "missing"  # recorded, but the exporter gave no answer (or the tunnel never opened)
    EXTRA = "extra"  # the exporter did something the recording does not have


@dataclass(frozen=True)
class FieldDifference:
    kind: str  # as in `jsreplay diff`: field_changed, field_added, field_removed, unknown_field_added...
    path: str
    recorded: Any = None
    live: Any = None


@dataclass
class CallReport:
    path: str  # e.g. "RouterService/Stream[0] > ExporterService/DriverCall[1]"
    method: str
    verdict: Verdict
    differences: list[FieldDifference] = field(default_factory=list)
    reason: str = ""


class TunnelState(enum.Enum):
    DRIVEN = "driven"  # the exporter opened it and verify drove it to the end
    NOT_OPENED = "not_opened"  # announced (or due) but the exporter never opened it
    SKIPPED = "skipped"  # the recording cannot be driven; not announced to the exporter
    EXTRA = "extra"  # the exporter opened a router stream verify did not hand out (or opened one twice)


@dataclass(frozen=True)
class TunnelReport:
    recording: str  # the recorded router stream, e.g. "session.msgpack#12" ("" for extra streams)
    kind: str  # session, probe, skip, unknown
    state: TunnelState
    detail: str = ""
    count: int = 1  # extra streams alike are folded into one report

    @property
    def problem(self) -> bool:
        return self.state in (TunnelState.NOT_OPENED, TunnelState.EXTRA)


@dataclass(frozen=True)
class ControllerMiss:
    method: str
    explanation: str  # the matcher's: which recording is nearest and how the request differs
    served: str | None  # the recording verify answered with anyway, so the exporter could go on
    count: int = 1  # misses alike (method, explanation, served) are folded into one


def fold_misses(misses: list[ControllerMiss]) -> list[ControllerMiss]:
    """Repeated misses as one, with a count, in first-seen order."""
    counts: dict[tuple[str, str, str | None], int] = {}
    for m in misses:
        key = (m.method, m.explanation, m.served)
        counts[key] = counts.get(key, 0) + m.count
    return [ControllerMiss(method, text, served, count=n) for (method, text, served), n in counts.items()]


def fold_tunnels(tunnels: list[TunnelReport]) -> list[TunnelReport]:
    """Repeated tunnel reports (extra streams) as one, with a count, in first-seen order."""
    counts: dict[tuple[str, str, TunnelState, str], int] = {}
    for t in tunnels:
        key = (t.recording, t.kind, t.state, t.detail)
        counts[key] = counts.get(key, 0) + t.count
    return [TunnelReport(r, k, s, d, count=n) for (r, k, s, d), n in counts.items()]


@dataclass
class VerifyReport:
    cassette: str
    exporter: str = ""  # the live exporter's namespace/name, from its metadata
    calls: list[CallReport] = field(default_factory=list)
    tunnels: list[TunnelReport] = field(default_factory=list)
    misses: list[ControllerMiss] = field(default_factory=list)
    controller_calls: int = 0  # controller calls the exporter made
    unused: list[tuple[str, str]] = field(default_factory=list)  # exporter recordings not due before the end
    # The exporter's recorded controller calls, due before the last event verify played, that it did not make.
    missing_controller: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {v.value: 0 for v in Verdict}
        for call in self.calls:
            counts[call.verdict.value] += 1
        # A session tunnel that never opened shows as its missing calls; a probe has no calls to show it.
        counts[Verdict.MISSING.value] += sum(
            1 for t in self.tunnels if t.state is TunnelState.NOT_OPENED and t.kind != "session"
        )
        counts[Verdict.MISSING.value] += len(self.missing_controller)
        counts[Verdict.EXTRA.value] += sum(t.count for t in self.tunnels if t.state is TunnelState.EXTRA)
        counts["controller_misses"] = sum(m.count for m in self.misses)
        return counts

    @property
    def same(self) -> bool:
        """True when the exporter behaved as recorded (exit status 0)."""
        return (
            all(c.verdict is Verdict.SAME for c in self.calls)
            and not self.misses
            and not self.missing_controller
            and not any(t.problem for t in self.tunnels)
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.same else 1

    # ------------------------------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        return {
            "format": JSON_FORMAT,
            "cassette": self.cassette,
            "exporter": self.exporter,
            "result": "same" if self.same else "different",
            "counts": self.counts(),
            "calls": [
                {
                    "path": c.path,
                    "method": c.method,
                    "verdict": c.verdict.value,
                    **({"reason": c.reason} if c.reason else {}),
                    "differences": [
                        {
                            "kind": d.kind,
                            "path": d.path,
                            "recorded": to_json(d.recorded, JSON_MAX_BYTES),
                            "live": to_json(d.live, JSON_MAX_BYTES),
                        }
                        for d in c.differences
                    ],
                }
                for c in self.calls
            ],
            "tunnels": [
                {
                    "recording": t.recording,
                    "kind": t.kind,
                    "state": t.state.value,
                    "detail": t.detail,
                    **({"count": t.count} if t.count != 1 else {}),
                }
                for t in self.tunnels
            ],
            "controller": {
                "calls": self.controller_calls,
                "misses": [
                    {"method": m.method, "explanation": m.explanation, "served": m.served, "count": m.count}
                    for m in self.misses
                ],
                "missing": [{"recording": k, "method": m} for k, m in self.missing_controller],
                "unused": [{"recording": k, "method": m} for k, m in self.unused],
            },
            "notes": self.notes,
        }

    # ------------------------------------------------------------------------------------------ text

    def render_text(self, style: Callable[..., str] | None = None) -> str:
        def paint(text: str, **kwargs: Any) -> str:
            return style(text, **kwargs) if style is not None else text

        colours = {
            Verdict.SAME: "green",
            Verdict.DIFFERENT: "red",
            Verdict.MISSING: "red",
            Verdict.EXTRA: "yellow",
        }
        lines = [f"jsreplay verify: {self.cassette}" + (f" against exporter {self.exporter}" if self.exporter else "")]
        for tunnel in self.tunnels:
            detail = f": {tunnel.detail}" if tunnel.detail else ""
            label = f"{tunnel.kind} tunnel {tunnel.recording}" if tunnel.recording else "router stream"
            times = f" (x{tunnel.count})" if tunnel.count != 1 else ""
            text = f"  {label} {tunnel.state.value.replace('_', ' ')}{times}{detail}"
            lines.append(paint(text, fg="red") if tunnel.problem else text)
        for call in self.calls:
            verdict = paint(f"{call.verdict.value:<9}", fg=colours[call.verdict], bold=call.verdict is not Verdict.SAME)
            lines.append(f"  {verdict} {call.path}" + (f"  ({call.reason})" if call.reason else ""))
            for d in call.differences[:TEXT_DIFFERENCES]:
                where = d.path[len(call.path) :] if d.path.startswith(call.path) else d.path
                lines.append(f"              {where or '(call)'}: {_change(d)}")
            if len(call.differences) > TEXT_DIFFERENCES:
                lines.append(f"              … and {len(call.differences) - TEXT_DIFFERENCES} more (--format json)")
        for key, method in self.missing_controller:
            lines.append(paint(f"  missing   {short_method(method)} {key}  (recorded, not made)", fg="red"))
        if self.misses:
            total = sum(m.count for m in self.misses)
            lines.append(paint(f"  controller calls the cassette did not expect: {total}", fg="red"))
            for miss in self.misses:
                served = f" (answered with {miss.served})" if miss.served else " (refused)"
                times = f" x{miss.count}" if miss.count != 1 else ""
                lines.append(f"    {short_method(miss.method)}{times}{served}: {_cut(miss.explanation)}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        counts = self.counts()
        summary = ", ".join(f"{counts[v.value]} {v.value}" for v in Verdict)
        result = "SAME" if self.same else "DIFFERENT"
        lines.append(
            paint(f"result: {result}", fg="green" if self.same else "red", bold=True)
            + f" ({summary}; {counts['controller_misses']} unexpected controller calls of {self.controller_calls})"
        )
        return "\n".join(lines) + "\n"


def _cut(text: str) -> str:
    return text if len(text) <= TEXT_EXPLANATION else text[: TEXT_EXPLANATION - 1] + "…"


def _value(value: Any) -> str:
    text = inline_text(value)
    return text if len(text) <= TEXT_VALUE else text[: TEXT_VALUE - 1] + "…"


def _change(d: FieldDifference) -> str:
    if d.kind.endswith("_added"):
        return f"added {_value(d.live)}"
    if d.kind.endswith("_removed"):
        return f"removed (was {_value(d.recorded)})"
    return f"recorded {_value(d.recorded)}, got {_value(d.live)}"
