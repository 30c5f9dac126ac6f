"""jsreplay: record, replay, inspect and diff Jumpstarter gRPC sessions.

`jsreplay.recording(...)`, `jsreplay.replaying(...)` and `jsreplay.verifying(...)` run a recording proxy, a replay
server and a verify server for the duration of an `async with` block; they are loaded on first use, so that
`import jsreplay` (and `jsreplay show`) loads no gRPC server. The packages `jsreplay.record`, `jsreplay.replay` and
`jsreplay.verify` hold the rest of each.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("jsreplay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from jsreplay.record.proxy import recording
    from jsreplay.replay.server import replaying
    from jsreplay.verify.server import verifying

__all__ = ["__version__", "recording", "replaying", "verifying"]

_LAZY = {
    "recording": "jsreplay.record.proxy",
    "replaying": "jsreplay.replay.server",
    "verifying": "jsreplay.verify.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jsreplay' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
