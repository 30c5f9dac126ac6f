"""Optional RPCs: the methods a peer calls but copes without, when the other side answers UNIMPLEMENTED.

The 0.9.0 exporter falls back when the controller does not implement `ReleaseLease` (to ReportStatus with
release_lease) and goes on when `ReportStatus` is UNIMPLEMENTED; the client goes on when an (older) exporter
does not implement `GetStatus`, `EndSession` or `LogStream`. So a session recorded against a peer without one
of them, played against a peer with it (or the reverse), differs there without meaning anything else: verify
notes it rather than calling it a difference, and replay may answer UNIMPLEMENTED for it when unrecorded.
"""

from __future__ import annotations

from jsreplay.protocol.wire import CONTROLLER, EXPORTER, RELEASE_LEASE, REPORT_STATUS, short_method

UNIMPLEMENTED = 12  # the gRPC status code

#: Controller methods the exporter tolerates UNIMPLEMENTED for.
OPTIONAL_CONTROLLER_METHODS = frozenset((RELEASE_LEASE, REPORT_STATUS, CONTROLLER + "GetServiceEndpoints"))
#: Exporter methods (inside the tunnel) the client tolerates UNIMPLEMENTED for.
OPTIONAL_EXPORTER_METHODS = frozenset((EXPORTER + "GetStatus", EXPORTER + "EndSession", EXPORTER + "LogStream"))
OPTIONAL_METHODS = OPTIONAL_CONTROLLER_METHODS | OPTIONAL_EXPORTER_METHODS


def is_optional(method: str) -> bool:
    """Whether a peer calling `method` copes with an UNIMPLEMENTED answer."""
    return method in OPTIONAL_METHODS


def unimplemented_note(method: str) -> str:
    """What replay and verify say when they answer an unrecorded optional RPC with UNIMPLEMENTED."""
    return f"{short_method(method)} (optional, not in the cassette) answered UNIMPLEMENTED, as an older peer does"
