"""`jsreplay redact`: apply the redaction rules, and `--scrub` values, to an existing cassette.

The cassette is copied event by event through a `CassetteWriter` whose redactor is a `Scrubber` under a fresh
key: the same rules the recorder applies (defaults plus extra fields and metadata keys), then the scrub. The
header says what was redacted and when (`redactions`, a list: each run adds an entry). Values redacted when
the cassette was recorded stay as they were (their secrets are gone; their fingerprints keep pairing).

With `--scrub`, the output is read back twice before it is put in place: its bytes, for every encoding of each
value, and its decoded view (tunnels decoded, as show sees them), for what bytes cannot show (a value inside a
compressed message or an HPACK Huffman-coded header). Either finding refuses the output.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsreplay import __version__
from jsreplay.cassette.errors import CassetteError
from jsreplay.cassette.format import CassetteReader, CassetteWriter
from jsreplay.cassette.model import CallStart, ClientMessage, Header, Redaction, Role, ServerMessage, group_calls
from jsreplay.cassette.redaction import DEFAULT_FIELD_NAMES, DEFAULT_FIELDS, DEFAULT_METADATA_KEYS
from jsreplay.edit.output import Output, read_back
from jsreplay.edit.scrub import Scrubber, TunnelPatches, split_matches
from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import ROUTER_STREAM
from jsreplay.session.tunnels import event_frame

HEADER_KEY = "redactions"  # the header's list of after-the-fact redactions


@dataclass(frozen=True)
class RedactResult:
    events: int
    replaced: int  # occurrences of --scrub values replaced
    output: Path


def _union(*lists: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(item for items in lists for item in items))


def _new_header(header: Header, scrubber: Scrubber, extra_keys: Sequence[str], extra_fields: Sequence[str]) -> Header:
    header = scrubber.scrub_header(header)
    old = header.redaction
    entry: dict[str, Any] = {
        "by": "jsreplay redact",
        "jsreplay_version": __version__,
        "at_unix_ns": time.time_ns(),
        "metadata_keys": list(_union(DEFAULT_METADATA_KEYS, extra_keys)),
        "fields": list(_union(DEFAULT_FIELDS, extra_fields)),
        "field_names": list(DEFAULT_FIELD_NAMES),
        "scrubbed_values": len(scrubber.values),  # how many; never the values, nor anything derived from them
    }
    previous = header.extra.get(HEADER_KEY)
    history = list(previous) if isinstance(previous, list) else []
    return dataclasses.replace(
        header,
        redaction=Redaction(
            enabled=True,
            metadata_keys=_union(old.metadata_keys, entry["metadata_keys"]),
            fields=_union(old.fields, entry["fields"]),
            field_names=_union(old.field_names, entry["field_names"]),
        ),
        extra={**header.extra, HEADER_KEY: [*history, entry]},
    )


def _payload_offset(data: bytes, payload: bytes) -> int:
    """Where a router frame's payload (field 1, bytes) sits in the frame's encoding."""
    if data[:1] == b"\x0a":
        i, shift, length = 1, 0, 0
        while i < len(data):
            byte = data[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if not byte & 0x80:
                break
            shift += 7
        if length == len(payload) and data[i : i + length] == payload:
            return i
    return data.find(payload)


def tunnel_patches(path: Path, registry: Registry, scrubber: Scrubber) -> TunnelPatches:
    """First pass: values split across two router frames of one direction of one router call."""
    patches = TunnelPatches()
    if not scrubber.pairs:
        return patches
    window = max(len(form) for form, _ in scrubber.pairs) - 1
    routers: set[int] = set()
    tails: dict[tuple[int, bool], list[tuple[int, int, bytes]]] = {}
    with CassetteReader(path) as reader:
        for event in reader:
            if isinstance(event, CallStart):
                if event.method == ROUTER_STREAM and event.role is Role.ROUTER:
                    routers.add(event.call_id)
                continue
            if event.call_id not in routers or not isinstance(event, ClientMessage | ServerMessage):
                continue
            try:
                sent, frame = event_frame(registry, event)
            except ProtocolError:
                continue  # not a frame: its bytes are scrubbed as they are
            if not frame.payload:
                continue
            key = (event.call_id, sent)
            items = [*tails.get(key, []), (event.seq, _payload_offset(event.data, frame.payload), frame.payload)]
            for seq, found in split_matches(items, scrubber.pairs).by_seq.items():
                patches.by_seq.setdefault(seq, []).extend(found)
            tail: list[tuple[int, int, bytes]] = []  # the last `window` bytes, which a later match may start in
            size = 0
            for seq, base, chunk in reversed(items):
                if size >= window:
                    break
                cut = max(0, len(chunk) - (window - size))
                tail.insert(0, (seq, base + cut, chunk[cut:]))
                size += len(chunk) - cut
            tails[key] = tail
    return patches


def _file_chunks(path: Path, overlap: int) -> Iterator[bytes]:
    with open(path, "rb") as file:
        tail = b""
        while chunk := file.read(1 << 22):
            yield tail + chunk
            tail = chunk[-overlap:] if overlap else b""


def check_scrubbed(path: Path, scrubber: Scrubber, decoded_text: Callable[[Path], Iterator[str]]) -> None:
    """Refuse an output in which a scrubbed value can still be found: in its bytes, or in its decoded view."""
    overlap = max((len(form) for form, _ in scrubber.pairs), default=1)
    for chunk in _file_chunks(path, overlap):
        found = scrubber.found_in(chunk)
        if found:
            raise CassetteError(path, f"a --scrub value is still in the file ({', '.join(found)}); nothing written")
    for text in decoded_text(path):
        data = text.encode()
        found = scrubber.found_in(data)
        if found:
            raise CassetteError(
                path,
                f"a --scrub value is still in the decoded cassette ({', '.join(found)}), inside bytes that cannot "
                "be rewritten in place (a compressed message or a Huffman-coded tunnel header); nothing written",
            )


def decoded_json(path: Path) -> Iterator[str]:
    """The decoded view's JSON text (as `show --format json`), a call at a time."""
    from jsreplay.inspect.show import ShowOptions, view_json_text
    from jsreplay.inspect.view import build_view

    with CassetteReader(path) as reader:
        events = list(reader)
        header = reader.header
    view = build_view(header, group_calls(events), events=len(events))
    yield from view_json_text(view, str(path), ShowOptions())


