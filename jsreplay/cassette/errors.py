"""Errors raised while reading or writing cassettes.

Every problem with a cassette's bytes raises a `CassetteError` subclass whose message names the file and the
byte offset or event number, so the CLI can print it as one line.
"""

from __future__ import annotations

from pathlib import Path


class CassetteError(Exception):
    """Base class: something is wrong with a cassette file."""

    def __init__(self, path: str | Path, message: str, *, offset: int | None = None, event: int | None = None):
        self.path = str(path)
        self.reason = message
        self.offset = offset
        self.event = event
        where = []
        if event is not None:
            where.append(f"event {event}")
        if offset is not None:
            where.append(f"byte {offset}")
        location = f" ({', '.join(where)})" if where else ""
        super().__init__(f"{self.path}{location}: {message}")


class NotACassetteError(CassetteError):
    """The file does not start with the cassette magic: not a jsreplay cassette, or garbage."""


class UnsupportedVersionError(CassetteError):
    """The cassette was written by a newer jsreplay, in a format version this one cannot read."""


class CorruptCassetteError(CassetteError):
    """The file is a cassette, but a header or record is malformed or of the wrong types."""


class CassetteExistsError(CassetteError):
    """The writer would overwrite an existing cassette without being told to."""


class TruncatedCassetteWarning(UserWarning):
    """The cassette ends in the middle of a record (a recording that was killed); the tail was dropped."""
