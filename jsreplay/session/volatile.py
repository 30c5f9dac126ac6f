"""The fields that differ between two runs of one session without meaning anything: one list, one rule type.

Replay's matcher leaves them out when it compares a live request with a recorded one; diff, textconv and verify
compare them as `<ignored>`. Each entry says why, and which of the two uses it serves (`Scope`): a rule is for
both unless the other use handles the field another way. Paths are `Service/Method.<section>.<field>...` with
section `request`, `response`, `metadata`, `initial_metadata` or `trailing_metadata`, and no list indices.
"""

from __future__ import annotations

import enum
import fnmatch
import re
from dataclasses import dataclass

_MAP_KEY = re.compile(r'\["((?:[^"\\]|\\.)*)"\]')  # labels["a/b"] as diff prints it -> labels.a/b
_INDEX = re.compile(r"\[[0-9*?]*\]")


class Scope(enum.Flag):
    MATCHING = enum.auto()  # replay: a live request against the recorded ones
    COMPARING = enum.auto()  # diff, textconv, verify: one recorded call against another
    BOTH = MATCHING | COMPARING


@dataclass(frozen=True)
class IgnoreRule:
    """A field-path glob and why it is ignored."""

    pattern: str
    reason: str = ""
    drop: bool = False  # True: leave the field out entirely; False: compare its value as "<ignored>"
    scope: Scope = Scope.BOTH

    def __post_init__(self) -> None:
        # Accept a path as diff prints it: map keys become plain segments, list indices are not matched.
        pattern = _INDEX.sub("", _MAP_KEY.sub(lambda m: "." + m.group(1), self.pattern.strip()))
        object.__setattr__(self, "pattern", pattern)

    def matches(self, path: str) -> bool:
        """The pattern matches the whole path, or its tail from a field boundary (`selector`, `lease.selector`)."""
        return fnmatch.fnmatchcase(path, self.pattern) or fnmatch.fnmatchcase(path, "*." + self.pattern)


_UUIDS_BY_VALUE = "driver UUIDs are new every exporter run (diff and textconv mask UUIDs by value instead)"

#: The documented default list (docs/inspect.md, README "Replaying").
VOLATILE_FIELDS: tuple[IgnoreRule, ...] = (
    IgnoreRule("*metadata.user-agent", "the gRPC library's version string"),
    IgnoreRule("*metadata.authorization", "bearer tokens; even redacted, the fingerprint key is new every recording"),
    IgnoreRule("*.router_endpoint", "the router's address: a new port every run"),
    IgnoreRule("*.router_token", "a new token for every Dial"),
    IgnoreRule("*.effective_begin_time", "lease times the server computes"),
    IgnoreRule("*.effective_end_time", "lease times the server computes"),
    IgnoreRule("*.effective_duration", "lease durations the server computes"),
    IgnoreRule("*.begin_time", "lease times"),
    IgnoreRule("*.end_time", "lease times"),
    IgnoreRule("*.lastTransitionTime", "lease condition timestamps"),
    IgnoreRule("ClientService/RotateToken.response.expiry", "token expiry times"),
    # The development line (after 0.9.0): log records carry their time, and Python logging's `asctime` (a
    # formatted time) among their structured fields; pushed telemetry entries carry a timestamp.
    IgnoreRule("ExporterService/LogStream.response.timestamp", "when the exporter logged the line"),
    IgnoreRule("ExporterService/LogStream.response.structured_fields.asctime", "the log record's formatted time"),
    IgnoreRule("ExporterService/LogStream.response.structured_fields.created", "the log record's creation time"),
    IgnoreRule("ExporterService/LogStream.response.structured_fields.msecs", "the log record's milliseconds"),
    IgnoreRule("ExporterService/LogStream.response.structured_fields.relativeCreated", "ms since logging started"),
    IgnoreRule("ExporterService/LogStream.response.structured_fields.thread", "the logging thread's id"),
    IgnoreRule("ExporterService/LogStream.response.structured_fields.process", "the exporter's process id"),
    IgnoreRule("TelemetryService/PushLogs.request.entries.timestamp", "when the log entry was emitted"),
    # The matcher compares leaves (`timestamp.seconds`, `timestamp.nanos`), not the Timestamp message.
    IgnoreRule("TelemetryService/PushLogs.request.entries.timestamp.*", "when the log entry was emitted"),
    IgnoreRule("ExporterService/GetStatus.response.status_version", "counts status changes over the exporter's life"),
    # The exporter's status as the controller saw it at that instant: it races the exporter's own ReportStatus
    # calls (a GetExporter right after CreateLease sees AVAILABLE or LEASE_READY), and those calls are compared.
    IgnoreRule("ClientService/GetExporter.response.status", "a snapshot of the exporter's status: races ReportStatus"),
    IgnoreRule("ClientService/GetExporter.response.status_message", "goes with the status snapshot"),
    IgnoreRule("ClientService/ListExporters.response.exporters.status", "a snapshot of the exporter's status"),
    IgnoreRule("ClientService/ListExporters.response.exporters.status_message", "goes with the status snapshot"),
    # Broad globs for matching only: a request must match whatever times and tokens a new run puts in it, while
    # diff names the fields it masks, so a real change in another field that merely ends alike still shows.
    IgnoreRule("*token", "tokens of any name", scope=Scope.MATCHING),
    IgnoreRule("*_time", "timestamps of any name", scope=Scope.MATCHING),
    IgnoreRule("ControllerService/Register.request.reports.uuid", _UUIDS_BY_VALUE, scope=Scope.MATCHING),
    IgnoreRule("ControllerService/Register.request.reports.parent_uuid", _UUIDS_BY_VALUE, scope=Scope.MATCHING),
)

MATCHING_IGNORES = tuple(rule for rule in VOLATILE_FIELDS if rule.scope & Scope.MATCHING)
COMPARING_IGNORES = tuple(rule for rule in VOLATILE_FIELDS if rule.scope & Scope.COMPARING)
