"""Driver names inside a replayed tunnel: which driver a DriverCall's uuid is, from the recorded GetReport."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.protocol.wire import GET_REPORT, GET_REPORT_RESPONSE
from jsreplay.replay.script import Script
from jsreplay.session.drivers import driver_paths


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


_DRIVER_CALLS = ("/DriverCall", "/StreamingDriverCall")


def driver_call(
    registry: Registry, method: str, request: bytes | None, paths: Mapping[str, str]
) -> tuple[str, str] | None:
    """(driver path, driver method) of a DriverCall or StreamingDriverCall request; None for other calls."""
    if request is None or not method.endswith(_DRIVER_CALLS):
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


def recorded_driver_call(registry: Registry, script: Script, paths: Mapping[str, str]) -> tuple[str, str] | None:
    """`driver_call` of a recorded inner call; its first request is looked at only if it is a driver call (a byte
    stream's may be in the cassette only)."""
    if not script.method.endswith(_DRIVER_CALLS) or not script.requests:
        return None
    return driver_call(registry, script.method, script.requests[0], paths)
