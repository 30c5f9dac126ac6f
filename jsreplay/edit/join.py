"""`jsreplay cat`: join recordings into one cassette that replays every session in it.

Each input after the first is placed after the previous one ends (a 1 ms gap): its call ids are moved past
the ones before it, sequence numbers run on, and its times move by the same offset. So that replay, which
moves response timestamps by (now - the header's `created_unix_ns`), sees each session's leases as it saw
them, the timestamps in each later input's controller responses move by the difference between where its
events now start and when it was really recorded.

The schemas must be compatible: the joined cassette embeds one input's schema, chosen so that every other
input's schema differs from it only by additions (so each message decodes as it did). Otherwise, and when two
inputs share a router token (the same recording twice: their tunnels could not be told apart), it refuses.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from jsreplay.cassette.errors import CassetteError
from jsreplay.cassette.format import CassetteReader, CassetteWriter
from jsreplay.cassette.model import AnyEvent, CallStart, Header, Redaction, Role, ServerMessage
from jsreplay.edit.output import Output, read_back
from jsreplay.edit.trim import EDITS_KEY
from jsreplay.inspect.schema_diff import diff_schemas
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import ROUTER_STREAM
from jsreplay.session.tokens import bearer_token

GAP_NS = 1_000_000
TIMESTAMP_TYPES = frozenset({"google.protobuf.Timestamp", "jumpstarter.v1.Time"})


@dataclass(frozen=True)
class JoinResult:
    output: Path
    calls: int
    events: int


def _choose_schema(headers: Sequence[tuple[Path, Header]]) -> bytes:
    sets = [h.descriptor_set for _, h in headers]
    if len(set(sets)) == 1:
        return sets[0]
    problems: list[str] = []
    for candidate in dict.fromkeys(sets):
        bad = None
        for path, header in headers:
            changes = [c for c in diff_schemas(candidate, header.descriptor_set) if c.change != "removed"]
            # From the candidate to this input only removals are allowed: this input knows a subset.
            if changes:
                c = changes[0]
                bad = f"{path}: {c.element} {c.name} {c.change} ({c.old or '-'} -> {c.new or '-'})"
                break
        if bad is None:
            return candidate
        problems.append(bad)
    raise CassetteError(headers[0][0], f"the inputs' schemas are not compatible, cannot join: {problems[0]}")


def _shift(message: Message, seconds: int) -> bool:
    changed = False
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is None:
                continue
            items = list(value.values())
        else:
            items = list(value) if field.is_repeated else [value]
        for item in items:
            if item.DESCRIPTOR.full_name in TIMESTAMP_TYPES:
                if getattr(item, "seconds", 0):
                    item.seconds += seconds
                    changed = True
            else:
                changed |= _shift(item, seconds)
    return changed


def shift_timestamps(registry: Registry, type_name: str, data: bytes, seconds: int) -> bytes:
    """`data` with every timestamp moved by `seconds`; the same bytes when it holds none or does not decode."""
    if not seconds:
        return data
    try:
        message = registry.parse(type_name, data)
    except ProtocolError:
        return data
    return message.SerializeToString() if _shift(message, seconds) else data


def _scan(path: Path) -> tuple[set[str], int, int]:
    """A first pass: the router tokens an input presents, its largest call id and its last time."""
    tokens: set[str] = set()
    max_id = last_t = 0
    with CassetteReader(path) as reader:
        for e in reader:
            max_id, last_t = max(max_id, e.call_id), max(last_t, e.t_ns)
            if isinstance(e, CallStart) and e.method == ROUTER_STREAM:
                token = bearer_token(e.metadata)
                if token:
                    tokens.add(token)
    return tokens, max_id, last_t


def join_cassettes(sources: Sequence[Path], output: Path, *, overwrite: bool = False) -> JoinResult:
    headers: list[tuple[Path, Header]] = []
    for path in sources:
        with CassetteReader(path) as reader:
            headers.append((path, reader.header))
    schema = _choose_schema(headers)
    seen: dict[str, Path] = {}
    first = headers[0][1]
    parts: list[dict[str, Any]] = []
    id_base = t_base = 0
    for path, source_header in headers:
        tokens, max_id, last_t = _scan(path)
        for token in tokens:
            if token in seen:
                raise CassetteError(
                    path, f"shares router token {token} with {seen[token]} (the same recording twice?); cannot join"
                )
            seen[token] = path
        shift_s = round((first.created_unix_ns + t_base - source_header.created_unix_ns) / 1e9)
        parts.append(
            {
                "cassette": path.name,
                "created_unix_ns": source_header.created_unix_ns,
                "call_id_offset": id_base,
                "t_offset_ns": t_base,
                "timestamps_shifted_s": shift_s,
            }
        )
        id_base += max_id
        t_base += last_t + GAP_NS
    registry = Registry.for_descriptor_set(schema)
    history = first.extra.get(EDITS_KEY)
    entry = {"by": "jsreplay cat", "at_unix_ns": time.time_ns(), "parts": parts}
    header = dataclasses.replace(
        first,
        descriptor_set=schema,
        upstreams=tuple(dict.fromkeys(u for _, h in headers for u in h.upstreams)),
        redaction=Redaction(
            enabled=all(h.redaction.enabled for _, h in headers),
            metadata_keys=tuple(dict.fromkeys(k for _, h in headers for k in h.redaction.metadata_keys)),
            fields=tuple(dict.fromkeys(k for _, h in headers for k in h.redaction.fields)),
            field_names=tuple(dict.fromkeys(k for _, h in headers for k in h.redaction.field_names)),
        ),
        extra={**first.extra, EDITS_KEY: [*(history if isinstance(history, list) else []), entry]},
    )
    with Output(output, inputs=list(sources), overwrite=overwrite) as out:
        calls = 0
        with CassetteWriter(out.temp, header, redactor=None) as writer:
            seq = 0
            for (path, _), part in zip(headers, parts, strict=True):
                methods: dict[int, tuple[str, Role]] = {}
                id_base, t_base, shift_s = part["call_id_offset"], part["t_offset_ns"], part["timestamps_shifted_s"]
                with CassetteReader(path) as reader:
                    for event in reader:
                        if isinstance(event, CallStart):
                            methods[event.call_id] = (event.method, event.role)
                            calls += 1
                        moved: AnyEvent = dataclasses.replace(
                            event, call_id=event.call_id + id_base, seq=seq, t_ns=event.t_ns + t_base
                        )
                        if isinstance(moved, ServerMessage) and shift_s:
                            method, role = methods.get(event.call_id, ("", Role.ROUTER))
                            info = registry.method(method)
                            if info is not None and role is Role.CONTROLLER:
                                data = shift_timestamps(registry, info.response_type, moved.data, shift_s)
                                forwarded = moved.forwarded
                                if forwarded is not None:
                                    forwarded = shift_timestamps(registry, info.response_type, forwarded, shift_s)
                                moved = dataclasses.replace(moved, data=data, forwarded=forwarded)
                        writer.write(moved)
                        seq += 1
        events = read_back(out.temp)
        out.commit()
    return JoinResult(output=output, calls=calls, events=events)
