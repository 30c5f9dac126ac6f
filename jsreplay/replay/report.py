"""What a replay used, left unused and missed: printed at the end and written as JSON with --report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsreplay.replay.coverage import Coverage, RecordingUse
from jsreplay.replay.faults import Injection


@dataclass(frozen=True)
class Miss:
    method: str
    reason: str
    at_s: float  # seconds since the replay server started


@dataclass
class ReplayReport:
    cassettes: list[str]
    used: list[tuple[str, str, int]] = field(default_factory=list)  # (recording, method, times served)
    unused: list[tuple[str, str]] = field(default_factory=list)
    missed: list[Miss] = field(default_factory=list)
    forwarded: list[Miss] = field(default_factory=list)  # misses sent to the upstream (new_episodes)
    inner: list[tuple[str, str, int]] = field(default_factory=list)  # tunnel calls: (recording, method, times)
    tunnels_used: list[str] = field(default_factory=list)
    tunnels_unused: list[str] = field(default_factory=list)
    causal_timeouts: list[str] = field(default_factory=list)
    errors: list[Miss] = field(default_factory=list)  # calls failed: their recording could not be read, bad input
    unfinished: list[Miss] = field(default_factory=list)  # calls whose recording has no end (a cut cassette)
    injected: list[Injection] = field(default_factory=list)  # faults, delays and cuts injected (never misses)
    recordings: list[RecordingUse] = field(default_factory=list)  # every recording, served or not (coverage)
    notes: list[str] = field(default_factory=list)  # what is worth knowing but not a miss (optional RPCs answered)

    def coverage(self) -> Coverage:
        return Coverage.of(self.recordings, (injection_json(i) for i in self.injected))

    @property
    def left(self) -> list[RecordingUse]:
        """Recordings never used and required (see `jsreplay.replay.coverage`): what --fail-unused fails on."""
        return [r for r in self.recordings if r.left]

    unchecked_streams: dict[str, str] = field(default_factory=dict)  # byte stream identity -> why not checked

    def to_json(self) -> dict[str, Any]:
        return {
            "cassettes": self.cassettes,
            "used": [{"recording": k, "method": m, "times": n} for k, m, n in self.used],
            "unused": [{"recording": k, "method": m} for k, m in self.unused],
            "missed": [{"method": m.method, "reason": m.reason, "at_s": round(m.at_s, 3)} for m in self.missed],
            "forwarded": [{"method": m.method, "reason": m.reason, "at_s": round(m.at_s, 3)} for m in self.forwarded],
            "tunnels": {
                "used": self.tunnels_used,
                "unused": self.tunnels_unused,
                "inner_calls": [{"recording": k, "method": m, "times": n} for k, m, n in self.inner],
                "unchecked_streams": [{"stream": k, "by": v} for k, v in sorted(self.unchecked_streams.items())],
            },
            "causal_timeouts": self.causal_timeouts,
            "errors": [{"method": m.method, "reason": m.reason, "at_s": round(m.at_s, 3)} for m in self.errors],
            "unfinished": [{"method": m.method, "reason": m.reason, "at_s": round(m.at_s, 3)} for m in self.unfinished],
            "injected": [injection_json(i) for i in self.injected],
            "notes": self.notes,
            "left": [{"recording": r.recording, "method": r.method, "driver_call": r.driver_call} for r in self.left],
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def summary(self) -> str:
        inner_used = sum(1 for _, _, n in self.inner if n)
        return (
            f"{sum(n for _, _, n in self.used)} calls served from {len(self.used)} recordings "
            f"({len(self.unused)} unused), {len(self.tunnels_used)} tunnels with {inner_used} inner calls, "
            f"{len(self.missed)} missed"
            + (f", {len(self.forwarded)} forwarded to the upstream and recorded" if self.forwarded else "")
            + (f", {len(self.unfinished)} unfinished (their recording has no end)" if self.unfinished else "")
            + (f", {len(self.errors)} failed" if self.errors else "")
            + (f", {len(self.injected)} injected" if self.injected else "")
            + (
                f", bytes not checked for {', '.join(f'{k} ({v})' for k, v in sorted(self.unchecked_streams.items()))}"
                if self.unchecked_streams
                else ""
            )
            + "".join(f"\nnote: {note}" for note in self.notes)
        )


def injection_json(injection: Injection) -> dict[str, Any]:
    return {
        "kind": injection.kind,
        "spec": injection.spec,
        "method": injection.method,
        "occurrence": injection.occurrence,
        "driver_call": injection.driver_call,
        "recording": injection.recording,
        "detail": injection.detail,
        "at_s": round(injection.at_s, 3),
    }
