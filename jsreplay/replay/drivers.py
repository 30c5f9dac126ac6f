"""Driver names inside a replayed tunnel: which driver a DriverCall's uuid is, from the recorded GetReport."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import DRIVER_NAME_LABEL, GET_REPORT, GET_REPORT_RESPONSE
from jsreplay.replay.script import Script


def driver_paths(reports: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """uuid -> the driver's dotted path of `jumpstarter.dev/name` labels below the root ("power", "nested.child").

    The root (no parent) has the empty path; a driver without a name label is named by its uuid."""
    by_uuid = {str(r.get("uuid", "")): r for r in reports}
    paths: dict[str, str] = {}
    for uuid in by_uuid:
        names: list[str] = []
        seen: set[str] = set()
        current: str | None = uuid
        while current and current in by_uuid and current not in seen:
            seen.add(current)
            report = by_uuid[current]
            parent = report.get("parent_uuid") or None
            if parent is None:
                break  # the root: not part of the path
            labels = report.get("labels") or {}
            name = labels.get(DRIVER_NAME_LABEL) if isinstance(labels, Mapping) else None
            names.append(str(name or current))
            current = str(parent)
        paths[uuid] = ".".join(reversed(names))
    return paths


def tunnel_driver_paths(scripts: Iterable[Script], registry: Registry) -> dict[str, str]:
    """The driver paths from a tunnel's recorded GetReport (empty if it has none or it does not decode)."""
    for script in scripts:
        if script.method != GET_REPORT or not script.responses:
            continue
        try:
            report = registry.decode(GET_REPORT_RESPONSE, script.responses[0].data)
        except ProtocolError:
            return {}
        return driver_paths(report.get("reports") or ())
    return {}


def driver_call(
    registry: Registry, method: str, request: bytes | None, paths: Mapping[str, str]
) -> tuple[str, str] | None:
    """(driver path, driver method) of a DriverCall or StreamingDriverCall request; None for other calls."""
    if request is None or not method.endswith(("/DriverCall", "/StreamingDriverCall")):
        return None
    try:
        decoded = registry.decode_request(method, request)
    except ProtocolError:
        return None
    if not decoded:
        return None
    uuid = str(decoded.get("uuid", ""))
    return paths.get(uuid, uuid), str(decoded.get("method", ""))


def driver_call_name(call: tuple[str, str] | None) -> str | None:
    """ "power.on" for a driver call; None for other calls."""
    if call is None:
        return None
    path, name = call
    return f"{path}.{name}" if path else name
