"""Single records of a loaded cassette, read back by position: replay keeps where a response is, not its bytes.

The library notes each recorded response's record as (offset, length) while it scans the cassette; when the
response is sent, `RecordFile.event_at` reads that record with one `pread` and decodes it as the cassette reader
does (the format version's migrations, then the event). `read_events_at` would re-read the header on every call
(about 2 ms), which a unary call cannot afford.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import Any

import msgpack

from jsreplay.cassette import migrations
from jsreplay.cassette.errors import CassetteError, CorruptCassetteError, NotACassetteError
from jsreplay.cassette.format import MAGIC, MAX_RECORD_BYTES, record_to_event
from jsreplay.cassette.model import AnyEvent


class RecordFile:
    """One cassette, opened on the first read and kept open until `close()` (or until it is collected)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._chain: list[migrations.Migration] = []
        self._closer: weakref.finalize | None = None

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as err:
            raise CassetteError(self.path, f"cannot open: {err.strerror}") from None
        try:
            self._chain = self._migrations(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._closer = weakref.finalize(self, os.close, fd)
        return fd

    def _migrations(self, fd: int) -> list[migrations.Migration]:
        """The upgrades this file's records need, from the version its header states (the loader checked the rest)."""
        with open(fd, "rb", closefd=False) as file:
            if file.read(len(MAGIC)) != MAGIC:
                raise NotACassetteError(self.path, "not a jsreplay cassette (bad magic)", offset=0)
            unpacker = msgpack.Unpacker(file, raw=False, strict_map_key=True, max_buffer_size=MAX_RECORD_BYTES)
            try:
                header: Any = unpacker.unpack()
            except Exception as err:  # OutOfData, or malformed msgpack
                raise CorruptCassetteError(self.path, f"cannot read the header: {err!r}", offset=len(MAGIC)) from None
        version = header.get("format_version") if isinstance(header, dict) else None
        try:
            if type(version) is not int or not 1 <= version <= migrations.FORMAT_VERSION:
                raise KeyError(version)
            return migrations.chain(version)  # KeyError for a version with no migration to the current one
        except KeyError:
            raise CorruptCassetteError(
                self.path,
                f"the header changed since the cassette was loaded (format_version now {version!r})",
                offset=len(MAGIC),
            ) from None

    def event_at(self, offset: int, length: int) -> AnyEvent:
        """The event whose record is the `length` bytes at `offset` (as `CassetteReader.iter_with_offsets` gave)."""
        fd = self._fd if self._fd is not None else self._open()
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise CorruptCassetteError(
                self.path, "the record is cut off (the file changed since it was loaded)", offset=offset
            )
        try:
            record = msgpack.unpackb(data, raw=False, strict_map_key=True)
            for migration in self._chain:
                record = migration.record(record)
            return record_to_event(record)
        except Exception as err:  # ExtraData, malformed msgpack, a record of the wrong shape
            raise CorruptCassetteError(
                self.path, f"no whole record here (the file changed since it was loaded?): {err}", offset=offset
            ) from None

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
        self._fd = None
        self._closer = None
