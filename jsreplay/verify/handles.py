"""Values the exporter hands out and the recorded client sends back: where they are, and what they became live.

A driver call may return an identifier that later calls pass back: opendal's `open` returns a file handle, a
resource stream's initial metadata names the resource (`resource: {"uuid": ...}`) that `file_write` then gets,
a session id, a driver UUID. The live exporter makes new ones. Which values these are is read from the recording,
not from a list of drivers: a value first seen in an exporter response (a message or its metadata) and later in
a client request (a message or its metadata) was handed out. `find_handouts` lists where each such value sits in
the recorded responses; as the live answers arrive, `Handouts.learn` reads the value at the same place in them
and tells `UuidMap` to send the live value wherever the recorded client sent the recorded one.

Values are the string leaves of decoded messages and of metadata values (a metadata value that is a JSON object
or list is looked into), and every UUID inside a string. GetReport is left to `UuidMap.learn`, which pairs
drivers by their place in the device tree.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import GET_REPORT, ROUTER_STREAM
from jsreplay.tunnel.calls import InnerCall
from jsreplay.tunnel.events import application_metadata

UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MIN_VALUE_LENGTH = 4  # shorter whole values ("on", "wb", "0") are not taken for identifiers

Path = tuple[Any, ...]


def leaves(value: Any, path: Path = ()) -> Iterator[tuple[Path, str]]:
    """Every string leaf of a decoded value with its path; a string holding a JSON object or list is looked into."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from leaves(item, (*path, key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from leaves(item, (*path, i))
    elif isinstance(value, str):
        if value[:1] in ("{", "["):
            try:
                inner = json.loads(value)
            except ValueError:
                inner = None
            if isinstance(inner, dict | list):
                yield from leaves(inner, (*path, "$json"))
                return
        yield path, value


def atoms(text: str) -> Iterator[tuple[int | None, str]]:
    """The identifier candidates in a string: the whole string (index None), and each UUID in it (its index)."""
    found = UUID.findall(text)
    if len(text) >= MIN_VALUE_LENGTH and found != [text]:
        yield None, text
    for i, uuid in enumerate(found):
        yield i, uuid.lower()


@dataclass(frozen=True)
class Place:
    """Where a handed-out value sits in a recorded call's answer."""

    call: int  # index of the inner call in the tunnel's recorded calls
    part: str  # "response" or "metadata" (the initial metadata)
    index: int  # the response's index (responses), 0 (metadata)
    path: Path  # within the decoded message, or (key, ...) within the metadata
    atom: int | None  # None: the whole string; k: the k-th UUID in it
    value: str  # the recorded value


def _decode(registry: Registry, type_name: str | None, data: bytes) -> Any:
    if type_name is None:
        return None
    try:
        return registry.decode(type_name, data)
    except ProtocolError:
        return None


def metadata_value(metadata: Sequence[tuple[str, str | bytes]]) -> dict[str, str]:
    return {k: v for k, v in application_metadata(tuple(metadata)) if isinstance(v, str)}


def find_handouts(registry: Registry, calls: Sequence[InnerCall]) -> list[Place]:
    """The places in the recorded answers of values the recorded client later sent back."""
    # (seq, is exporter, places or None) for every string leaf, in recorded order.
    events: list[tuple[int, bool, list[Place]]] = []
    sent: list[tuple[int, set[str]]] = []
    for ci, call in enumerate(calls):
        method = call.method or ""
        info = registry.method(method) if method != ROUTER_STREAM else None
        request_type = info.request_type if info is not None else None
        response_type = info.response_type if info is not None else None
        values = {v for _, leaf in leaves(metadata_value(call.request_metadata)) for _, v in atoms(leaf)}
        sent.append((call.opened_seq, values))
        for message in call.request_messages:
            decoded = _decode(registry, request_type, message.data)
            sent.append((message.seq, {v for _, leaf in leaves(decoded) for _, v in atoms(leaf)}))
        if method == GET_REPORT:
            continue
        if call.response_headers_seq is not None:
            places = [
                Place(ci, "metadata", 0, path, atom, value)
                for path, leaf in leaves(metadata_value(call.response_metadata))
                for atom, value in atoms(leaf)
            ]
            events.append((call.response_headers_seq, True, places))
        for ri, message in enumerate(call.response_messages):
            decoded = _decode(registry, response_type, message.data)
            places = [
                Place(ci, "response", ri, path, atom, value)
                for path, leaf in leaves(decoded)
                for atom, value in atoms(leaf)
            ]
            events.append((message.seq, True, places))
    first_out: dict[str, int] = {}
    for seq, values in sent:
        for value in values:
            first_out[value] = min(first_out.get(value, seq), seq)
    found: dict[str, Place] = {}
    for seq, _, places in sorted(events, key=lambda e: e[0]):
        for place in places:
            first_sent = first_out.get(place.value)
            if first_sent is not None and first_sent > seq and place.value not in found:
                found[place.value] = place
    return list(found.values())


def live_value(place: Place, decoded: Any) -> str | None:
    """The value at `place` in a live answer (decoded message, or metadata as a dict), or None."""
    for path, leaf in leaves(decoded):
        if path != place.path:
            continue
        if place.atom is None:
            return leaf
        found = UUID.findall(leaf)
        return found[place.atom] if place.atom < len(found) else None
    return None
