"""The scrubber's forms: raw, hex, base64 at every alignment, and values split across router frames."""

from __future__ import annotations

import base64

from jsreplay.edit.scrub import Scrubber, split_matches
from jsreplay.protocol.registry import Registry

SECRET = "s3cr3t-t0ken-value"


def scrubber() -> Scrubber:
    return Scrubber(registry=Registry.default(), scrub=[SECRET])


def test_every_form_at_every_alignment_is_replaced_with_the_same_length() -> None:
    s = scrubber()
    for prefix in (b"", b"a", b"ab", b"abc"):
        embedded = prefix + SECRET.encode() + b"tail"
        for text in (
            embedded,
            embedded.hex().encode(),
            embedded.hex().upper().encode(),
            base64.b64encode(embedded),
            base64.urlsafe_b64encode(embedded),
        ):
            out = s.scrub_bytes(b"<" + text + b">")
            assert len(out) == len(text) + 2
            assert not s.found_in(out), (prefix, text)


def test_equal_values_get_equal_replacements_and_a_split_value_is_patched() -> None:
    s = scrubber()
    assert s.scrub_str(f"a {SECRET} b")[2:-2] == s.scrub_str(f"{SECRET}") != SECRET
    data = f"xx{SECRET}yy".encode()
    chunks = [(1, 3, data[:7]), (2, 0, data[7:12]), (3, 5, data[12:])]
    patches = split_matches(chunks, s.pairs)
    joined = b"".join(patches.apply(seq, b"\0" * base + chunk)[base:] for seq, base, chunk in chunks)
    assert SECRET.encode() not in joined and len(joined) == len(data)
    assert joined == s.scrub_bytes(data)
