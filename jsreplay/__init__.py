"""jsreplay: record, replay, inspect and diff Jumpstarter gRPC sessions."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("jsreplay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

# `jsreplay.record(...)` is the function, not the subpackage of the same name: importing the subpackage
# binds its module here first, and the assignment below replaces that binding with the function.
from jsreplay.record.proxy import record as _record

record = _record

__all__ = ["__version__", "record"]
