"""`jsreplay trim`: keep or drop calls by method, time or call id, with what replay needs for the rest.

A selection picks outer calls; then, until nothing changes, each kept call brings what replaying it needs:

- a router stream (a tunnel end): the tunnel's other end (same token) and the Dial or Listen whose response
  issued that token;
- a Dial, or any controller call that names a lease (CreateLease's response, GetLease, DeleteLease, a Dial's
  `lease_name`, ...): every controller call that names that lease, and the client's calls naming the lease's
  exporter (GetExporter) while the lease lived.

A tunnel is kept or dropped whole: its inner calls are bytes of one HTTP/2 connection, which cannot be cut
without re-encoding it. A method glob that matches an inner call (`ExporterService/DriverCall`) keeps the
tunnel that carried it. Kept calls keep their call ids and times; sequence numbers are renumbered.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jsreplay.cassette.format import CassetteReader, CassetteWriter
from jsreplay.cassette.model import Call, Header, Role, group_calls
from jsreplay.edit.output import Output, read_back
from jsreplay.inspect.show import method_matches
from jsreplay.inspect.view import build_view
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import ROUTER_STREAM, short_method
from jsreplay.session.tokens import bearer_token

EDITS_KEY = "edits"  # the header's list of trims and joins


@dataclass(frozen=True)
class Selection:
    """Which calls to keep. Empty keep criteria keep everything (then the drops apply)."""

    methods: tuple[str, ...] = ()
    drop_methods: tuple[str, ...] = ()
    since_s: float | None = None  # calls that started at or after (seconds since the recording started)
    until_s: float | None = None  # calls that started before
    calls: frozenset[int] | None = None
    drop_calls: frozenset[int] = frozenset()
    dependencies: bool = True

    def describe(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "drop_methods": list(self.drop_methods),
            "since_s": self.since_s,
            "until_s": self.until_s,
            "calls": sorted(self.calls) if self.calls is not None else None,
            "drop_calls": sorted(self.drop_calls),
        }


@dataclass
class TrimResult:
    output: Path
    kept: int
    total: int
    added: list[int] = field(default_factory=list)  # call ids kept as dependencies
    events: int = 0


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@dataclass
class _Facts:
    """What the dependency rules look at, per call."""

    token: str | None = None  # router streams: the token presented
    issued: set[str] = field(default_factory=set)  # Dial/Listen: router tokens in the responses
    strings: set[str] = field(default_factory=set)  # controller calls: every string of every message
    leases: set[str] = field(default_factory=set)  # lease names this call names
    exporters: set[str] = field(default_factory=set)  # exporter names the lease responses name
    client: bool = False


def _facts(call: Call, registry: Registry) -> _Facts:
    facts = _Facts()
    if call.method == ROUTER_STREAM and call.role is Role.ROUTER:
        facts.token = bearer_token(call.start.metadata)
        return facts
    info = registry.method(call.method)
    if info is None:
        return facts
    facts.client = any(k == "jumpstarter-kind" and v == "Client" for k, v in call.start.metadata)
    values: list[tuple[bool, Any]] = []
    for data in call.requests:
        try:
            values.append((True, registry.decode(info.request_type, data)))
        except ProtocolError:
            pass
    for data in call.responses:
        try:
            values.append((False, registry.decode(info.response_type, data)))
        except ProtocolError:
            pass
    for request, value in values:
        facts.strings.update(_strings(value))
        if not isinstance(value, dict):
            continue
        if not request and isinstance(value.get("router_token"), str):
            facts.issued.add(value["router_token"])
        if request and isinstance(value.get("lease_name"), str) and value["lease_name"]:
            facts.leases.add(value["lease_name"])
        name = value.get("name")
        if isinstance(name, str) and "/leases/" in name:
            facts.leases.add(name.rsplit("/", 1)[1])
            if not request and isinstance(value.get("exporter"), str) and value["exporter"]:
                facts.exporters.add(value["exporter"])
    return facts


def _span(call: Call) -> tuple[int, int]:
    return call.start.t_ns, max((e.t_ns for e in call.events), default=call.start.t_ns)


def select(calls: Sequence[Call], header_descriptors: bytes, selection: Selection) -> tuple[set[int], set[int]]:
    """(kept call ids, of which added as dependencies)."""
    registry = Registry.for_descriptor_set(header_descriptors)
    by_id = {c.call_id: c for c in calls}
    inner_methods: dict[int, list[tuple[str, str]]] = {}
    if selection.methods or selection.drop_methods:
        view = build_view(_header_stub(header_descriptors), [c for c in calls if c.method == ROUTER_STREAM])
        for v in view.calls:
            if v.inner:
                inner_methods[v.id] = [(i.method, i.short_method) for i in v.inner]

    def matches(call: Call, globs: tuple[str, ...]) -> bool:
        if method_matches(call.method, short_method(call.method), globs):
            return True
        return any(method_matches(m, s, globs) for m, s in inner_methods.get(call.call_id, []))

    chosen: set[int] = set()
    for call in calls:
        t_s = call.start.t_ns / 1e9
        if selection.methods and not matches(call, selection.methods):
            continue
        if selection.since_s is not None and t_s < selection.since_s:
            continue
        if selection.until_s is not None and t_s >= selection.until_s:
            continue
        if selection.calls is not None and call.call_id not in selection.calls:
            continue
        chosen.add(call.call_id)
    dropped = {c.call_id for c in calls if c.call_id in selection.drop_calls}
    if selection.drop_methods:
        dropped |= {c.call_id for c in calls if matches(c, selection.drop_methods)}
    chosen -= dropped
    if not selection.dependencies:
        return chosen, set()

    facts = {c.call_id: _facts(c, registry) for c in calls}
    kept = set(chosen)
    todo = list(kept)
    while todo:
        cid = todo.pop()
        f = facts[cid]
        wanted: set[int] = set()
        if f.token is not None:
            wanted |= {o for o, g in facts.items() if g.token == f.token or f.token in g.issued}
        leases = set(f.leases)
        if f.token is None:
            for lease in leases:
                group = [o for o, g in facts.items() if lease in g.leases]
                wanted |= set(group)
                exporters = set().union(*(facts[o].exporters for o in group))
                spans = [_span(by_id[o]) for o in group]
                begin, end = min(s for s, _ in spans), max(e for _, e in spans)
                wanted |= {
                    o
                    for o, g in facts.items()
                    if g.client and g.strings & exporters and begin <= by_id[o].start.t_ns <= end
                }
        for other in wanted - kept - dropped:
            kept.add(other)
            todo.append(other)
    return kept, kept - chosen


def _header_stub(descriptor_set: bytes) -> Header:
    return Header(format_version=1, jsreplay_version="", created_unix_ns=0, descriptor_set=descriptor_set)


def trim_cassette(source: Path, output: Path, selection: Selection, *, overwrite: bool = False) -> TrimResult:
    with Output(output, inputs=[source], overwrite=overwrite) as out:
        with CassetteReader(source) as reader:
            header = reader.header
            events = list(reader)
        calls = group_calls(events)
        kept, added = select(calls, header.descriptor_set, selection)
        if not kept:
            raise ValueError("the selection keeps no calls")
        history = header.extra.get(EDITS_KEY)
        entry = {"by": "jsreplay trim", "at_unix_ns": time.time_ns(), "source": source.name, **selection.describe()}
        header = _with_extra(header, {EDITS_KEY: [*(history if isinstance(history, list) else []), entry]})
        seq = 0
        with CassetteWriter(out.temp, header, redactor=None) as writer:
            for event in events:
                if event.call_id in kept:
                    writer.write(dataclasses.replace(event, seq=seq))
                    seq += 1
        written = read_back(out.temp)
        out.commit()
    return TrimResult(output=output, kept=len(kept), total=len(calls), added=sorted(added), events=written)


def _with_extra(header: Header, extra: dict[str, Any]) -> Header:
    return dataclasses.replace(header, extra={**header.extra, **extra})
