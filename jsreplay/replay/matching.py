"""Matching live requests to recordings, and explaining misses field by field.

Modes: `default` compares decoded requests after masking a documented set of volatile fields (and `--ignore`
paths); `strict` compares every byte; `order` only the method, taking recordings in order. Recordings are used
up in order. When the matching ones are used up, a unary call gets the last matching recording again in
`default` and `order` mode (polling loops like GetLease and ReportStatus run more or fewer times than recorded);
`strict` never repeats unless `--allow-repeats`.

A value that was redacted when recorded (`redacted:…`) matches any live value: the live secret cannot be
fingerprinted with the recording's key, which was never stored.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsreplay.cassette.redaction import REDACTED_PREFIX
from jsreplay.protocol.registry import ProtocolError, Registry, StreamKind, unknown_map
from jsreplay.protocol.wire import short_method
from jsreplay.replay.script import Script
from jsreplay.session.volatile import MATCHING_IGNORES, IgnoreRule


class MatchMode(enum.Enum):
    DEFAULT = "default"
    STRICT = "strict"
    ORDER = "order"


@dataclass(frozen=True)
class Mismatch:
    """Where a live request differs from a recorded one (diff's `Difference` is a reported change between cassettes)."""

    path: str
    recorded: Any
    live: Any

    def __str__(self) -> str:
        recorded, live = _around_difference(repr(self.recorded), repr(self.live))
        return f"{self.path or '(message)'}: recorded {recorded}, got {live}"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _around_difference(a: str, b: str, limit: int = 80, before: int = 24) -> tuple[str, str]:
    """Both texts cut to `limit` characters around where they first differ (not their common prefix), with
    the offset said when the cut starts later: two long values that differ only at the end stay telling."""
    if len(a) <= limit and len(b) <= limit:
        return a, b
    first = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    start = max(0, first - before)

    def cut(text: str) -> str:
        piece = text[start : start + limit]
        head = f"…(at {start}) " if start else ""
        tail = "…" if start + limit < len(text) else ""
        return head + piece + tail

    return cut(a), cut(b)


_MISSING = "<absent>"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """A decoded message as {path: leaf value}; list items get `[i]` in the path."""
    out: dict[str, Any] = {}
    if isinstance(value, dict):
        if not value and prefix:
            out[prefix] = {}
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            entries = unknown_map(item) if isinstance(key, str) and key.startswith("#") else None
            if entries is not None:  # an unknown map: by key, not by the order the sender's hash table had
                for k, v in entries.items():
                    out[f"{path}[{k!r}]"] = v
                continue
            out.update(flatten(item, path))
    elif isinstance(value, list):
        if not value and prefix:
            out[prefix] = []
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


def _strip_indices(path: str) -> str:
    parts: list[str] = []
    depth = 0
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            parts.append(ch)
    return "".join(parts)


@dataclass
class Outcome:
    script: Script | None
    repeated: bool = False
    explanation: str = ""


@dataclass(slots=True)
class _Slot:
    script: Script
    used: int = 0


@dataclass
class Matcher:
    """Hands out recordings for live calls; one per replay server (and one per replayed tunnel)."""

    registry_for: Callable[[Script], Registry]
    kind_of: Callable[[str], StreamKind]
    mode: MatchMode = MatchMode.DEFAULT
    ignores: Sequence[str] = ()
    allow_repeats: bool = False
    # (recorded value, live value) -> whether the live one stands for the recorded one (default mode): a resource
    # handle a replayed tunnel handed out, for a recorded one (replay/streams.py).
    same: Callable[[Any, Any], bool] | None = None
    _slots: dict[str, list[_Slot]] = field(default_factory=dict)
    _rules: tuple[IgnoreRule, ...] = ()

    def __post_init__(self) -> None:
        self._rules = MATCHING_IGNORES + tuple(IgnoreRule(p, "--ignore") for p in self.ignores)

    def add(self, scripts: Iterable[Script]) -> None:
        for script in scripts:
            self._slots.setdefault(script.method, []).append(_Slot(script))

    def recorded(self, method: str) -> bool:
        """Whether any cassette recorded a call on `method`."""
        return bool(self._slots.get(method))

    def scripts(self) -> list[tuple[Script, int]]:
        """Every recording with how many times it was served."""
        return [(slot.script, slot.used) for slots in self._slots.values() for slot in slots]

    def note_used(self, script: Script) -> None:
        """Count a recording as served by someone else (a byte stream chosen by identity, not by `match`)."""
        for slot in self._slots.get(script.method, ()):
            if slot.script is script:
                slot.used += 1
                return

    # ------------------------------------------------------------------------------------------ comparing

    def differences(self, script: Script, live: bytes | None) -> list[Mismatch]:
        """How a live first request differs from a recording's, per the mode (empty: it matches)."""
        if self.mode is MatchMode.ORDER:
            return []
        recorded = script.requests[0] if script.requests else None
        if self.mode is MatchMode.STRICT:
            if recorded == live:
                return []
            found = self._field_differences(script, recorded, live, masked=False)
            return found or [Mismatch("(bytes)", recorded, live)]
        if recorded == live:
            return []
        return self._field_differences(script, recorded, live, masked=True)

    def _field_differences(
        self, script: Script, recorded: bytes | None, live: bytes | None, *, masked: bool
    ) -> list[Mismatch]:
        if recorded is None or live is None:
            return [Mismatch("(request)", recorded, live)]
        registry = self.registry_for(script)
        info = registry.method(script.method)
        if info is None:
            return [Mismatch("(bytes)", recorded, live)]
        try:
            old = flatten(registry.decode(info.request_type, recorded))
            new = flatten(registry.decode(info.request_type, live))
        except ProtocolError as err:
            return [Mismatch("(decode)", "", str(err))]
        prefix = f"{short_method(script.method)}.request."
        found: list[Mismatch] = []
        for path in sorted(old.keys() | new.keys()):
            a, b = old.get(path, _MISSING), new.get(path, _MISSING)
            if a == b:
                continue
            if masked:
                if isinstance(a, str) and a.startswith(REDACTED_PREFIX):
                    continue
                plain = _strip_indices(path)
                if any(rule.matches(prefix + plain) for rule in self._rules):
                    continue
                if self.same is not None and self.same(a, b):
                    continue
            found.append(Mismatch(path, a, b))
        return found

    # ------------------------------------------------------------------------------------------ choosing

    def peek(self, method: str, live: bytes | None, skip: Container[str] = ()) -> Script | None:
        """The recording `match` would serve now, without using it up (for a call a fault answers instead); unused
        recordings in `skip` (already displaced by earlier faults) are passed over."""
        slots = self._slots.get(method, [])
        checked = [(slot, self.differences(slot.script, live) if live is not None else []) for slot in slots]
        fresh = next((s for s, diffs in checked if s.used == 0 and not diffs and s.script.key not in skip), None)
        if fresh is not None:
            return fresh.script
        return next((slot.script for slot, diffs in reversed(checked) if not diffs), None)

    def match(self, method: str, live: bytes | None) -> Outcome:
        """The recording to serve for a call on `method` whose first request is `live` (None: not read yet)."""
        slots = self._slots.get(method, [])
        if not slots:
            recorded = sorted(self._slots)
            listing = ", ".join(short_method(m) for m in recorded[:12]) + (" …" if len(recorded) > 12 else "")
            return Outcome(
                None,
                explanation=f"jsreplay: {method} was never recorded (matcher {self.mode.value}); "
                f"the cassette has: {listing or 'no calls'}",
            )
        checked = [(slot, self.differences(slot.script, live) if live is not None else []) for slot in slots]
        for slot, diffs in checked:
            if slot.used == 0 and not diffs:
                slot.used += 1
                return Outcome(slot.script)
        repeatable = self.allow_repeats or (
            self.mode is not MatchMode.STRICT and self.kind_of(method) is StreamKind.UNARY
        )
        if repeatable:
            for slot, diffs in reversed(checked):
                if not diffs:
                    slot.used += 1
                    return Outcome(slot.script, repeated=True)
        return Outcome(None, explanation=self._explain(method, checked))

    def _explain(self, method: str, checked: list[tuple[_Slot, list[Mismatch]]]) -> str:
        unused = sum(1 for slot, _ in checked if slot.used == 0)
        header = (
            f"jsreplay: no recording matches {method} (matcher {self.mode.value}; "
            f"{len(checked)} recorded, {unused} unused)"
        )
        mismatched = [(slot, diffs) for slot, diffs in checked if diffs]
        if not mismatched:
            return f"{header}: every matching recording is used up (--allow-repeats serves them again)"
        slot, diffs = min(mismatched, key=lambda item: (item[0].used > 0, len(item[1])))
        shown = "; ".join(str(d) for d in diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        return f"{header}; nearest is {slot.script.key}, which differs at {shown}"
