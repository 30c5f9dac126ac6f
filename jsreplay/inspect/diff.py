"""Semantic diff of two cassettes: values in (two `CassetteView`s), a `DiffReport` out.

Calls are compared per role and method as canonical units (`canon`), aligned with `align`, and every
difference is reported with a path, e.g.::

    ClientService/GetLease[1].responses[0].conditions[0].status
    RouterService/Stream[0] > ExporterService/DriverCall[1].responses[0].result

`Service/Method[n]` is the n-th call of that method (0-based, in canonical order; the old cassette's
numbering for changed and removed calls, the new one's for added calls), `>` steps into a tunnel's inner
calls, and the rest is the place in the call. See docs/inspect.md for the list of kinds and the JSON shape.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from jsreplay.inspect.align import GAP_COST, align
from jsreplay.inspect.canon import (
    BENIGN_OUTCOMES,
    Unit,
    UnitBuilder,
    UnitGroup,
    fold_stream,
    freeze,
    normalizer_for,
    stream_kind,
    strip_teardown,
)
from jsreplay.inspect.ignores import MASKS
from jsreplay.inspect.schema_diff import SchemaChange, diff_schemas
from jsreplay.inspect.values import inline_text, key_segment
from jsreplay.inspect.view import CassetteView, ViewCall, ViewMessage, decode_message
from jsreplay.protocol.registry import ProtocolError, Registry, UnknownTypeError
from jsreplay.protocol.wire import short_method

JSON_FORMAT = "jsreplay-diff/1"
JSON_MAX_BYTES = 256  # longer byte strings appear in JSON output as length + digest + head


class DiffKind(enum.Enum):
    """What a difference is about (the `kind` in JSON output)."""

    CALL_ADDED = "call_added"
    CALL_REMOVED = "call_removed"
    METHOD_RENAMED = "method_renamed"
    STATUS_CHANGED = "status_changed"
    METADATA_KEY_ADDED = "metadata_key_added"
    METADATA_KEY_REMOVED = "metadata_key_removed"
    METADATA_VALUE_CHANGED = "metadata_value_changed"
    MESSAGE_ADDED = "message_added"
    MESSAGE_REMOVED = "message_removed"
    FIELD_ADDED = "field_added"
    FIELD_REMOVED = "field_removed"
    FIELD_CHANGED = "field_changed"
    UNKNOWN_FIELD_ADDED = "unknown_field_added"
    UNKNOWN_FIELD_REMOVED = "unknown_field_removed"
    TIMING_CHANGED = "timing_changed"
    SCHEMA_ADDED = "schema_added"
    SCHEMA_REMOVED = "schema_removed"
    SCHEMA_CHANGED = "schema_changed"


@dataclass(frozen=True)
class Difference:
    """One reported difference. `old`/`new` are decoded values (None when absent on that side)."""

    kind: DiffKind
    path: str
    old: Any = None
    new: Any = None
    old_call: int | None = None  # call id in the old cassette (for inner calls: the tunnel's call id)
    new_call: int | None = None
    detail: str = ""


class IgnoredKind(enum.Enum):
    """Why a difference was treated as the same (`--show-ignored`; the `rule` in JSON output)."""

    MASKED = "masked"  # a volatile value: a default field rule or a value mask (`why` names it)
    OUTCOME_RACE = "outcome_race"  # OK in one run, CANCELLED in the other
    CANCELLED_EARLY = "cancelled_early"  # a cancelled stream got fewer messages before its cancel
    STREAM_CHUNKING = "stream_chunking"  # streamed output split into messages differently
    TEARDOWN_FRAMES = "teardown_frames"  # a byte stream's control frames after its last data
    REPEATS = "repeats"  # a run of identical calls repeated another number of times


@dataclass(frozen=True)
class Ignored:
    """A difference that diff treats as none, and why (listed with `--show-ignored`)."""

    kind: IgnoredKind
    path: str
    old: Any = None
    new: Any = None
    why: str = ""
    old_call: int | None = None
    new_call: int | None = None


@dataclass(frozen=True)
class DiffOptions:
    ignores: tuple[str, ...] = ()  # extra field-path globs to leave out (--ignore)
    defaults: bool = True  # apply the default ignore list and value masks
    timing_threshold: float | None = None  # report calls whose duration changed by more than this percentage
    show_ignored: bool = False  # also collect what was treated as the same (`DiffReport.ignored`)


@dataclass
class DiffReport:
    differences: list[Difference]
    options: DiffOptions
    old_calls: int
    new_calls: int
    ignored: list[Ignored] = dataclasses.field(default_factory=list)  # with `show_ignored` only

    @property
    def equivalent(self) -> bool:
        return not self.differences

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.differences:
            counts[d.kind.value] = counts.get(d.kind.value, 0) + 1
        return counts


# ---------------------------------------------------------------------------------------------------- values


def _has_unknown(value: Any) -> bool:
    if isinstance(value, dict):
        return any((isinstance(k, str) and k.startswith("#")) or _has_unknown(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return False


def _adopt_names(own: dict[str, Any], other: dict[str, Any], descriptor: Any) -> dict[str, Any]:
    """`own`, with each unknown field ("#N") that `other` (the same bytes decoded by the other schema) knows by
    name replaced by that named value; so a field one schema lacks is not reported as a message change."""
    out: dict[str, Any] = {}
    for key, value in own.items():
        if key.startswith("#"):
            known = descriptor.fields_by_number.get(int(key[1:]))
            if known is not None and known.name in other:
                out[known.name] = other[known.name]
                continue
            out[key] = value
            continue
        known = descriptor.fields_by_name.get(key)
        sub = other.get(key)
        message_type = known.message_type if known is not None else None
        if message_type is None or message_type.GetOptions().map_entry or sub is None:
            out[key] = value
        elif isinstance(value, dict) and isinstance(sub, dict):
            out[key] = _adopt_names(value, sub, message_type)
        elif isinstance(value, list) and isinstance(sub, list) and len(value) == len(sub):
            out[key] = [
                _adopt_names(v, s, message_type) if isinstance(v, dict) and isinstance(s, dict) else v
                for v, s in zip(value, sub, strict=True)
            ]
        else:
            out[key] = value
    return out


def _undecoded(message: Any) -> bool:
    return isinstance(message, dict) and "$raw" in message


def _same(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and a != a and b != b:
        return True
    return bool(a == b)


def value_diffs(old: Any, new: Any, path: str) -> list[Difference]:
    """Field-level differences between two masked decoded values."""
    out: list[Difference] = []
    _value_diffs(old, new, path, out)
    return out


def _value_diffs(old: Any, new: Any, path: str, out: list[Difference]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            child = path + key_segment(str(key))
            unknown = isinstance(key, str) and key.startswith("#")
            if key in old and key in new:
                _value_diffs(old[key], new[key], child, out)
            elif key in old:
                kind = DiffKind.UNKNOWN_FIELD_REMOVED if unknown else DiffKind.FIELD_REMOVED
                out.append(Difference(kind, child, old=old[key]))
            else:
                kind = DiffKind.UNKNOWN_FIELD_ADDED if unknown else DiffKind.FIELD_ADDED
                out.append(Difference(kind, child, new=new[key]))
        return
    if isinstance(old, list) and isinstance(new, list) and not path.rsplit(".", 1)[-1].startswith("#"):
        if old == new:
            return
        if len(old) == len(new) and not any(isinstance(v, dict) for v in old):
            pairs: list[tuple[int | None, int | None]] = [(i, i) for i in range(len(old))]
        else:
            pairs = align(old, new, freeze, lambda a, b: len(value_diffs(a, b, "")))
        for i, j in pairs:
            if i is not None and j is not None:
                _value_diffs(old[i], new[j], f"{path}[{i}]", out)
            elif i is not None:
                out.append(Difference(DiffKind.FIELD_REMOVED, f"{path}[{i}]", old=old[i]))
            else:
                assert j is not None
                out.append(Difference(DiffKind.FIELD_ADDED, f"{path}[{j}]", new=new[j]))
        return
    if not _same(old, new):
        out.append(Difference(DiffKind.FIELD_CHANGED, path, old=old, new=new))


# ---------------------------------------------------------------------------------------------------- calls


SUMMARY_MESSAGES = 3  # messages of an added or removed call shown in full; more are counted


def _call_summary(unit: Unit) -> dict[str, Any]:
    """What an added or removed call was: its method, outcome and (masked) messages, or a tunnel's inner calls."""
    summary: dict[str, Any] = {"method": unit.method}
    if unit.count > 1:
        summary["count"] = unit.count
    if unit.first.inner is not None:
        summary["inner_calls"] = [short_method(u.method) for u in unit.inner]
        return summary
    summary["outcome"] = unit.body.get("outcome")
    for section in ("requests", "responses"):
        messages = unit.body.get(section, [])
        summary[section] = messages[:SUMMARY_MESSAGES]
        if len(messages) > SUMMARY_MESSAGES:
            summary[f"{section}_total"] = len(messages)
    return summary


