"""`jsreplay textconv`: a cassette as deterministic text for `git diff` (git's textconv).

The text is what `jsreplay diff` compares, written out: the canonical units (`canon`) with volatile values
masked, grouped by role and method in a fixed order (methods sorted by name, not by the order in which they
happened to start, since calls of different methods race), runs of identical calls printed once, and no
timings, call ids or frame counts. Two recordings of the same scenario give the same text, so `git diff` of
two versions of a cassette shows what changed in meaning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

from jsreplay.inspect.canon import Unit, UnitGroup, build_groups
from jsreplay.inspect.values import block_lines
from jsreplay.inspect.view import CassetteView
from jsreplay.protocol.wire import short_method

_ROLE_ORDER = {"controller": 0, "router": 1, "tunnel": 2}


def _sorted_groups(groups: list[UnitGroup]) -> list[UnitGroup]:
    return sorted(groups, key=lambda g: (_ROLE_ORDER.get(g.role, 9), g.method))


def _metadata_lines(body: dict[str, Any], indent: str) -> Iterator[str]:
    for section in ("metadata", "initial_metadata", "trailing_metadata"):
        values = body.get(section) or {}
        for key in sorted(values):
            shown = ", ".join(v if isinstance(v, str) else "0x" + v.hex() for v in values[key])
            yield f"{indent}{section} {key}: {shown}"


def _unit_lines(unit: Unit, indent: str) -> Iterator[str]:
    body = unit.body
    if unit.first.inner is not None:
        yield f"{indent}- tunnel"
        for group in _sorted_groups(_regroup(unit.inner)):
            yield from _group_lines(group, indent + "    ")
        return
    outcome = body.get("outcome", "")
    details = f" ({body['details']})" if body.get("details") else ""
    yield f"{indent}- {outcome}{details}"
    inner = indent + "    "
    yield from _metadata_lines(body, inner)
    for arrow, section in ((">", "requests"), ("<", "responses")):
        for value in body.get(section, []):
            lines = block_lines(value, inner + "  ", width=120, limit=16)
            yield f"{inner}{arrow} {lines[0].lstrip()}" if len(lines) == 1 else f"{inner}{arrow}"
            if len(lines) > 1:
                yield from lines


def _regroup(units: list[Unit]) -> list[UnitGroup]:
    groups: dict[tuple[str, str], UnitGroup] = {}
    for unit in units:
        key = (unit.role, unit.method)
        groups.setdefault(key, UnitGroup(role=unit.role, method=unit.method, units=[])).units.append(unit)
    return list(groups.values())


def _group_lines(group: UnitGroup, indent: str) -> Iterator[str]:
    yield f"{indent}{group.role} {short_method(group.method)}"
    for unit in group.units:
        yield from _unit_lines(unit, indent + "  ")


def render_textconv(view: CassetteView, *, defaults: bool = True, ignores: tuple[str, ...] = ()) -> Iterator[str]:
    """The cassette's meaning as stable lines (see the module docstring)."""
    schema = hashlib.sha256(view.registry.descriptor_set).hexdigest()[:16]
    yield "# jsreplay textconv: volatile values masked, runs of identical calls shown once"
    yield f"schema sha256:{schema}"
    if view.truncated_at is not None:
        yield "truncated: the recording was cut off"
    for group in _sorted_groups(build_groups(view, defaults=defaults, ignores=ignores)):
        yield ""
        yield from _group_lines(group, "")
