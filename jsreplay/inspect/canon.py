"""Canonical units: what diff and textconv compare, with run-to-run noise taken out.

A cassette's calls become `Unit`s, grouped by role and method. Each unit holds a `body`: the call's metadata,
messages and outcome, decoded and masked (`ignores.Normalizer`), in plain values that compare with `==`.
What differs between runs without meaning is normalised here, and only here:

- **Tunnels compare by their inner calls.** A router Stream pair becomes one unit holding the inner calls'
  units; frames, chunking and which end was recorded first do not matter. Tunnels that never carried an
  inner connection (the readiness probe: at most a GOAWAY) are left out, because whether the probe's Dial
  happens at all is a race in the client.
- **Calls that raced keep no order.** Calls of one method whose lifetimes overlap (the two Dials of one
  connect) are ordered by content instead of start time.
- **Repeats compare as one.** A run of identical consecutive units (a poll, a retried Dial) becomes one
  unit with a count; so does a run of identical consecutive messages in a controller stream (Listen sends
  one message per Dial).
- **Byte streams compare as bytes.** The messages of an inner RouterService/Stream (a driver's byte stream)
  compare as their data, DATA frames joined, and their control frames; PINGs are left out.
- **Outcomes are classes.** See `outcome`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jsreplay.inspect.ignores import Normalizer
from jsreplay.inspect.view import CassetteView, EndKind, ViewCall, ViewMessage
from jsreplay.protocol.registry import UnknownField
from jsreplay.protocol.wire import GET_REPORT, REGISTER, ROUTER_STREAM
from jsreplay.session.drivers import driver_names

_LONG_BYTES = 64  # longer byte strings are represented by a digest in signatures
_MISSING = object()
_DATA = "FRAME_TYPE_DATA"
_PING = "FRAME_TYPE_PING"

#: Outcomes that mean "ended without an error" and may replace one another between runs: whether a call the
#: client cancels (at shutdown, or once a stream served its purpose) gets its answer first is a race.
BENIGN_OUTCOMES = frozenset({"OK", "CANCELLED"})


def outcome(call: ViewCall) -> str:
    """The class of a call's end that diff compares.

    A status is its code name. The caller's cancel is "CANCELLED" (or "DEADLINE_EXCEEDED" when it came at
    the caller's deadline), the same as a CANCELLED status; a cancel by the upstream or the proxy says so. An
    inner call reset without trailers is the status gRPC maps the reset to. An inner call that ended with its
    tunnel's connection is "closed"; a call with no end recorded is "open".
    """
    end = call.end
    if end.kind is EndKind.CANCEL and end.by not in (None, "client"):
        return f"CANCELLED by {end.by}"
    if end.kind is EndKind.CLOSED:
        return "closed"
    if end.status is None:
        return "open"
    return end.status


def freeze(value: Any) -> Hashable:
    """A hashable, order-independent stand-in for a body (long bytes as their digest)."""
    if isinstance(value, dict):
        return ("{", tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("[", tuple(freeze(v) for v in value))
    if isinstance(value, bytes) and len(value) > _LONG_BYTES:
        return ("b", len(value), hashlib.sha256(value).hexdigest())
    if isinstance(value, UnknownField):
        return ("#", value.number, int(value.wire_type), freeze(value.value))
    if isinstance(value, float) and value != value:  # NaN: equal to itself here
        return ("nan",)
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        if len(value) > _LONG_BYTES:
            return {"b": len(value), "sha256": hashlib.sha256(value).hexdigest()}
        return {"b": value.hex()}
    if isinstance(value, UnknownField):
        return {"#": value.number, "w": int(value.wire_type), "v": value.value}
    raise TypeError(f"cannot sign a {type(value).__name__}")


def signature(value: Any) -> str:
    """A stable digest of a body: the same in every process (unlike `hash`), so orderings are reproducible.

    Dict keys are sorted, so two equal bodies sign alike whatever order their keys were built in; the JSON
    encoder is C code, which matters when a cassette has tens of thousands of calls.
    """
    text = _SIGNATURE_JSON.encode(value)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


# What json.dumps(value, sort_keys=True, default=..., ensure_ascii=False, check_circular=False) builds per call.
_SIGNATURE_JSON = json.JSONEncoder(sort_keys=True, default=_json_default, ensure_ascii=False, check_circular=False)


@dataclass(eq=False)
class Unit:
    """One call, or a run of identical consecutive calls, ready to compare."""

    method: str
    role: str
    calls: list[ViewCall]
    body: dict[str, Any]
    sig: str
    index: int = 0  # the first call's index among its group's calls (the `[n]` of a path)
    inner: list[Unit] = field(default_factory=list)  # tunnels: the inner calls' units, in canonical order
    inner_groups: list[UnitGroup] = field(default_factory=list)  # tunnels: the same units in their groups
    # For each message in body["requests"]/["responses"], the recorded message it came from (None when it
    # was built from several, e.g. joined byte-stream frames); diff re-decodes these with the other schema.
    sources: dict[str, list[ViewMessage | None]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.calls)

    @property
    def first(self) -> ViewCall:
        return self.calls[0]


@dataclass
class UnitGroup:
    """All units of one role and method, in canonical order."""

    role: str
    method: str
    units: list[Unit]


# ---------------------------------------------------------------------------------------------------- building


def _message_value(message: ViewMessage) -> Any:
    if message.value is not None:
        return message.value
    return {"$raw": message.data}


def _join_byte_stream(messages: Sequence[ViewMessage], values: list[Any]) -> tuple[list[Any], list[ViewMessage | None]]:
    """Inner byte-stream frames -> their data (consecutive DATA payloads joined) and control frames."""
    out: list[Any] = []
    sources: list[ViewMessage | None] = []
    joining: bytearray | None = None
    for message, value in zip(messages, values, strict=True):
        kind = value.get("frame_type", _DATA) if isinstance(value, dict) and "$raw" not in value else None
        if kind == _PING:
            continue
        if kind == _DATA and set(value) <= {"payload", "frame_type"}:
            payload = value.get("payload", b"")
            if joining is not None:
                joining.extend(payload)
                sources[-1] = None
            else:
                joining = bytearray(payload)
                out.append(joining)
                sources.append(message)
            continue
        joining = None
        out.append(value)
        sources.append(message)
    # Joined data went into bytearrays (cheap to extend); the body holds plain bytes.
    return [{"payload": bytes(v)} if isinstance(v, bytearray) else v for v in out], sources


def _collapse_messages(values: list[Any], sources: list[ViewMessage | None]) -> tuple[list[Any], list[Any]]:
    out: list[Any] = []
    out_sources: list[ViewMessage | None] = []
    for value, source in zip(values, sources, strict=True):
        if out and out[-1] == value:
            continue
        out.append(value)
        out_sources.append(source)
    return out, out_sources


class UnitBuilder:
    """Turns a view's calls into canonical unit groups, with one cassette's normaliser."""

    def __init__(self, normalizer: Normalizer) -> None:
        self.normalizer = normalizer
        # (ignore path, id of a decoded value) -> the value normalised. Identical messages share one decoded
        # value (see view._MessageDecoder), which the view keeps alive as long as this builder is used.
        self._normalized: dict[tuple[str, int], Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # The memo is keyed by object identities, which mean nothing in another process.
        return {**self.__dict__, "_normalized": {}}

    def _normalize(self, path: str, message: ViewMessage) -> Any:
        if message.value is None:
            return self.normalizer.value(path, _message_value(message))
        key = (path, id(message.value))
        normalized = self._normalized.get(key, _MISSING)
        if normalized is _MISSING:
            normalized = self._normalized[key] = self.normalizer.value(path, message.value)
        return normalized

    def messages(self, call: ViewCall, section: str) -> tuple[list[Any], list[ViewMessage | None]]:
        messages = call.requests if section == "requests" else call.responses
        path = f"{call.short_method}.{section[:-1]}"
        values = [self._normalize(path, m) for m in messages]
        sources: list[ViewMessage | None] = list(messages)
        if call.role == "tunnel" and call.method == ROUTER_STREAM:
            values, sources = _join_byte_stream(messages, values)
        elif call.role == "controller":
            values, sources = _collapse_messages(values, sources)
        return values, sources

    def unit(self, call: ViewCall) -> Unit:
        sources: dict[str, list[ViewMessage | None]] = {}
        inner: list[Unit] = []
        inner_groups: list[UnitGroup] = []
        body: dict[str, Any]
        if call.inner is not None:
            # A tunnel compares by its inner calls only: its frames and its own end are how the router and
            # the peers' shutdown happened to play out.
            inner_groups = self.groups(call.inner)
            inner = [u for g in inner_groups for u in g.units]
            body = {"method": call.method, "tunnel": [(u.method, u.sig) for u in inner]}
        else:
            short = call.short_method
            normalizer = self.normalizer
            body = {
                "method": call.method,
                "metadata": normalizer.metadata(f"{short}.metadata", call.metadata),
                "initial_metadata": normalizer.metadata(f"{short}.initial_metadata", call.initial_metadata or ()),
                "trailing_metadata": normalizer.metadata(f"{short}.trailing_metadata", call.trailing_metadata),
                "outcome": outcome(call),
            }
            if call.end.status not in (None, "OK", "CANCELLED"):
                body["details"] = normalizer.text(call.end.details)
            for section in ("requests", "responses"):
                body[section], sources[section] = self.messages(call, section)
        return Unit(
            method=call.method,
            role=call.role,
            calls=[call],
            body=body,
            sig=signature(body),
            inner=inner,
            inner_groups=inner_groups,
            sources=sources,
        )

    def groups(self, calls: Iterable[ViewCall]) -> list[UnitGroup]:
        """Units grouped by (role, method), groups in order of first appearance, each in canonical order."""
        by_key: dict[tuple[str, str], list[ViewCall]] = {}
        for call in calls:
            if call.stream is not None and call.inner is None:
                continue  # a tunnel's other end, or a probe: its unit (if any) is its peer's
            by_key.setdefault((call.role, call.method), []).append(call)
        groups = []
        for (role, method), members in by_key.items():
            units = [self.unit(c) for c in sorted(members, key=lambda c: (c.span[0], c.id))]
            units = _order_races(units)
            groups.append(UnitGroup(role=role, method=method, units=_collapse_runs(units)))
        return groups


def _order_races(units: list[Unit]) -> list[Unit]:
    """Units in start order, except that calls whose lifetimes overlap are ordered by content."""
    out: list[Unit] = []
    cluster: list[Unit] = []
    cluster_end = -1
    for unit in units:
        start, end = unit.first.span
        if cluster and start >= cluster_end:
            out.extend(sorted(cluster, key=lambda u: u.sig))
            cluster = []
        cluster.append(unit)
        cluster_end = max(cluster_end, end) if len(cluster) > 1 else end
    out.extend(sorted(cluster, key=lambda u: u.sig))
    return out


def _collapse_runs(units: list[Unit]) -> list[Unit]:
    out: list[Unit] = []
    position = 0
    for unit in units:
        unit.index = position
        position += 1
        if out and out[-1].sig == unit.sig:
            out[-1].calls.extend(unit.calls)
            continue
        out.append(unit)
    return out


def cassette_drivers(view: CassetteView) -> dict[str, str]:
    """Driver UUID -> name from every driver report in the cassette (Register requests, GetReport responses)."""
    reports: list[Any] = []

    def collect(calls: Iterable[ViewCall]) -> None:
        for call in calls:
            if call.method == REGISTER:
                reports.extend(r for m in call.requests if m.value for r in m.value.get("reports", []))
            elif call.method == GET_REPORT:
                reports.extend(r for m in call.responses if m.value for r in m.value.get("reports", []))
            if call.inner:
                collect(call.inner)

    collect(view.calls)
    return driver_names(reports)


def build_groups(view: CassetteView, *, defaults: bool = True, ignores: Sequence[str] = ()) -> list[UnitGroup]:
    """The canonical unit groups of a whole cassette."""
    normalizer = Normalizer(defaults=defaults, ignores=ignores, drivers=cassette_drivers(view) if defaults else {})
    return UnitBuilder(normalizer).groups(view.calls)
