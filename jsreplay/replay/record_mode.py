"""Record modes: whether a run replays its cassettes, records them, or both. One home for the decision, used by
`jsreplay replay --mode` and the pytest plugin's `--jsreplay-record-mode`."""

from __future__ import annotations

import enum


class RecordMode(enum.Enum):
    NONE = "none"  # replay only
    ONCE = "once"  # record a cassette that does not exist yet; replay one that does
    NEW_EPISODES = "new_episodes"  # replay, and forward calls that miss to the upstream, appending them
    ALL = "all"  # always re-record (the cassette is overwritten)

    @property
    def needs_upstream(self) -> bool:
        return self is not RecordMode.NONE

    @property
    def overwrites(self) -> bool:
        return self is RecordMode.ALL

    @property
    def forwards_misses(self) -> bool:
        return self is RecordMode.NEW_EPISODES

    def records(self, *, missing: bool) -> bool:
        """Whether the run records instead of replaying, given whether any of its cassettes is missing."""
        return self is RecordMode.ALL or (missing and self in (RecordMode.ONCE, RecordMode.NEW_EPISODES))


#: The modes the pytest plugin offers (a test replays or records; it does not append to a shared cassette).
PLUGIN_MODES = (RecordMode.NONE, RecordMode.ONCE, RecordMode.ALL)
