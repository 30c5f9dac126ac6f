"""`jsreplay show`: a cassette as a timeline (text) or as one JSON document.

Values in, values out: `render_text` yields lines and `view_to_json` returns a dict; the CLI prints them.
The JSON shape is documented in docs/inspect.md and checked by jsreplay/schemas/show.schema.json.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from jsreplay.cassette.model import Metadata
from jsreplay.inspect.schema_diff import schema_summary
from jsreplay.inspect.values import block_lines, bytes_to_json, human_bytes, inline_text, to_json
from jsreplay.inspect.view import CassetteView, EndKind, RouterStream, ViewCall, ViewMessage

JSON_FORMAT = "jsreplay-show/1"
RAW_LINE_BYTES = 32


@dataclass(frozen=True)
class ShowOptions:
    methods: tuple[str, ...] = ()  # globs; a call is shown when any matches (none given: every call)
    raw: bool = False  # hex bytes instead of decoded messages
    width: int = 120  # decoded values longer than this are broken into one field per line


def method_matches(method: str, short: str, globs: tuple[str, ...]) -> bool:
    """fnmatch on the full path (`/pkg.Service/Method`, also without the leading slash) or `Service/Method`."""
    return any(
        fnmatch.fnmatchcase(method, g) or fnmatch.fnmatchcase(method.lstrip("/"), g) or fnmatch.fnmatchcase(short, g)
        for g in globs
    )


def select_calls(view: CassetteView, globs: tuple[str, ...]) -> list[ViewCall]:
    """The calls `--method` selects. A tunnel is kept when one of its inner calls matches, with only those."""
    if not globs:
        return list(view.calls)
    out: list[ViewCall] = []
    for call in view.calls:
        if method_matches(call.method, call.short_method, globs):
            out.append(call)
        elif call.inner:
            inner = [c for c in call.inner if method_matches(c.method, c.short_method, globs)]
            if inner:
                out.append(replace(call, inner=inner))
    return out


# ---------------------------------------------------------------------------------------------------- header


def schema_digest(descriptor_set: bytes) -> str:
    return "sha256:" + hashlib.sha256(descriptor_set).hexdigest()[:16]


def header_summary(view: CassetteView) -> dict[str, Any]:
    header = view.header
    counts = schema_summary(view.registry.descriptor_set)
    return {
        "format_version": header.format_version,
        "jsreplay_version": header.jsreplay_version,
        "created_unix_ns": header.created_unix_ns,
        "upstreams": list(header.upstreams),
        "redaction": {
            "enabled": header.redaction.enabled,
            "metadata_keys": list(header.redaction.metadata_keys),
            "fields": list(header.redaction.fields),
        },
        "schema": {
            "embedded": bool(header.descriptor_set),
            "digest": schema_digest(view.registry.descriptor_set),
            "files": len(view.registry.files),
            "services": counts["service"],
            "methods": counts["method"],
            "messages": counts["message"],
        },
        "events": view.events,
        "truncated_at": view.truncated_at,
    }


# ---------------------------------------------------------------------------------------------------- text


def _when(t_ns: int | None) -> str:
    return "" if t_ns is None else f"+{t_ns / 1e9:.3f}s"


def _duration(call: ViewCall) -> str:
    ns = call.duration_ns
    if ns is None:
        return ""
    return f"{ns / 1e6:.1f} ms" if ns < 10_000_000_000 else f"{ns / 1e9:.1f} s"


def _frame_types(types: dict[str, int]) -> str:
    return " ".join(f"{name} x{n}" for name, n in sorted(types.items())) or "none"


def _stream_counts(stream: RouterStream) -> str:
    return (
        f"{stream.frames_out} frames out ({human_bytes(stream.bytes_out)}), "
        f"{stream.frames_in} in ({human_bytes(stream.bytes_in)})"
    )


def _status_text(call: ViewCall) -> str:
    return call.end.label()


def _metadata_text(metadata: Metadata) -> str:
    parts = []
    for key, value in metadata:
        shown = value if isinstance(value, str) else "0x" + value.hex()
        parts.append(f"{key}={shown}")
    return ", ".join(parts)


@dataclass
class _RenderMemo:
    """What one render has already produced, keyed by the identity of decoded values.

    Identical messages share one decoded value (see `view._MessageDecoder`), so each is laid out once. The view
    holds every value for the whole render, so no identity is reused while the memo lives.
    """

    inline: dict[int, str] = field(default_factory=dict)  # value or part of one -> its one-line text
    lines: dict[tuple[int, str, str, str], list[str]] = field(default_factory=dict)


def _message_lines(message: ViewMessage, arrow: str, indent: str, options: ShowOptions, memo: _RenderMemo) -> list[str]:
    type_name = message.type_name.rsplit(".", 1)[-1] if message.type_name else "?"
    if options.raw or message.value is None:
        why = f"  ({message.error})" if message.error and not options.raw else ""
        data = message.data
        if len(data) <= RAW_LINE_BYTES:
            return [f"{indent}{arrow} {type_name} {len(data)} B: {data.hex() or '(empty)'}{why}"]
        raw = [f"{indent}{arrow} {type_name} {len(data)} B:{why}"]
        for offset in range(0, len(data), RAW_LINE_BYTES):
            raw.append(f"{indent}    {offset:06x}  {data[offset : offset + RAW_LINE_BYTES].hex()}")
        return raw
    key = (id(message.value), arrow, indent, type_name)
    lines = memo.lines.get(key)
    if lines is None:
        flat = inline_text(message.value, _memo=memo.inline)
        head = f"{indent}{arrow} {type_name} "
        if len(head) + len(flat) <= options.width:
            lines = [head + flat]
        else:
            lines = [head.rstrip(), *block_lines(message.value, indent + "    ", options.width, _memo=memo.inline)]
        memo.lines[key] = lines
    return lines


def _call_lines(
    call: ViewCall, indent: str, options: ShowOptions, view: CassetteView, memo: _RenderMemo
) -> Iterator[str]:
    caller = call.caller or "-"
    if call.stream is not None:
        counts = _stream_counts(call.stream)
    else:
        counts = f"{len(call.requests)} req, {len(call.responses)} resp"
    when = _when(call.start_ns) if call.role != "tunnel" else f"stream {call.id}"
    ident = f"  #{call.id}" if call.role != "tunnel" else ""
    duration = _duration(call)
    yield (
        f"{indent}{when:>9}  {call.role:<10} {caller:<8} {call.short_method}  {counts}  {_status_text(call)}"
        + (f"  {duration}" if duration else "")
        + ident
    ).rstrip()
    body = indent + " " * 11
    if call.metadata:
        yield f"{body}metadata: {_metadata_text(call.metadata)}"
    if call.initial_metadata:
        yield f"{body}initial metadata: {_metadata_text(call.initial_metadata)}"
    if call.trailing_metadata:
        yield f"{body}trailing metadata: {_metadata_text(call.trailing_metadata)}"
    if call.end.kind is EndKind.STATUS and call.end.status != "OK" and call.end.details:
        yield f"{body}details: {call.end.details}"
    if call.elided is not None:
        yield f"{body}upload kept as length and digest only: {call.elided.text()}"
    stream = call.stream
    if stream is not None:
        yield from _tunnel_lines(call, stream, body, options, view, memo)
        return
    if not call.known:
        yield f"{body}(method not in the cassette's schema: messages shown as bytes)"
    for message in call.requests:
        yield from _message_lines(message, ">", body, options, memo)
    for message in call.responses:
        yield from _message_lines(message, "<", body, options, memo)


def _tunnel_lines(
    call: ViewCall, stream: RouterStream, body: str, options: ShowOptions, view: CassetteView, memo: _RenderMemo
) -> Iterator[str]:
    frames = f"frames out: {_frame_types(stream.types_out)}; in: {_frame_types(stream.types_in)}"
    peer = f", peer #{stream.peer}" if stream.peer is not None else ", other end not recorded"
    if stream.probe:
        yield f"{body}tunnel: readiness probe, no inner connection{peer}; {frames}"
    elif stream.holds_inner:
        inner = call.inner or []
        yield f"{body}tunnel: {stream.side.value} end{peer}; {len(inner)} inner call(s); {frames}"
    else:
        yield f"{body}tunnel: {stream.side.value} end{peer} (inner calls listed there); {frames}"
    if stream.error:
        yield f"{body}tunnel decoding stopped: {stream.error}"
    for inner_call in call.inner or []:
        yield from _call_lines(inner_call, body + "  ", options, view, memo)


def render_text(view: CassetteView, name: str, options: ShowOptions | None = None) -> Iterator[str]:
    """The timeline: a header, then one line per call in time order with its messages beneath it."""
    options = options or ShowOptions()
    summary = header_summary(view)
    header = view.header
    created = datetime.datetime.fromtimestamp(header.created_unix_ns / 1e9, tz=datetime.UTC)
    schema = summary["schema"]
    yield f"cassette {name}"
    yield (
        f"  format {header.format_version}, written by jsreplay {header.jsreplay_version or '?'}, "
        f"recorded {created:%Y-%m-%d %H:%M:%S} UTC"
    )
    if header.upstreams:
        yield f"  upstreams: {', '.join(header.upstreams)}"
    origin = "embedded" if schema["embedded"] else "none embedded, using jsreplay's own"
    yield (
        f"  schema: {origin}, {schema['services']} services, {schema['methods']} methods, "
        f"{schema['messages']} messages ({schema['digest']})"
    )
    redaction = "on" if header.redaction.enabled else "OFF: secrets may be stored"
    yield f"  redaction: {redaction}"
    calls = select_calls(view, options.methods)
    shown = f" ({len(calls)} shown)" if options.methods else ""
    yield f"  {len(view.calls)} calls{shown}, {view.events} events"
    if view.truncated_at is not None:
        yield f"  truncated: the file ends inside a record at byte {view.truncated_at}; later events are lost"
    yield ""
    memo = _RenderMemo()
    for call in calls:
        yield from _call_lines(call, "", options, view, memo)


# ---------------------------------------------------------------------------------------------------- JSON


@dataclass
class _JsonRender:
    """One JSON rendering's state: each decoded value's JSON form and unknown field paths, by the value's
    identity (see _RenderMemo), and what bytes become."""

    memo: dict[int, tuple[Any, list[str]]] = field(default_factory=dict)
    bytes_json: Callable[[bytes, int | None], Any] = bytes_to_json


def _metadata_json(metadata: Metadata | None, render: _JsonRender) -> list[list[Any]] | None:
    if metadata is None:
        return None
    return [[k, to_json(v, None, render.bytes_json)] for k, v in metadata]


def _message_json(message: ViewMessage, raw: bool, render: _JsonRender) -> dict[str, Any]:
    value = message.value
    json_value: Any = None
    unknown: list[str] = []
    if value is not None:
        known = render.memo.get(id(value))
        if known is None:
            known = render.memo[id(value)] = (to_json(value, None, render.bytes_json), message.unknown_paths)
        json_value, unknown = known
    return {
        "type": message.type_name,
        "size": len(message.data),
        "t_ns": message.t_ns,
        "value": None if raw else json_value,
        "raw": message.data.hex() if raw or (value is None and message.error is not None) else None,
        "error": message.error,
        "unknown_fields": unknown,
    }


def _stream_json(stream: RouterStream) -> dict[str, Any]:
    return {
        "side": stream.side.value,
        "peer": stream.peer,
        "holds_inner": stream.holds_inner,
        "probe": stream.probe,
        "frames_out": stream.frames_out,
        "frames_in": stream.frames_in,
        "bytes_out": stream.bytes_out,
        "bytes_in": stream.bytes_in,
        "frame_types_out": dict(stream.types_out),
        "frame_types_in": dict(stream.types_in),
        "error": stream.error,
    }


def call_to_json(call: ViewCall, raw: bool = False, _render: _JsonRender | None = None) -> dict[str, Any]:
    render = _render or _JsonRender()
    router = call.stream is not None
    out = {
        "id": call.id,
        "method": call.method,
        "short_method": call.short_method,
        "role": call.role,
        "caller": call.caller,
        "known_method": call.known,
        "start_ns": call.start_ns,
        "end_ns": call.end.t_ns,
        "duration_ns": call.duration_ns,
        "timeout_ns": call.timeout_ns,
        "metadata": _metadata_json(call.metadata, render),
        "initial_metadata": _metadata_json(call.initial_metadata, render),
        "trailing_metadata": _metadata_json(call.trailing_metadata, render),
        # A router call's messages are frames: summarised under "stream", bytes with --raw.
        "requests": [_message_json(m, raw or router, render) for m in call.requests] if not router or raw else [],
        "responses": [_message_json(m, raw or router, render) for m in call.responses] if not router or raw else [],
        "status": call.end.status,
        "details": call.end.details,
        "end": {"kind": call.end.kind.value, "by": call.end.by},
        "stream": _stream_json(call.stream) if call.stream is not None else None,
        "tunnel": [call_to_json(c, raw, render) for c in call.inner] if call.inner is not None else None,
    }
    if call.elided is not None:  # only then: the key is new in format 2
        out["elided"] = {"length": call.elided.length, "sha256": call.elided.sha256}
    return out


def view_to_json(view: CassetteView, name: str, options: ShowOptions | None = None) -> dict[str, Any]:
    """One JSON document: `format`, `header` and `calls` (see docs/inspect.md, "show --format json")."""
    options = options or ShowOptions()
    header = {"cassette": name, **header_summary(view)}
    render = _JsonRender()
    return {
        "format": JSON_FORMAT,
        "header": header,
        "calls": [call_to_json(c, options.raw, render) for c in select_calls(view, options.methods)],
    }


def dump_json(value: Any) -> str:
    """Compact JSON as jsreplay prints it."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def view_json_text(view: CassetteView, name: str, options: ShowOptions | None = None) -> Iterator[str]:
    """`dump_json(view_to_json(...))` in pieces, a call at a time: the same text, never all in memory at once
    (a big cassette's document runs to hundreds of megabytes)."""
    options = options or ShowOptions()
    head = dump_json({"format": JSON_FORMAT, "header": {"cassette": name, **header_summary(view)}})
    yield head[:-1] + ',"calls":['
    splicer = _BytesSplicer()
    render = _JsonRender(bytes_json=splicer.token)
    for i, call in enumerate(select_calls(view, options.methods)):
        text = splicer.splice(dump_json(call_to_json(call, options.raw, render)))
        yield "," + text if i else text
    yield "]}"


