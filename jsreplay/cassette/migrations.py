"""Format migrations: `{version: upgrade}` applied in a loop until a record reaches the current version.

A cassette is read lazily, so a migration upgrades the header and each record on its own. Records are the
plain msgpack values (a dict for the header, a list for each event) before they become model objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Migration:
    """Upgrades version N to N + 1."""

    header: Callable[[dict[str, Any]], dict[str, Any]]
    record: Callable[[list[Any]], list[Any]]


# Version 1 is the first format; the first change to it adds `1: Migration(...)` here.
MIGRATIONS: Mapping[int, Migration] = {}


def chain(version: int) -> list[Migration]:
    """The migrations that take `version` to the current one, in order. KeyError names a missing step."""
    return [MIGRATIONS[v] for v in range(version, FORMAT_VERSION)]
