#!/usr/bin/env python3
"""Copy a Jumpstarter ``protocol/proto`` tree into ``protos/<line>/``, minus the googleapis annotations.

The upstream ``client.proto`` imports ``google/api/*.proto`` and uses them only for options (HTTP bindings,
field behaviour, resource names, method signatures), which do not change the wire format and are not
available offline. This drops those imports and options and keeps everything else as it is (comments too).

Usage:
    python scripts/import_protos.py ../shared/jumpstarter-head/protos protos/head
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_IMPORT = re.compile(r'^\s*import\s+"google/api/[^"]+";\s*\n', re.M)


def _skip_value(text: str, i: int) -> int:
    """The index after an option value starting at `i`: a {...} block (nested), a string or a bare word."""
    while text[i].isspace():
        i += 1
    if text[i] == "{":
        depth = 0
        while True:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    return i + 1
            elif text[i] == '"':
                i = text.index('"', i + 1)
            i += 1
    if text[i] == '"':
        return text.index('"', i + 1) + 1
    m = re.compile(r"[\w.\-]+").match(text, i)
    assert m is not None, text[i : i + 40]
    return m.end()


def strip_google_api(text: str) -> str:
    text = _IMPORT.sub("", text)
    # statement options: option (google.api.x) = VALUE;
    while (m := re.search(r"^[ \t]*option\s*\(google\.api\.[\w.]+\)\s*=", text, re.M)) is not None:
        end = _skip_value(text, m.end())
        end = text.index(";", end) + 1
        if text[end : end + 1] == "\n":
            end += 1
        text = text[: m.start()] + text[end:]
    # field options: [ (google.api.x) = VALUE, other = v ]
    out: list[str] = []
    i = 0
    for m in re.finditer(r"\[", text):
        if m.start() < i:
            continue
        close = _bracket_end(text, m.start())
        body = text[m.start() + 1 : close]
        if "(google.api." not in body:
            continue
        kept = [o.strip() for o in _split_options(body) if not o.strip().startswith("(google.api.")]
        out.append(text[i : m.start()].rstrip() if not kept else text[i : m.start()])
        if kept:
            out.append("[" + ", ".join(kept) + "]")
        i = close + 1
    out.append(text[i:])
    return "".join(out)


def _bracket_end(text: str, start: int) -> int:
    depth = 0
    i = start
    while True:
        c = text[i]
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth == 0:
                return i
        elif c == '"':
            i = text.index('"', i + 1)
        i += 1


def _split_options(body: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for c in body:
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += c
    if current.strip():
        parts.append(current)
    return parts


def main(argv: list[str]) -> int:
    source, target = Path(argv[0]), Path(argv[1])
    for path in sorted(source.rglob("*.proto")):
        rel = path.relative_to(source)
        out = target / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(strip_google_api(path.read_text()))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
