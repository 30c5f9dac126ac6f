"""Live status and progress on a terminal; silent when stderr is a pipe or a CI log."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: float) -> str:
    for unit in _UNITS:
        if abs(n) < 1024 or unit == _UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class StatusLine:
    """One line on stderr, rewritten in place, at most every `interval` seconds."""

    def __init__(self, stream: TextIO | None = None, interval: float = 0.2) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty()
        self._interval = interval
        self._last = 0.0
        self._shown = False

    @property
    def enabled(self) -> bool:
        return self._enabled

    def show(self, text: str, *, force: bool = False) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        width = shutil.get_terminal_size((80, 20)).columns
        self._stream.write("\r\x1b[K" + text[: width - 1])
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False
