"""Which driver is which: a session's device tree from its driver reports (Register, GetReport).

An exporter makes new driver UUIDs for every session, so a driver is identified across sessions by its place
in the tree: the path of `jumpstarter.dev/name` labels from the root down, an unnamed driver by `#i`, its index
among its siblings in report order (the exporter reports a tree depth-first in a stable order). Verify maps
recorded UUIDs onto live ones by it, replay names DriverCalls by it (faults, coverage), and diff names a
DriverCall's target by the driver's label.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jsreplay.protocol.wire import DRIVER_NAME_LABEL


def driver_label(report: Mapping[str, Any]) -> str | None:
    """The driver's `jumpstarter.dev/name` label, if it has one."""
    labels = report.get("labels") or {}
    name = labels.get(DRIVER_NAME_LABEL) if isinstance(labels, Mapping) else None
    return name if isinstance(name, str) and name else None


def driver_tree(reports: Iterable[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Decoded `DriverInstanceReport`s -> {uuid: its path in the device tree, the root's own segment first}."""
    by_uuid: dict[str, Mapping[str, Any]] = {}
    for report in reports:
        uuid = report.get("uuid")
        if isinstance(uuid, str) and uuid and uuid not in by_uuid:
            by_uuid[uuid] = report
    segment: dict[str, str] = {}
    siblings: dict[str, int] = {}
    for uuid, report in by_uuid.items():
        parent = str(report.get("parent_uuid") or "")
        index = siblings.get(parent, 0)
        siblings[parent] = index + 1
        segment[uuid] = driver_label(report) or f"#{index}"
    tree: dict[str, tuple[str, ...]] = {}
    for uuid in by_uuid:
        path: list[str] = []
        seen: set[str] = set()
        current: str | None = uuid
        while current and current in by_uuid and current not in seen:
            seen.add(current)
            path.append(segment[current])
            current = str(by_uuid[current].get("parent_uuid") or "") or None
        tree[uuid] = tuple(reversed(path))
    return tree


def tree_paths(reports: Iterable[Mapping[str, Any]]) -> dict[tuple[str, ...], str]:
    """{path in the device tree: uuid}: `driver_tree` the other way round."""
    return {path: uuid for uuid, path in driver_tree(reports).items()}


def driver_paths(reports: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """uuid -> the driver's dotted path below the root ("power", "nested.child"); the root's is ""."""
    return {uuid: ".".join(path[1:]) for uuid, path in driver_tree(reports).items()}


def driver_names(reports: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """UUID (lower case) -> the driver's label; the root driver, which has none, is "root"."""
    names: dict[str, str] = {}
    for report in reports:
        uuid = report.get("uuid")
        if not isinstance(uuid, str) or not uuid:
            continue
        name = driver_label(report)
        if name is not None:
            names[uuid.lower()] = name
        elif not report.get("parent_uuid"):
            names[uuid.lower()] = "root"
    return names