def redact_cassette(
    source: Path,
    output: Path | None,
    *,
    metadata_keys: Sequence[str] = (),
    fields: Sequence[str] = (),
    scrub: Sequence[str] = (),
    overwrite: bool = False,
    in_place: bool = False,
    key: bytes | None = None,
) -> RedactResult:
    """Write `source` redacted to `output` (or over `source` with `in_place`). ValueError for a bad rule."""
    target = source if in_place else output
    if target is None:
        raise ValueError("an output path is needed (or in_place)")
    with CassetteReader(source) as reader:
        header = reader.header
    registry = Registry.for_descriptor_set(header.descriptor_set)
    scrubber = Scrubber(
        registry=registry,
        key=key,
        metadata_keys=_union(DEFAULT_METADATA_KEYS, metadata_keys),
        fields=_union(DEFAULT_FIELDS, fields),
        scrub=scrub,
    )
    with Output(target, inputs=[source], overwrite=overwrite, in_place=in_place) as out:
        scrubber.patches = tunnel_patches(source, registry, scrubber)
        with CassetteReader(source) as reader:
            writer = CassetteWriter(
                out.temp, _new_header(reader.header, scrubber, metadata_keys, fields), redactor=scrubber
            )
            with writer:
                for event in reader:
                    writer.write(event)
        events = read_back(out.temp)
        if scrubber.values:
            check_scrubbed(out.temp, scrubber, decoded_json)
        out.commit()
    return RedactResult(events=events, replaced=scrubber.replaced, output=target)
