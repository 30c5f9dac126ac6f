"""Scrubbing a value wherever it occurs: the cassette writer's `Redactor`, plus `--scrub TEXT`.

A value to scrub is looked for in every encoding a reader of the file could find it in: its raw UTF-8 bytes,
its lower- and upper-case hex, and its standard and URL-safe base64 at each of the three alignments it can
have inside a longer base64 text (only the characters that depend on the value alone; the up to two
characters on each side that mix in neighbouring bytes stay, so a few bits of the value's first and last
byte can remain in a base64 form).

Every occurrence is replaced by a text **of the same length** (`redacted:` and an HMAC of the value under the
redactor's key, cut or repeated to fit; its hex/base64 forms for the hex/base64 forms). That is what makes
byte-level replacement sound: a protobuf message keeps every length prefix, so it still decodes, whether the
value was a whole string field, part of one, inside a bytes field or inside bytes the schema does not know;
a string stays valid UTF-8 (the replacement is ASCII and replaces whole characters); no message is
re-encoded, so unknown fields and field order survive. Equal values get equal replacements, so a scrubbed
lease name is the same in CreateLease's response and the Dial that names it, and replay still pairs them.

Router frames are scrubbed frame by frame, plus `TunnelPatches` for a value split across two frames of one
tunnel direction. What cannot be found this way (a value inside a compressed gRPC message, or HPACK
Huffman-coded header inside a tunnel) is caught by reading the output back (`jsreplay.edit.redact`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from typing import Any

from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    Cancel,
    ClientMessage,
    Header,
    Metadata,
    ServerHeaders,
    ServerMessage,
    Status,
)
from jsreplay.cassette.redaction import REDACTED_PREFIX, Redactor

#: Shorter values would be found by chance (in base64 text, a short core is a few common characters).
MIN_SCRUB_BYTES = 8


def _replacement_text(key: bytes, raw: bytes) -> bytes:
    digest = hmac.new(key, b"scrub\0" + raw, hashlib.sha256).hexdigest()
    text = (REDACTED_PREFIX + digest) if len(raw) >= len(REDACTED_PREFIX) + 6 else digest
    while len(text) < len(raw):
        text += digest
    return text[: len(raw)].encode()


def _b64_cores(raw: bytes, alphabet: str) -> list[bytes]:
    """The base64 characters that depend on `raw` alone, for each alignment of `raw` in a longer text."""
    encode = base64.urlsafe_b64encode if alphabet == "urlsafe" else base64.b64encode
    cores = []
    for k in range(3):
        text = encode(b"\0" * k + raw)
        start = -(-8 * k // 6)  # ceil: characters that hold bits of the preceding bytes
        end = 8 * (k + len(raw)) // 6  # floor: the last character made of raw's bits only
        cores.append(text[start:end])
    return cores


def encodings(raw: bytes, replacement: bytes) -> list[tuple[bytes, bytes]]:
    """(form of the value, the same form of its replacement): raw, hex, base64 (two alphabets, three alignments)."""
    pairs = [(raw, replacement), (raw.hex().encode(), replacement.hex().encode())]
    pairs.append((raw.hex().upper().encode(), replacement.hex().upper().encode()))
    for alphabet in ("standard", "urlsafe"):
        pairs.extend(zip(_b64_cores(raw, alphabet), _b64_cores(replacement, alphabet), strict=True))
    unique: dict[bytes, bytes] = {}
    for form, repl in pairs:
        assert len(form) == len(repl)
        unique.setdefault(form, repl)
    return sorted(unique.items(), key=lambda p: -len(p[0]))  # longest first: a hex form before a shorter core


@dataclasses.dataclass
class TunnelPatches:
    """Same-length replacements at given offsets of given events: values split across router frames."""

    by_seq: dict[int, list[tuple[int, bytes]]] = dataclasses.field(default_factory=dict)

    def apply(self, seq: int, data: bytes) -> bytes:
        patches = self.by_seq.get(seq)
        if not patches:
            return data
        out = bytearray(data)
        for offset, piece in patches:
            out[offset : offset + len(piece)] = piece
        return bytes(out)


class Scrubber(Redactor):
    """The writer's `Redactor` (its field and metadata rules) that also replaces `scrub` values everywhere.

    Redaction runs first (it decodes messages to find secret fields), then the scrub, on bytes.
    """

    def __init__(self, *, scrub: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.values = [value.encode() for value in scrub]
        for raw in self.values:
            if len(raw) < MIN_SCRUB_BYTES:
                raise ValueError(
                    f"a --scrub value must be at least {MIN_SCRUB_BYTES} bytes (shorter ones match by chance)"
                )
        self.pairs: list[tuple[bytes, bytes]] = []
        for raw in self.values:
            self.pairs.extend(encodings(raw, self.scrub_replacement(raw)))
        self.pairs.sort(key=lambda p: -len(p[0]))
        self.replaced = 0  # occurrences replaced so far
        self.patches = TunnelPatches()

    def scrub_replacement(self, raw: bytes) -> bytes:
        return _replacement_text(self._key, raw)

    # ------------------------------------------------------------------------------------------- values

    def scrub_bytes(self, data: bytes) -> bytes:
        for form, repl in self.pairs:
            if form in data:
                self.replaced += data.count(form)
                data = data.replace(form, repl)
        return data

    def scrub_str(self, text: str) -> str:
        raw = text.encode()
        scrubbed = self.scrub_bytes(raw)
        return text if scrubbed == raw else scrubbed.decode()

    def scrub_metadata(self, metadata: Metadata) -> Metadata:
        return tuple(
            (self.scrub_str(k), self.scrub_bytes(v) if isinstance(v, bytes) else self.scrub_str(v)) for k, v in metadata
        )

    def scrub_any(self, value: Any) -> Any:
        """Strings and bytes anywhere in a msgpack-shaped value (header keys this version does not know)."""
        if isinstance(value, str):
            return self.scrub_str(value)
        if isinstance(value, bytes):
            return self.scrub_bytes(value)
        if isinstance(value, list | tuple):
            return type(value)(self.scrub_any(v) for v in value)
        if isinstance(value, dict):
            return {self.scrub_any(k): self.scrub_any(v) for k, v in value.items()}
        return value

    def scrub_header(self, header: Header) -> Header:
        return dataclasses.replace(
            header,
            upstreams=tuple(self.scrub_str(u) for u in header.upstreams),
            extra={self.scrub_str(k): self.scrub_any(v) for k, v in header.extra.items()},
        )

    # ------------------------------------------------------------------------------------------- events

    def redact(self, event: AnyEvent, method: str) -> AnyEvent:
        if isinstance(event, ClientMessage | ServerMessage) and event.seq in self.patches.by_seq:
            event = dataclasses.replace(event, data=self.patches.apply(event.seq, event.data))  # offsets as read
        event = super().redact(event, method)
        match event:
            case CallStart():
                return dataclasses.replace(
                    event,
                    method=self.scrub_str(event.method),
                    metadata=self.scrub_metadata(event.metadata),
                    peer=self.scrub_str(event.peer),
                    target=self.scrub_str(event.target),
                )
            case ClientMessage():
                return dataclasses.replace(event, data=self.scrub_bytes(event.data))
            case ServerMessage():
                forwarded = None if event.forwarded is None else self.scrub_bytes(event.forwarded)
                return dataclasses.replace(event, data=self.scrub_bytes(event.data), forwarded=forwarded)
            case ServerHeaders():
                return dataclasses.replace(event, metadata=self.scrub_metadata(event.metadata))
            case Status():
                return dataclasses.replace(
                    event,
                    details=self.scrub_str(event.details),
                    trailing_metadata=self.scrub_metadata(event.trailing_metadata),
                )
            case Cancel():
                return dataclasses.replace(event, reason=self.scrub_str(event.reason))
        return event

    def found_in(self, data: bytes) -> list[str]:
        """Which encodings of a scrubbed value occur in `data` (for the read-back check)."""
        found = []
        for raw in self.values:
            for form, _ in encodings(raw, b"x" * len(raw)):
                if form in data:
                    found.append("raw" if form == raw else "hex" if form.lower() == raw.hex().encode() else "base64")
        return sorted(set(found))


def split_matches(chunks: Iterable[tuple[int, int, bytes]], pairs: Sequence[tuple[bytes, bytes]]) -> TunnelPatches:
    """Patches for values split across consecutive chunks of one byte stream.

    `chunks` is (seq, offset of the chunk within its event's data, chunk bytes) in stream order. A value wholly
    inside one chunk is left to the ordinary scrub; one that spans chunks gets a patch on each event it touches.
    """
    patches = TunnelPatches()
    items = list(chunks)
    stream = b"".join(c for _, _, c in items)
    starts = []
    pos = 0
    for _, _, chunk in items:
        starts.append(pos)
        pos += len(chunk)
    for form, repl in pairs:
        at = stream.find(form)
        while at >= 0:
            end = at + len(form)
            touched = [i for i, s in enumerate(starts) if s < end and s + len(items[i][2]) > at]
            if len(touched) > 1:
                for i in touched:
                    seq, base, chunk = items[i]
                    lo, hi = max(at, starts[i]), min(end, starts[i] + len(chunk))
                    patches.by_seq.setdefault(seq, []).append((base + lo - starts[i], repl[lo - at : hi - at]))
            at = stream.find(form, end)
    return patches
