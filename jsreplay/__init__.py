"""jsreplay: record, replay, inspect and diff Jumpstarter gRPC sessions."""

from __future__ import annotations

import sys
import types
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("jsreplay")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from jsreplay.record.proxy import record
    from jsreplay.replay.server import replay

__all__ = ["__version__", "record", "replay"]

# `jsreplay.record(...)` and `jsreplay.replay(...)` are functions, loaded on first use so that `import jsreplay`
# (and `jsreplay show`) does not load gRPC servers. Importing the subpackages of the same names would bind the
# modules here; the package class below keeps the functions in place instead (the subpackages stay importable).
_FUNCTIONS = {"record": ("jsreplay.record.proxy", "record"), "replay": ("jsreplay.replay.server", "replay")}


class _Package(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        found = _FUNCTIONS.get(name)
        if found is None:
            raise AttributeError(f"module 'jsreplay' has no attribute {name!r}")
        module = __import__(found[0], fromlist=[found[1]])
        function = getattr(module, found[1])
        types.ModuleType.__setattr__(self, name, function)
        return function

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTIONS and isinstance(value, types.ModuleType):
            return  # the import system binding a subpackage: keep `jsreplay.record` the function
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
