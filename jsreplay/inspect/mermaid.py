"""`jsreplay show --format mermaid`: a Mermaid sequence diagram of client, exporter, controller and router.

Who made a controller call comes from its `jumpstarter-kind` request metadata ("Client" or "Exporter"); which
peer opened a router stream comes from the tunnel decoder (the end that sent the HTTP/2 preface is the
client). Arrows are in time order: the request when the call started, stream messages when they arrived,
the outcome when the call ended. A tunnel's inner calls are drawn between Client and Exporter right after
the client's end of the tunnel opened (the decoder orders them, but they carry no timestamps of their own).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from jsreplay.inspect.values import human_bytes
from jsreplay.inspect.view import CassetteView, ViewCall

PARTICIPANTS = ("Client", "Exporter", "Controller", "Router")
UNKNOWN_PEER = "Peer"  # a caller that said neither Client nor Exporter
#: Streams with more messages than this get one summary arrow instead of one arrow per message.
MAX_STREAM_ARROWS = 6

# Mermaid message text ends at a newline, and "#" and ";" start and end entity codes: keep a conservative
# alphabet and write those two as entities.
_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:()/=+\-*'\[\]{}@!?#;]")


def text(value: str) -> str:
    """Message text safe inside a Mermaid sequence diagram."""
    cleaned = _UNSAFE.sub(" ", value).strip() or "-"
    return cleaned.replace("#", "\x00").replace(";", "#59;").replace("\x00", "#35;")


@dataclass(frozen=True)
class _Line:
    t: int
    order: int
    line: str


def _caller(call: ViewCall) -> str:
    return call.caller if call.caller in ("Client", "Exporter") else UNKNOWN_PEER


def _target(call: ViewCall) -> str:
    return {"controller": "Controller", "router": "Router", "tunnel": "Exporter"}.get(call.role, "Controller")


def _name(call: ViewCall) -> str:
    return call.short_method.split("/", 1)[-1]


def _call_lines(call: ViewCall, start: int, order: list[int], view: CassetteView) -> Iterator[_Line]:
    def line(t: int, content: str) -> _Line:
        order[0] += 1
        return _Line(t, order[0], "    " + content)

    src, dst = _caller(call), _target(call)
    if call.role == "tunnel":
        src, dst = "Client", "Exporter"
    t0 = call.start_ns if call.start_ns is not None else start
    end_t = call.end.t_ns if call.end.t_ns is not None else t0
    outcome = text(call.end.label())
    stream = call.stream
    if stream is not None:
        if stream.probe:
            note = text(f"RouterService/Stream #{call.id}: readiness probe, no inner calls")
            yield line(t0, f"Note over {dst}: {note}")
            return
        frames = f"{stream.frames_out} frames out, {stream.frames_in} in, {human_bytes(stream.bytes_out)} sent"
        yield line(t0, f"{src}->>{dst}: {text(f'Stream #{call.id} opens ({stream.side.value} end)')}")
        for inner in call.inner or []:
            yield from _call_lines(inner, t0, order, view)
        yield line(end_t, f"{dst}-->>{src}: {text(f'Stream #{call.id} ends: {call.end.label()}, {frames}')}")
        return
    yield line(t0, f"{src}->>{dst}: {text(_name(call) + (f' #{call.id}' if call.role != 'tunnel' else ''))}")
    responses = call.responses
    info = view.registry.method(call.method)
    streaming = info.server_streaming if info is not None else len(responses) > 1
    failed = call.end.status not in ("OK", None)
    arrow = "--x" if failed else "-->>"
    if not streaming:
        yield line(end_t, f"{dst}{arrow}{src}: {outcome}")
        return
    name = _name(call)
    if len(responses) <= MAX_STREAM_ARROWS:
        for i, message in enumerate(responses):
            t = message.t_ns if message.t_ns is not None else t0
            yield line(t, f"{dst}-->>{src}: {text(f'{name} message {i + 1}')}")
    else:
        yield line(t0, f"{dst}-->>{src}: {text(f'{name}: {len(responses)} messages')}")
    if call.end.kind.value == "cancel" and call.end.by == "client":
        yield line(end_t, f"{src}-x{dst}: {text(f'{name} cancelled by the caller')}")
    else:
        yield line(end_t, f"{dst}{arrow}{src}: {text(f'{name} ends: {call.end.label()}')}")


def render_mermaid(calls: list[ViewCall], view: CassetteView) -> Iterator[str]:
    """The diagram's lines, starting with `sequenceDiagram`."""
    lines: list[_Line] = []
    order = [0]
    for call in calls:
        lines.extend(_call_lines(call, call.start_ns or 0, order, view))
    used = set(PARTICIPANTS)
    if any(UNKNOWN_PEER in entry.line.split(":", 1)[0] for entry in lines):
        used.add(UNKNOWN_PEER)
    yield "sequenceDiagram"
    for participant in (*PARTICIPANTS, UNKNOWN_PEER):
        if participant in used:
            yield f"    participant {participant}"
    # Inner calls keep their place after their tunnel's opening arrow: sort by time, then emission order.
    for entry in sorted(lines, key=lambda e: (e.t, e.order)):
        yield entry.line