class _BytesSplicer:
    """Bytes values enter the JSON text as base64 after json.dumps, in place of tokens.

    The encoder scans every character of every string for escapes; base64 needs none, and in a cassette that
    carries byte streams it is most of the document (a third of the work of show --format json on the bench).
    A token is `{"$bytes": TOKEN_BASE + n}`: no integer in a cassette comes near (protobuf's stop at 2**64),
    and the key's quotes cannot occur inside a string, so `"$bytes":` and 31 digits from 1 are only a token.
    """

    TOKEN_BASE = 10**30
    _MARKER = '"$bytes":'

    def __init__(self) -> None:
        self._data: list[bytes] = []

    def token(self, data: bytes, max_bytes: int | None) -> dict[str, Any]:
        if max_bytes is not None:
            return bytes_to_json(data, max_bytes)
        self._data.append(data)
        return {"$bytes": self.TOKEN_BASE + len(self._data) - 1}

    def splice(self, text: str) -> str:
        """`text` with each token replaced by its bytes' base64 string, as bytes_to_json writes it."""
        parts = text.split(self._MARKER)
        if len(parts) == 1:
            return text
        out = [parts[0]]
        for part in parts[1:]:
            digits = part[:31]
            if part[:1] == "1" and digits.isascii() and digits.isdigit() and not part[31:32].isdigit():
                data = self._data[int(digits) - self.TOKEN_BASE]
                out.append(f'{self._MARKER}"{base64.b64encode(data).decode()}"{part[31:]}')
            else:  # a map key "$bytes" with a value of its own
                out.append(self._MARKER + part)
        return "".join(out)
