"""`jsreplay show --format html`: one self-contained page (inline CSS and JS, no network) to look at a session.

The page is a timeline: one row per call with when it started, who called whom, the method, how it ended and a
bar for its span; a row expands to its metadata and decoded messages; a router tunnel expands to its inner
calls, each expandable in turn; a byte stream (a driver's RouterService/Stream inside a tunnel) shows its
bytes joined, as a hex and text dump of their head. With a replay report (`--report`), misses, errors and
causal timeouts are listed on top and the calls they name are marked, as are recordings replay left unused.

Data comes from the same decoded view and JSON as `show --format json` (`call_to_json`), with long byte
strings summarised; it is embedded as JSON (with `<` escaped, so no cassette text can close the script
element) and the page builds its DOM with `textContent` only: method names, metadata and details from a
cassette are untrusted. Rows are rendered in batches as they scroll into view, and a call's details are
built when it is expanded, so a 10,000-call cassette paints as fast as a small one.

The URL fragment opens calls: `#expand=12,12.3` expands call 12 and inner stream 3 of it; `#expand=all`
expands every call and inner call of the first batch (what the browser test and the screenshot use).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterator
from dataclasses import replace
from importlib import resources
from typing import Any

from jsreplay.inspect.show import _JsonRender, call_to_json, dump_json, header_summary
from jsreplay.inspect.values import bytes_to_json
from jsreplay.inspect.view import CassetteView, ViewCall
from jsreplay.protocol.wire import ROUTER_STREAM

#: Bytes kept of a byte string inside a decoded message, and of each direction of a byte stream.
MESSAGE_BYTES = 96
STREAM_HEAD = 1024


def _bytes_json(data: bytes, max_bytes: int | None) -> Any:
    return bytes_to_json(data, MESSAGE_BYTES)


def _byte_stream(call: ViewCall) -> dict[str, Any] | None:
    """A byte stream's data, joined per direction: total length and the head, for the hex/text view."""
    if call.method != ROUTER_STREAM or call.role != "tunnel":
        return None
    out: dict[str, Any] = {}
    for direction, messages in (("out", call.requests), ("in", call.responses)):
        total = 0
        head = bytearray()
        for message in messages:
            payload = message.value.get("payload") if isinstance(message.value, dict) else None
            if isinstance(payload, bytes):
                total += len(payload)
                if len(head) < STREAM_HEAD:
                    head += payload[: STREAM_HEAD - len(head)]
        out[direction] = {"frames": len(messages), "bytes": total, "head": base64.b64encode(bytes(head)).decode()}
    return out


def _call_json(call: ViewCall, render: _JsonRender) -> dict[str, Any]:
    byte_stream = _byte_stream(call)
    if byte_stream is not None:  # the frames themselves are summarised by the byte view: not laid out at all
        doc = call_to_json(replace(call, requests=[], responses=[]), False, render)
    elif call.inner is not None:  # the inner calls are laid out here (with their byte streams), not twice
        doc = call_to_json(replace(call, inner=None), False, render)
        doc["tunnel"] = [_call_json(inner, render) for inner in call.inner]
    else:
        doc = call_to_json(call, False, render)
    doc["byte_stream"] = byte_stream
    return doc


def _summary(call: ViewCall) -> list[Any]:
    """A timeline row, from the view (the row list precedes the details in the page)."""
    return [
        call.id,
        call.start_ns,
        call.duration_ns,
        call.role,
        call.caller,
        call.short_method,
        call.end.status,
        call.end.label(brief=True),
        len(call.inner) if call.inner is not None else None,
    ]


def _script_json(value: Any) -> str:
    """JSON for inside a <script> element: `<`, `>` and `&` as escapes, so `</script>` cannot occur."""
    return dump_json(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("jsreplay.inspect").joinpath("html_assets", name).read_text()


def render_html(view: CassetteView, name: str, report: dict[str, Any] | None = None) -> Iterator[str]:
    """The page, in pieces (details are written a call at a time)."""
    render = _JsonRender(bytes_json=_bytes_json)
    header = {"cassette": name, **header_summary(view)}
    header["redactions"] = view.header.extra.get("redactions")
    header["edits"] = view.header.extra.get("edits")
    title = html.escape(f"jsreplay: {name}")
    yield (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{title}</title><style>{_asset('page.css')}</style></head><body>"
        '<div id="app"><p id="loading">Loading…</p></div>\n'
    )
    yield '<script type="application/json" id="jsreplay-header">' + _script_json(header) + "</script>\n"
    yield '<script type="application/json" id="jsreplay-report">' + _script_json(report) + "</script>\n"
    yield (
        '<script type="application/json" id="jsreplay-rows">'
        + _script_json([_summary(c) for c in view.calls])
        + "</script>\n"
    )
    # One call's document at a time: laid out, encoded, dropped (never all held at once).
    yield '<script type="application/json" id="jsreplay-details">['
    for i, call in enumerate(view.calls):
        yield ("," if i else "") + _script_json(_call_json(call, render))
    yield "]</script>\n"
    yield f"<script>{_asset('page.js')}</script></body></html>\n"


def load_report(text: str) -> dict[str, Any]:
    """A `jsreplay replay --report` file; ValueError when it is not one."""
    try:
        report = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(report, dict) or "missed" not in report or "cassettes" not in report:
        raise ValueError("not a jsreplay replay report (no 'cassettes' and 'missed')")
    return report