class DroppedDataError(Exception):
    """`diff_views` needs message bytes that the new view was loaded without (`inner_data_dropped`): load it
    whole and diff again."""


@dataclass
class CanonicalUnits:
    """One cassette's canonical unit groups, and the builder that made them (diff builds more with it)."""

    builder: UnitBuilder
    groups: list[UnitGroup]


def canonical_units(view: CassetteView, options: DiffOptions | None = None) -> CanonicalUnits:
    """What `diff_views` compares of `view`; build it ahead (while the other cassette loads) and pass it in."""
    options = options or DiffOptions()
    if view.inner_data_dropped:
        raise DroppedDataError("the view's inner messages were dropped: build its units before dropping them")
    builder = UnitBuilder(normalizer_for(view, defaults=options.defaults, ignores=options.ignores))
    return CanonicalUnits(builder=builder, groups=builder.groups(view.calls))


class _Comparer:
    def __init__(
        self,
        old: CassetteView,
        new: CassetteView,
        options: DiffOptions,
        old_units: CanonicalUnits,
        new_units: CanonicalUnits,
    ) -> None:
        self.old = old
        self.new = new
        self.options = options
        self.old_builder = old_units.builder
        self.new_builder = new_units.builder
        self.ignored: list[Ignored] = []
        self._collecting_cost = 0  # > 0 while the alignment weighs pairs: nothing is listed as ignored

    def ignore(self, kind: IgnoredKind, path: str, old: Any = None, new: Any = None, why: str = "") -> None:
        if self.options.show_ignored and not self._collecting_cost:
            self.ignored.append(Ignored(kind, path, old, new, why))

    # -------------------------------------------------------------------------------------- groups of calls

    def groups(
        self,
        old_groups: Sequence[UnitGroup],
        new_groups: Sequence[UnitGroup],
        prefix: str,
        outer: tuple[int | None, int | None],
    ) -> list[Difference]:
        out: list[Difference] = []
        old_by = {(g.role, g.method): g for g in old_groups}
        new_by = {(g.role, g.method): g for g in new_groups}
        for key, group in old_by.items():
            if key in new_by:
                out.extend(self.aligned(group.units, new_by[key].units, prefix, outer))
        only_old = [g for k, g in old_by.items() if k not in new_by]
        only_new = [g for k, g in new_by.items() if k not in old_by]
        renamed = self.renames(only_old, only_new)
        for group in only_old:
            if id(group) in renamed:
                other = renamed[id(group)]
                out.append(
                    Difference(
                        DiffKind.METHOD_RENAMED,
                        prefix + short_method(group.method),
                        old=group.method,
                        new=other.method,
                        old_call=self._outer_id(group.units[0], outer, old=True),
                        new_call=self._outer_id(other.units[0], outer, old=False),
                    )
                )
                retyped = self.retype(other, group.method)
                for a, b in zip(group.units, retyped, strict=True):
                    out.extend(self.units(a, b, prefix, outer))
                continue
            for unit in group.units:
                out.append(self.removed(unit, prefix, outer))
        used = {id(g) for g in renamed.values()}
        for group in only_new:
            if id(group) not in used:
                out.extend(self.added(unit, prefix, outer) for unit in group.units)
        return out

    def aligned(
        self, old: list[Unit], new: list[Unit], prefix: str, outer: tuple[int | None, int | None]
    ) -> list[Difference]:
        out: list[Difference] = []
        pairs = align(old, new, lambda u: u.sig, lambda a, b: self.cost(a, b, prefix, outer))
        for i, j in pairs:
            if i is not None and j is not None:
                out.extend(self.units(old[i], new[j], prefix, outer))
            elif i is not None:
                out.append(self.removed(old[i], prefix, outer))
            else:
                assert j is not None
                out.append(self.added(new[j], prefix, outer))
        return out

    @staticmethod
    def _path(unit: Unit, prefix: str) -> str:
        return f"{prefix}{short_method(unit.method)}[{unit.index}]"

    @staticmethod
    def _outer_id(unit: Unit, outer: tuple[int | None, int | None], *, old: bool) -> int | None:
        if unit.first.role != "tunnel":
            return unit.first.id
        return outer[0] if old else outer[1]

    def removed(self, unit: Unit, prefix: str, outer: tuple[int | None, int | None]) -> Difference:
        return Difference(
            DiffKind.CALL_REMOVED,
            self._path(unit, prefix),
            old=_call_summary(unit),
            old_call=self._outer_id(unit, outer, old=True),
        )

    def added(self, unit: Unit, prefix: str, outer: tuple[int | None, int | None]) -> Difference:
        return Difference(
            DiffKind.CALL_ADDED,
            self._path(unit, prefix),
            new=_call_summary(unit),
            new_call=self._outer_id(unit, outer, old=False),
        )

    # -------------------------------------------------------------------------------------- renames

    def renames(self, only_old: list[UnitGroup], only_new: list[UnitGroup]) -> dict[int, UnitGroup]:
        """Methods that exist only in old and only in new, with the same calls: a method renamed.

        The new calls' messages are decoded with the old method's types for this (a renamed method is often
        missing from the schema the cassette carries), and the pair counts as renamed when the calls differ
        in no more places than an ordinary changed call would.
        """
        found: dict[int, UnitGroup] = {}
        taken: set[int] = set()
        for group in only_old:
            for candidate in only_new:
                if id(candidate) in taken or candidate.role != group.role or len(candidate.units) != len(group.units):
                    continue
                retyped = self.retype(candidate, group.method)
                cost = sum(self.cost(a, b, "", (None, None)) for a, b in zip(group.units, retyped, strict=True))
                if cost <= GAP_COST * len(group.units):
                    found[id(group)] = candidate
                    taken.add(id(candidate))
                    break
        return found

    def retype(self, group: UnitGroup, method: str) -> list[Unit]:
        """The new side's units of `group` rebuilt as if their calls had been to `method`."""
        registry = self.new.registry
        info = registry.method(method) or self.old.registry.method(method)
        units = []
        for unit in group.units:
            if self.new.inner_data_dropped and unit.first.role == "tunnel":
                raise DroppedDataError(f"{method}: re-building inner calls' units needs their messages")
            calls = [self._retyped_call(c, method, registry, info) for c in unit.calls]
            if calls[0].inner is None:
                rebuilt = self.new_builder.unit(calls[0])
                rebuilt.calls, rebuilt.index = calls, unit.index
            else:
                rebuilt = dataclasses.replace(unit, calls=calls)
            units.append(rebuilt)
        return units

    @staticmethod
    def _retyped_call(call: ViewCall, method: str, registry: Registry, info: Any) -> ViewCall:
        if info is None or call.inner is not None:
            return dataclasses.replace(call, method=method)

        def redo(messages: list[ViewMessage], type_name: str) -> list[ViewMessage]:
            try:
                registry.descriptor(type_name)
            except UnknownTypeError:
                return messages
            out = []
            for m in messages:
                again = decode_message(registry, type_name, m.data)
                again.t_ns = m.t_ns
                out.append(again)
            return out

        return dataclasses.replace(
            call,
            method=method,
            requests=redo(call.requests, info.request_type),
            responses=redo(call.responses, info.response_type),
        )

    # -------------------------------------------------------------------------------------- one pair

    def units(
        self,
        old: Unit,
        new: Unit,
        prefix: str,
        outer: tuple[int | None, int | None],
    ) -> list[Difference]:
        """The differences between two corresponding calls (their methods aside: see `renames`)."""
        path = self._path(old, prefix)
        ids = (self._outer_id(old, outer, old=True), self._outer_id(new, outer, old=False))
        out: list[Difference] = []
        mark = len(self.ignored)
        if old.sig != new.sig or (self.options.show_ignored and not self._collecting_cost):
            if old.first.inner is not None and new.first.inner is not None:
                found = self.groups(old.inner_groups, new.inner_groups, f"{path} > ", ids)
            else:
                found = self._call_body(old, new, path)
            if old.sig != new.sig:
                out.extend(found)  # equal sigs: descended only to list what was ignored
        if old.count != new.count:
            self.ignore(IgnoredKind.REPEATS, path, old.count, new.count, "a run of identical calls (a poll)")
        self.ignored[mark:] = [
            dataclasses.replace(g, old_call=ids[0], new_call=ids[1]) if g.old_call is None else g
            for g in self.ignored[mark:]
        ]
        out.extend(self._timing(old, new, path))
        return [dataclasses.replace(d, old_call=ids[0], new_call=ids[1]) if d.old_call is None else d for d in out]

    def cost(self, a: Unit, b: Unit, prefix: str, outer: tuple[int | None, int | None]) -> int:
        """How different two units are, for the alignment (collects nothing for --show-ignored)."""
        self._collecting_cost += 1
        try:
            return len(self.units(a, b, prefix, outer))
        finally:
            self._collecting_cost -= 1

    def _call_body(self, old: Unit, new: Unit, path: str) -> list[Difference]:
        out: list[Difference] = []
        a, b = old.body, new.body
        outcome_a, outcome_b = a.get("outcome"), b.get("outcome")
        benign = {outcome_a, outcome_b} <= BENIGN_OUTCOMES
        status = f"{path}.status"
        before, after = old.first.end.label(), new.first.end.label()
        if outcome_a != outcome_b and not benign:
            out.append(Difference(DiffKind.STATUS_CHANGED, status, old=before, new=after))
        elif a.get("details") != b.get("details"):
            out.append(Difference(DiffKind.STATUS_CHANGED, status, old=a.get("details"), new=b.get("details")))
        elif outcome_a != outcome_b:
            self.ignore(IgnoredKind.OUTCOME_RACE, status, before, after, "a cancel racing the answer")
        for section in ("metadata", "initial_metadata", "trailing_metadata"):
            out.extend(_metadata_diffs(a.get(section, {}), b.get(section, {}), f"{path}.{section}"))
            if self.options.show_ignored and not self._collecting_cost:
                self._masked_metadata(old, new, section, path)
        out.extend(self._messages(old, new, "requests", path, truncate=False))
        # Once the outcomes differ, the later responses are the outcome's doing (a failed call has no
        # response; a cancelled one stops early): compare what both sides got. So too when both were
        # cancelled by their caller: how many messages a stream got before the cancel is a race.
        cancelled = "CANCELLED" in (outcome_a, outcome_b)
        out.extend(self._messages(old, new, "responses", path, truncate=outcome_a != outcome_b or cancelled))
        return out

    def _masked_metadata(self, old: Unit, new: Unit, section: str, path: str) -> None:
        raw_a = _raw_metadata(old.first, section)
        raw_b = _raw_metadata(new.first, section)
        masked_a, masked_b = old.body.get(section, {}), new.body.get(section, {})
        for key in raw_a.keys() & raw_b.keys():
            if raw_a[key] != raw_b[key] and masked_a.get(key) == masked_b.get(key):
                rule = self.old_builder.normalizer.rule_for(f"{old.first.short_method}.{section}.{key}")
                why = rule.reason if rule is not None else _mask_names(masked_a.get(key))
                self.ignore(IgnoredKind.MASKED, f"{path}.{section}.{key}", raw_a[key], raw_b[key], why)

    def _messages(self, old: Unit, new: Unit, section: str, path: str, *, truncate: bool) -> list[Difference]:
        a: list[Any] = old.body.get(section, [])
        b: list[Any] = new.body.get(section, [])
        sa: list[ViewMessage | None] = old.sources.get(section, [None] * len(a))
        sb: list[ViewMessage | None] = new.sources.get(section, [None] * len(b))
        call = old.first
        kind = stream_kind(call, section)
        where_all = f"{path}.{section}"
        if kind == "bytes":
            # Control frames after the last data (a GOAWAY at teardown) come or not as the shutdown races.
            na, nb = strip_teardown(a), strip_teardown(b)
            if a[na:] != b[nb:]:
                self.ignore(IgnoredKind.TEARDOWN_FRAMES, where_all, a[na:], b[nb:], "the connection's shutdown")
            a, b, sa, sb = a[:na], b[:nb], sa[:na], sb[:nb]
        if truncate and len(a) != len(b):
            n = min(len(a), len(b))
            if {old.body.get("outcome"), new.body.get("outcome")} <= BENIGN_OUTCOMES:
                why = "how many messages a stream got before its cancel is a race"
                self.ignore(IgnoredKind.CANCELLED_EARLY, where_all, len(a), len(b), why)
            a, b, sa, sb = a[:n], b[:n], sa[:n], sb[:n]
        if a == b:
            if self.options.show_ignored and not self._collecting_cost:
                self._masked_messages(old, sa, sb, section, path)
            return []
        labels = list(range(len(a)))
        if kind == "output":
            pieces_a, pieces_b = fold_stream(a), fold_stream(b)
            if [p.value for p in pieces_a] == [p.value for p in pieces_b]:
                self.ignore(IgnoredKind.STREAM_CHUNKING, where_all, len(a), len(b), "the same output, split otherwise")
                return []
            if len(a) != len(b):
                # Different chunking and a real change: compare the output, piece by piece.
                self.ignore(IgnoredKind.STREAM_CHUNKING, where_all, len(a), len(b), "compared as joined output")
                labels = [p.start for p in pieces_a]
                a, b = [p.value for p in pieces_a], [p.value for p in pieces_b]
                sa = [sa[p.start] if p.end - p.start == 1 else None for p in pieces_a]
                sb = [sb[p.start] if p.end - p.start == 1 else None for p in pieces_b]
        out: list[Difference] = []
        pairs = align(a, b, freeze, lambda x, y: len(value_diffs(x, y, "")))
        for i, j in pairs:
            if i is not None and j is not None:
                if a[i] == b[j]:
                    continue
                where = f"{path}.{section}[{labels[i]}]"
                if _undecoded(a[i]) or _undecoded(b[j]):
                    # Bytes that did not decode have no fields to compare: the message changed as a whole.
                    out.append(Difference(DiffKind.FIELD_CHANGED, where, old=a[i], new=b[j]))
                    continue
                x = self._reconcile(a[i], sa[i], old, section, old_side=True)
                y = self._reconcile(b[j], sb[j], new, section, old_side=False)
                out.extend(value_diffs(x, y, where))
            elif i is not None:
                out.append(Difference(DiffKind.MESSAGE_REMOVED, f"{path}.{section}[{labels[i]}]", old=a[i]))
            else:
                assert j is not None
                out.append(Difference(DiffKind.MESSAGE_ADDED, f"{path}.{section}[{j}]", new=b[j]))
        return out

    def _masked_messages(
        self, unit: Unit, sa: list[ViewMessage | None], sb: list[ViewMessage | None], section: str, path: str
    ) -> None:
        """List the raw differences of messages that compare equal once masked (--show-ignored)."""
        base = f"{unit.first.short_method}.{section[:-1]}"
        normalizer = self.old_builder.normalizer
        for i, (x, y) in enumerate(zip(sa, sb, strict=False)):
            if x is None or y is None or x.value is None or y.value is None or x.value == y.value:
                continue
            for d in value_diffs(x.value, y.value, ""):
                rule = _rule_above(normalizer, base + _rule_path(d.path))
                why = rule.reason if rule is not None else _mask_names(normalizer.value(base, d.old))
                self.ignore(IgnoredKind.MASKED, f"{path}.{section}[{i}]{d.path}", d.old, d.new, why)

    def _reconcile(self, value: Any, source: ViewMessage | None, unit: Unit, section: str, *, old_side: bool) -> Any:
        """Name the unknown fields of `value` that the other cassette's schema knows (see `_adopt_names`)."""
        if source is None or source.type_name is None or not isinstance(value, dict) or not _has_unknown(value):
            return value
        other = self.new.registry if old_side else self.old.registry
        try:
            descriptor = other.descriptor(source.type_name)
            decoded = other.decode(source.type_name, source.data)
        except ProtocolError:
            return value
        adopted = _adopt_names(source.value or {}, decoded, descriptor)
        normalizer = (self.old_builder if old_side else self.new_builder).normalizer
        return normalizer.value(f"{unit.first.short_method}.{section[:-1]}", adopted)

    def _timing(self, old: Unit, new: Unit, path: str) -> Iterator[Difference]:
        threshold = self.options.timing_threshold
        if threshold is None:
            return
        before, after = old.first.duration_ns, new.first.duration_ns
        if before is None or after is None or before <= 0:
            return
        change = (after - before) / before * 100
        if abs(change) > threshold:
            yield Difference(
                DiffKind.TIMING_CHANGED,
                f"{path}.duration",
                old=round(before / 1e6, 3),
                new=round(after / 1e6, 3),
                detail=f"{change:+.0f}% (ms)",
            )


