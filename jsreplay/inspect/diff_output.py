"""diff's renderers: readable text lines (coloured by the caller) and the documented JSON document.

The engine (`inspect/diff.py`) compares two views and returns a `DiffReport`; these only lay it out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsreplay.inspect.diff import JSON_FORMAT, JSON_MAX_BYTES, Difference, DiffKind, DiffReport, Ignored
from jsreplay.inspect.values import inline_text, printable, to_json


def report_to_json(report: DiffReport, old_name: str = "", new_name: str = "") -> dict[str, Any]:
    """The documented JSON document (docs/inspect.md, "diff --format json"; jsreplay/schemas/diff.schema.json)."""
    document = {
        "format": JSON_FORMAT,
        "old": {"cassette": old_name, "calls": report.old_calls},
        "new": {"cassette": new_name, "calls": report.new_calls},
        "equivalent": report.equivalent,
        "options": {
            "default_ignores": report.options.defaults,
            "ignore": list(report.options.ignores),
            "timing_threshold": report.options.timing_threshold,
        },
        "summary": {"differences": len(report.differences), "by_kind": report.counts()},
        "differences": [
            {
                "kind": d.kind.value,
                "path": d.path,
                "old": to_json(d.old, JSON_MAX_BYTES),
                "new": to_json(d.new, JSON_MAX_BYTES),
                "old_call": d.old_call,
                "new_call": d.new_call,
                "detail": d.detail,
            }
            for d in report.differences
        ],
    }
    if report.options.show_ignored:
        document["ignored"] = [
            {
                "rule": g.kind.value,
                "path": g.path,
                "old": to_json(g.old, JSON_MAX_BYTES),
                "new": to_json(g.new, JSON_MAX_BYTES),
                "why": g.why,
                "old_call": g.old_call,
                "new_call": g.new_call,
            }
            for g in report.ignored
        ]
    return document


_MARKS = {
    DiffKind.CALL_ADDED: "+",
    DiffKind.MESSAGE_ADDED: "+",
    DiffKind.FIELD_ADDED: "+",
    DiffKind.UNKNOWN_FIELD_ADDED: "+",
    DiffKind.METADATA_KEY_ADDED: "+",
    DiffKind.SCHEMA_ADDED: "+",
    DiffKind.CALL_REMOVED: "-",
    DiffKind.MESSAGE_REMOVED: "-",
    DiffKind.FIELD_REMOVED: "-",
    DiffKind.UNKNOWN_FIELD_REMOVED: "-",
    DiffKind.METADATA_KEY_REMOVED: "-",
    DiffKind.SCHEMA_REMOVED: "-",
}
_COLORS = {"+": "green", "-": "red", "~": "yellow"}
TEXT_VALUE_WIDTH = 160


def _short(value: Any) -> str:
    text = inline_text(value)
    return text if len(text) <= TEXT_VALUE_WIDTH else text[: TEXT_VALUE_WIDTH - 1] + "…"


def _call_ref(d: Difference | Ignored) -> str:
    if d.old_call is not None and d.new_call is not None:
        return f"#{d.old_call} -> #{d.new_call}"
    if d.old_call is not None:
        return f"old #{d.old_call}"
    if d.new_call is not None:
        return f"new #{d.new_call}"
    return ""


def render_text(report: DiffReport, old_name: str, new_name: str, *, style: Any = None) -> Iterator[str]:
    """Readable lines; `style(text, fg=...)` colours them (click.style), or None for plain text."""

    def paint(text: str, mark: str) -> str:
        text = printable(text)  # before the colour's own escape sequences
        return style(text, fg=_COLORS[mark]) if style is not None else text

    yield printable(f"--- {old_name} ({report.old_calls} calls)")
    yield printable(f"+++ {new_name} ({report.new_calls} calls)")
    if report.options.show_ignored:
        yield from _ignored_lines(report)
    if report.equivalent:
        yield "equivalent: no differences"
        return
    for d in report.differences:
        mark = _MARKS.get(d.kind, "~")
        ref = _call_ref(d)
        head = f"{mark} {d.path}" + (f"  ({ref})" if ref else "") + f"  [{d.kind.value}]"
        if d.kind in (DiffKind.SCHEMA_ADDED, DiffKind.SCHEMA_REMOVED, DiffKind.SCHEMA_CHANGED):
            head = f"{mark} {d.path}  [{d.kind.value}]"
        yield paint(head, mark)
        if mark == "+":
            yield paint(f"      {_short(d.new)}", mark)
        elif mark == "-":
            yield paint(f"      {_short(d.old)}", mark)
        else:
            detail = f"  {d.detail}" if d.detail else ""
            yield paint(f"      {_short(d.old)} -> {_short(d.new)}{detail}", mark)
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(report.counts().items()))
    yield f"{len(report.differences)} difference(s): {counts}"


def _ignored_lines(report: DiffReport) -> Iterator[str]:
    """What was treated as the same, one entry per line pair (`=` marks them), then a tally by rule."""
    for g in report.ignored:
        ref = _call_ref(g)
        yield printable(f"= {g.path}" + (f"  ({ref})" if ref else "") + f"  [ignored: {g.kind.value}]  {g.why}")
        yield printable(f"      {_short(g.old)} -> {_short(g.new)}")
    counts: dict[str, int] = {}
    for g in report.ignored:
        counts[g.kind.value] = counts.get(g.kind.value, 0) + 1
    tally = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    yield f"{len(report.ignored)} ignored" + (f": {tally}" if tally else "")
