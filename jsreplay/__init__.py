"""jsreplay: record, replay, inspect and diff Jumpstarter gRPC sessions."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jsreplay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# `jsreplay.record(...)` and `jsreplay.replay(...)` are functions, not the subpackages of the same names:
# importing a subpackage binds its module here first, and the assignments below replace those bindings.
from jsreplay.record.proxy import record as _record
from jsreplay.replay.server import replay as _replay

record = _record
replay = _replay

__all__ = ["__version__", "record", "replay"]