_INDEX_OR_KEY = re.compile(r'\[(?:"((?:[^"\\]|\\.)*)"|[0-9]+)\]')


def _rule_path(path: str) -> str:
    """A diff path inside a message (`.reports[0].labels["a/b"]`) as an ignore path (`.reports.labels.a/b`)."""
    return _INDEX_OR_KEY.sub(lambda m: "." + m.group(1) if m.group(1) is not None else "", path)


def _rule_above(normalizer: Any, path: str) -> Any:
    """The ignore rule that masks `path` or a field above it, if any."""
    while "." in path:
        rule = normalizer.rule_for(path)
        if rule is not None:
            return rule
        path = path.rsplit(".", 1)[0]
    return None


def _mask_names(masked: Any) -> str:
    """Which value masks a masked value holds (for --show-ignored's `why`)."""
    text = inline_text(masked, None)
    names = [why for token, why in MASKS if token in text]
    return "; ".join(names) or "a value mask"


def _raw_metadata(call: ViewCall, section: str) -> dict[str, list[Any]]:
    raw = getattr(call, section) or ()
    out: dict[str, list[Any]] = {}
    for key, value in raw:
        out.setdefault(key.lower(), []).append(value)
    return out


def _metadata_diffs(old: dict[str, Any], new: dict[str, Any], path: str) -> list[Difference]:
    out: list[Difference] = []
    for key in list(old) + [k for k in new if k not in old]:
        child = f"{path}.{key}"  # metadata keys are lowercase tokens: no quoting needed
        if key not in new:
            out.append(Difference(DiffKind.METADATA_KEY_REMOVED, child, old=old[key]))
        elif key not in old:
            out.append(Difference(DiffKind.METADATA_KEY_ADDED, child, new=new[key]))
        elif old[key] != new[key]:
            out.append(Difference(DiffKind.METADATA_VALUE_CHANGED, child, old=old[key], new=new[key]))
    return out


