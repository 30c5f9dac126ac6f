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
- **Outcomes are classes.** See `outcome`; OK and CANCELLED (a cancel racing the answer) sign alike.
- **Streamed output compares as a stream** (`stream_form`): a StreamingDriverCall's responses whose `result`s
  only split the same output differently (texts and bytes concatenated position by position, other values
  equal or unset) sign alike; so do byte streams whose control frames after the last data differ (teardown).

A unit's `body` is what textconv prints (messages as recorded); its `sig` is taken over the comparison form,
with the last two rules applied, so equal sigs mean "the same" for diff.
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
from jsreplay.protocol.wire import EXPORTER, GET_REPORT, REGISTER, ROUTER_HANDOUTS, ROUTER_STREAM
from jsreplay.session.drivers import driver_names

_LONG_BYTES = 64  # longer byte strings are represented by a digest in signatures
_MISSING = object()
_DATA = "FRAME_TYPE_DATA"
_PING = "FRAME_TYPE_PING"

STREAMING_DRIVER_CALL = EXPORTER + "StreamingDriverCall"
_STREAMED_FIELD = "result"  # the part of a StreamingDriverCallResponse that is the driver's streamed output

#: Outcomes that mean "ended without an error" and may replace one another between runs: whether a call the
#: client cancels (at shutdown, or once a stream served its purpose) gets its answer first is a race.
BENIGN_OUTCOMES = frozenset({"OK", "CANCELLED"})


def outcome(call: ViewCall) -> str:
    """The class of a call's end that diff compares.

    A status is its code name. The caller's cancel is "CANCELLED" (or "DEADLINE_EXCEEDED" when it came at
    the caller's deadline), the same as a CANCELLED status; a cancel by the upstream or the proxy says so. An
    inner call reset without trailers is the status gRPC maps the reset to. An inner call that ended with its
    tunnel's connection is "closed" (a byte stream: "CANCELLED", see below); a call with no end recorded is "open".
    """
    end = call.end
    if end.kind is EndKind.CANCEL and end.by not in (None, "client"):
        return f"CANCELLED by {end.by}"
    if end.kind is EndKind.CLOSED:
        # A byte stream inside a tunnel ends at teardown either reset by its caller or with the connection,
        # whichever comes first: the same class as the caller's cancel.
        return "CANCELLED" if call.role == "tunnel" and call.method == ROUTER_STREAM else "closed"
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


# ---------------------------------------------------------------------------------------------------- streams


class _Conflict(Exception):
    """Two values that are not parts of one streamed value."""


