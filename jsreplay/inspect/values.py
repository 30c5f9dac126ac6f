"""Decoded message values as JSON and as short, readable text.

Decoded messages are the registry's "readable structures": dicts, lists, str, int, float, bool, None, bytes,
and lists of `UnknownField` under "#N" keys. JSON has no bytes and no unknown fields, so both get a tagged
object (documented in docs/inspect.md, "JSON values"):

- bytes: ``{"$bytes": "<base64>"}``, or, when `max_bytes` is given and the value is longer,
  ``{"$bytes_len": n, "$sha256": "<hex>", "$head": "<base64 of the first 32 bytes>"}``;
- an unknown field: ``{"$unknown": {"number": n, "wire_type": "VARINT", "value": ...}}``;
- a float that JSON cannot hold (NaN, infinities): ``{"$float": "nan"}``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Callable
from typing import Any

from jsreplay.protocol.registry import UnknownField, WireType, printable_text

BYTES_HEAD = 32  # bytes kept in the summary of a long byte string
TEXT_BYTES = 16  # bytes of a byte string shown in text output before it is abbreviated
_encode_string = json.encoder.encode_basestring  # the C encoder json.dumps uses, without its per-call setup
_C1 = re.compile("[\x7f-\x9f]")  # DEL and C1 controls, which json.dumps leaves as they are
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$|^#[0-9]+$")


def human_bytes(n: int) -> str:
    """1536 -> "1.5 KiB" (the inspect package does not import the CLI's helpers)."""
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def bytes_to_json(data: bytes, max_bytes: int | None = None) -> dict[str, Any]:
    if max_bytes is not None and len(data) > max_bytes:
        return {
            "$bytes_len": len(data),
            "$sha256": hashlib.sha256(data).hexdigest(),
            "$head": base64.b64encode(data[:BYTES_HEAD]).decode(),
        }
    return {"$bytes": base64.b64encode(data).decode()}


def to_json(
    value: Any, max_bytes: int | None = None, bytes_json: Callable[[bytes, int | None], Any] = bytes_to_json
) -> Any:
    """A decoded value (or any value built from the same types) as plain JSON data; `bytes_json` turns bytes
    into JSON data (see show.view_json_text for why it may be something else)."""
    if isinstance(value, dict):
        return {str(k): to_json(v, max_bytes, bytes_json) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v, max_bytes, bytes_json) for v in value]
    if isinstance(value, bytes):
        return bytes_json(value, max_bytes)
    if isinstance(value, UnknownField):
        inner = bytes_json(value.value, max_bytes) if isinstance(value.value, bytes) else value.value
        return {"$unknown": {"number": value.number, "wire_type": value.wire_type.name, "value": inner}}
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    return value


# Characters a terminal acts on instead of showing: C0 controls (ESC starts escape sequences), DEL, C1 controls
# (CSI, OSC...) and the bidi controls that reorder what follows (U+202E shows text backwards).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Text from a cassette made safe to print: control and bidi characters as `\\x1b`, `\\u202e`. Every text
    renderer's output goes through it (the CLI's write_output, diff's lines before they are coloured)."""
    return _UNPRINTABLE.sub(_escape_char, text) if _UNPRINTABLE.search(text) else text


def key_segment(key: str) -> str:
    """How a dict key appears in a path: `.name` for field names, `["key"]` for other map keys."""
    if _IDENTIFIER.match(key):
        return f".{key}"
    return "[" + quote(key) + "]"


def quote(text: str) -> str:
    """A string in double quotes with JSON-style escapes, so control characters can't garble a terminal."""
    quoted: str = _encode_string(text)
    return _C1.sub(lambda m: f"\\u{ord(m.group(0)):04x}", quoted) if _C1.search(quoted) else quoted


def bytes_text(data: bytes, limit: int | None = TEXT_BYTES) -> str:
    """Bytes as hex, abbreviated past `limit` bytes (None: all of them)."""
    if limit is None or len(data) <= limit:
        return f"0x{data.hex()}" if data else 'b""'
    return f"0x{data[:limit].hex()}… ({len(data)} bytes, sha256:{hashlib.sha256(data).hexdigest()[:8]})"


def unknown_text(fields: list[Any], limit: int | None = TEXT_BYTES) -> str:
    parts = []
    for f in fields:
        if isinstance(f, UnknownField):
            text = printable_text(f.value) if isinstance(f.value, bytes) else None
            if text is not None:  # a string field of a newer schema, most likely: show the words
                value = quote(text)
            else:
                value = bytes_text(f.value, limit) if isinstance(f.value, bytes) else str(f.value)
            wire = "group" if f.wire_type is WireType.START_GROUP else f.wire_type.name.lower()
            parts.append(f"{value} ({wire})")
        else:  # already masked to text by the normaliser
            parts.append(scalar_text(f, limit))
    return "unknown field: " + (parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]")


def scalar_text(value: Any, limit: int | None = TEXT_BYTES) -> str:
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, bytes):
        return bytes_text(value, limit)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, UnknownField):
        return unknown_text([value], limit)
    return repr(value)


def inline_text(value: Any, limit: int | None = TEXT_BYTES, _memo: dict[int, str] | None = None) -> str:
    """A value on one line: `{a: 1, b: [2, 3]}`; unknown fields as `#7: unknown field: 42 (varint)`."""
    kind = type(value)
    if kind is not dict and kind is not list and kind is not tuple:
        return scalar_text(value, limit)
    if _memo is not None:
        known = _memo.get(id(value))
        if known is not None:
            return known
    if kind is dict:
        items = []
        for k, v in value.items():
            key = str(k)
            if key.startswith("#") and isinstance(v, list):
                items.append(f"{key}: {unknown_text(v, limit)}")
            else:
                items.append(f"{key if _IDENTIFIER.match(key) else quote(key)}: {inline_text(v, limit, _memo)}")
        text = "{" + ", ".join(items) + "}"
    else:
        text = "[" + ", ".join(inline_text(v, limit, _memo) for v in value) + "]"
    if _memo is not None:
        _memo[id(value)] = text
    return text


def block_lines(
    value: Any, indent: str, width: int = 120, limit: int | None = TEXT_BYTES, _memo: dict[int, str] | None = None
) -> list[str]:
    """A value as indented lines: inline when it fits in `width`, else one field per line."""
    # Each level asks for its children's one-line form again: remember them (by identity, during this call).
    _memo = {} if _memo is None else _memo
    flat = inline_text(value, limit, _memo)
    if len(indent) + len(flat) <= width or not isinstance(value, dict | list | tuple) or not value:
        return [indent + flat]
    lines: list[str] = []
    child = indent + "  "
    if isinstance(value, dict):
        for k, v in value.items():
            key = str(k)
            label = key if _IDENTIFIER.match(key) else quote(key)
            if key.startswith("#") and isinstance(v, list):
                lines.append(f"{indent}{label}: {unknown_text(v, limit)}")
                continue
            sub = block_lines(v, child, width, limit, _memo)
            scalar = not isinstance(v, dict | list | tuple)
            if len(sub) == 1 and (scalar or len(indent) + len(label) + 2 + len(sub[0].lstrip()) <= width):
                lines.append(f"{indent}{label}: {sub[0].lstrip()}")
            else:
                lines.append(f"{indent}{label}:")
                lines.extend(sub)
    else:
        for i, v in enumerate(value):
            sub = block_lines(v, child, width, limit, _memo)
            if len(sub) == 1:
                lines.append(f"{indent}[{i}] {sub[0].lstrip()}")
            else:
                lines.append(f"{indent}[{i}]")
                lines.extend(sub)
    return lines