_SCHEMA_KINDS = {
    "added": DiffKind.SCHEMA_ADDED,
    "removed": DiffKind.SCHEMA_REMOVED,
    "changed": DiffKind.SCHEMA_CHANGED,
}


def _schema_differences(changes: list[SchemaChange]) -> list[Difference]:
    return [
        Difference(_SCHEMA_KINDS[c.change], f"schema:{c.element}:{c.name}", old=c.old, new=c.new, detail=c.element)
        for c in changes
    ]


def diff_views(
    old: CassetteView,
    new: CassetteView,
    options: DiffOptions | None = None,
    *,
    old_units: CanonicalUnits | None = None,
    new_units: CanonicalUnits | None = None,
) -> DiffReport:
    """Compare two decoded cassettes; see the module docstring. `old_units`/`new_units`, when given, are
    `canonical_units` of the views with the same options."""
    options = options or DiffOptions()
    old_units = old_units or canonical_units(old, options)
    new_units = new_units or canonical_units(new, options)
    comparer = _Comparer(old, new, options, old_units, new_units)
    differences = _schema_differences(diff_schemas(old.registry.descriptor_set, new.registry.descriptor_set))
    differences.extend(comparer.groups(old_units.groups, new_units.groups, "", (None, None)))
    return DiffReport(
        differences=differences,
        options=options,
        old_calls=len(old.calls),
        new_calls=len(new.calls),
        ignored=comparer.ignored,
    )
