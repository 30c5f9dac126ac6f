"""Single records of a loaded cassette, read back by position: replay keeps where a response is, not its bytes.

The library notes each recorded response's record as (offset, length) while it scans the cassette; when the
response is sent, `RecordFile.event_at` reads that record with one `pread` through the cassette reader's random
access (`CassetteReader.event_at`: the same caps, migrations and decoding as the scan). The reader is opened on
the first read, which checks the header again: a cassette whose header changed since loading is not served.
"""

from __future__ import annotations

from pathlib import Path

from jsreplay.cassette.errors import CassetteError, CorruptCassetteError
from jsreplay.cassette.format import MAGIC, CassetteReader
from jsreplay.cassette.model import AnyEvent


class RecordFile:
    """One cassette, opened on the first read and kept open until `close()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader: CassetteReader | None = None

    def _open(self) -> CassetteReader:
        try:
            self._reader = CassetteReader(self.path)
        except CorruptCassetteError:
            raise
        except CassetteError as err:  # e.g. a format version changed to one this jsreplay cannot read
            raise CorruptCassetteError(
                self.path, f"the header changed since the cassette was loaded: {err.reason}", offset=len(MAGIC)
            ) from None
        return self._reader

    def event_at(self, offset: int, length: int) -> AnyEvent:
        """The event whose record is the `length` bytes at `offset` (as `CassetteReader.iter_with_offsets` gave)."""
        reader = self._reader if self._reader is not None else self._open()
        return reader.event_at(offset, length)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None