def _merge(a: Any, b: Any) -> Any:
    """`a` and `b` as one piece of streamed output: texts and bytes concatenated, lists and dicts position by
    position, other values equal or unset (None) in one of them. Raises _Conflict otherwise."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    if isinstance(a, bytes) and isinstance(b, bytes):
        return a + b
    if type(a) is list and type(b) is list and len(a) == len(b):
        return [_merge(x, y) for x, y in zip(a, b, strict=True)]
    if type(a) is dict and type(b) is dict and a.keys() == b.keys():
        return {k: _merge(a[k], b[k]) for k in a}
    if type(a) is type(b) and a == b:
        return a
    raise _Conflict


def _has_text(value: Any) -> bool:
    if type(value) is str or type(value) is bytes:
        return bool(value)
    if type(value) is list:
        return any(_has_text(v) for v in value)
    if type(value) is dict:
        return any(_has_text(v) for v in value.values())
    return False


def _merge_messages(a: Any, b: Any) -> Any:
    """Two StreamingDriverCall responses as one, when their results are parts of one streamed output and
    everything else is equal; raises _Conflict otherwise."""
    if type(a) is not dict or type(b) is not dict or a.keys() != b.keys() or _STREAMED_FIELD not in a:
        raise _Conflict
    if any(a[k] != b[k] for k in a if k != _STREAMED_FIELD):
        raise _Conflict
    x, y = a[_STREAMED_FIELD], b[_STREAMED_FIELD]
    if not (_has_text(x) or _has_text(y)):
        raise _Conflict  # values without text (power readings) are separate values, not pieces of one
    return {**a, _STREAMED_FIELD: _merge(x, y)}


@dataclass(frozen=True)
class StreamPiece:
    """Consecutive messages `start:end` of a section merged into one `value`."""

    start: int
    end: int
    value: Any


def fold_stream(values: Sequence[Any]) -> list[StreamPiece]:
    """A StreamingDriverCall's responses with every run of consecutive messages that can be one merged
    (`_merge_messages`): the same output gives the same pieces however it was chunked."""
    out: list[StreamPiece] = []
    for i, value in enumerate(values):
        if out:
            try:
                merged = _merge_messages(out[-1].value, value)
            except _Conflict:
                pass
            else:
                out[-1] = StreamPiece(out[-1].start, i + 1, merged)
                continue
        out.append(StreamPiece(i, i + 1, value))
    return out


def strip_teardown(values: Sequence[Any]) -> int:
    """How many of a joined byte stream's values are left once the control frames after its last data are
    dropped (a GOAWAY at teardown comes or not, as the connection's shutdown races)."""
    end = len(values)
    while end and not (isinstance(values[end - 1], dict) and set(values[end - 1]) == {"payload"}):
        end -= 1
    return end


def stream_kind(call: ViewCall, section: str) -> str | None:
    """How `section` of `call` compares as a stream: "output" (StreamingDriverCall responses), "bytes" (an inner
    byte stream), or None (message by message)."""
    if call.role != "tunnel":
        return None
    if call.method == ROUTER_STREAM:
        return "bytes"
    if call.method == STREAMING_DRIVER_CALL and section == "responses":
        return "output"
    return None


def stream_form(call: ViewCall, section: str, values: list[Any]) -> list[Any]:
    """`values` as diff compares them (see `stream_kind`)."""
    kind = stream_kind(call, section)
    if kind == "output" and len(values) > 1:
        return [p.value for p in fold_stream(values)]
    if kind == "bytes":
        return values[: strip_teardown(values)]
    return values


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
            if section == "requests" and call.elided is not None:  # the upload's bytes are not in the cassette
                values.append({"elided": {"length": call.elided.length, "sha256": call.elided.sha256}})
                sources.append(None)
        elif call.role == "controller":
            values, sources = _collapse_messages(values, sources)
        return values, sources

    def unit(self, call: ViewCall) -> Unit:
        sources: dict[str, list[ViewMessage | None]] = {}
        inner: list[Unit] = []
        inner_groups: list[UnitGroup] = []
        body: dict[str, Any]
        compare: dict[str, Any]
        if call.inner is not None:
            # A tunnel compares by its inner calls only: its frames and its own end are how the router and
            # the peers' shutdown happened to play out.
            inner_groups = self.groups(call.inner)
            inner = [u for g in inner_groups for u in g.units]
            body = compare = {"method": call.method, "tunnel": [(u.method, u.sig) for u in inner]}
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
            compare = dict(body)
            if compare["outcome"] in BENIGN_OUTCOMES:
                compare["outcome"] = "OK|CANCELLED"
            for section in ("requests", "responses"):
                compare[section] = stream_form(call, section, body[section])
        return Unit(
            method=call.method,
            role=call.role,
            calls=[call],
            body=body,
            sig=signature(compare),
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


def cassette_addresses(view: CassetteView) -> tuple[str, ...]:
    """The cluster's and the proxy's own addresses in a cassette: the upstreams in its header, the router
    endpoints of its Dial and Listen responses (as recorded) and what the proxy forwarded instead."""
    found: dict[str, None] = dict.fromkeys(view.header.upstreams)
    for call in view.calls:
        if call.method in ROUTER_HANDOUTS:
            for message in call.responses:
                endpoint = (message.value or {}).get("router_endpoint")
                if isinstance(endpoint, str) and endpoint:
                    found[endpoint] = None
    found.update(dict.fromkeys(view.forwarded_endpoints))
    return tuple(found)


def normalizer_for(view: CassetteView, *, defaults: bool = True, ignores: Sequence[str] = ()) -> Normalizer:
    """The normaliser of one cassette: the default masks know its drivers and its addresses."""
    if not defaults:
        return Normalizer(defaults=False, ignores=ignores)
    return Normalizer(ignores=ignores, drivers=cassette_drivers(view), addresses=cassette_addresses(view))


def build_groups(view: CassetteView, *, defaults: bool = True, ignores: Sequence[str] = ()) -> list[UnitGroup]:
    """The canonical unit groups of a whole cassette."""
    return UnitBuilder(normalizer_for(view, defaults=defaults, ignores=ignores)).groups(view.calls)
