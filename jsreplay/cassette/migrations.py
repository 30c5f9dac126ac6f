"""Format migrations: `{version: upgrade}` applied in a loop until a record reaches the current version.

A cassette is read lazily, so a migration upgrades the header and each record on its own. Records are the
plain msgpack values (a dict for the header, a list for each event) before they become model objects.

Version 2 added message references (a message record's data may be `[offset, length]` of an earlier message
record holding the same bytes: the two ends of a tunnel share them). Every version 1 file is a valid version 2
file, so 1 -> 2 changes nothing; the version moved so that an older jsreplay refuses a file with references
("newer version") instead of reading one of them as a message without data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 2


@dataclass(frozen=True)
class Migration:
    """Upgrades version N to N + 1. `record` None: records are unchanged (the reader then skips the step)."""

    header: Callable[[dict[str, Any]], dict[str, Any]]
    record: Callable[[list[Any]], list[Any]] | None = None


def _unchanged(header: dict[str, Any]) -> dict[str, Any]:
    return header  # the header keeps its own format_version: `show` says what the file is


MIGRATIONS: Mapping[int, Migration] = {
    1: Migration(header=_unchanged),  # 2 only adds message references
}


def chain(version: int) -> list[Migration]:
    """The migrations that take `version` to the current one, in order. KeyError names a missing step."""
    return [MIGRATIONS[v] for v in range(version, FORMAT_VERSION)]
