"""Coverage of a replay: per cassette, which recorded calls, inner calls and driver methods were served, how often,
and which were left; what `--fail-unused` fails on; JSON (schemas/coverage.schema.json) and a short text table.

Which unused recordings are *not* required (`exempt`):

- `poll`: a unary poll the client repeats as often as it needs (ClientService/GetLease, ControllerService/GetLease,
  ControllerService/ReportStatus, ExporterService/GetStatus), when another recording of the same method was served
  from the same cassette (inner calls: from the same recorded tunnel). A poll never served at all is required.
- `peer`: recorded by a peer that made no call in this replay (a cassette recorded with both client and exporter,
  replayed to the client only, leaves the exporter's Register, Listen, Status... unused). If no recorded peer made
  any call, this exemption does not apply: an empty run leaves everything.
- `fault`: the recording a call would have got when an injected fault answered it instead.

Pure data: built from rows the replay server hands over, merged across tests and pytest-xdist workers with
`combine`. Nothing here touches gRPC.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jsreplay.protocol.wire import short_method

FORMAT = "jsreplay-coverage"
VERSION = 1

POLL_METHODS = frozenset(
    {
        "/jumpstarter.client.v1.ClientService/GetLease",
        "/jumpstarter.v1.ControllerService/GetLease",
        "/jumpstarter.v1.ControllerService/ReportStatus",
        "/jumpstarter.v1.ExporterService/GetStatus",
    }
)


@dataclass(frozen=True)
class RecordingUse:
    """One recording of a cassette and how often it was served."""

    cassette: str  # the cassette's path as given to replay
    recording: str  # "run.msgpack#12", or "run.msgpack#11/stream 3" for an inner call
    method: str
    served: int
    inner: bool = False
    driver_call: str | None = None  # "power.on"
    peer: str = ""  # who made it, for outer calls ("Exporter:default/exporter-1")
    exempt: str | None = None  # why it is not required if unused: "poll", "peer", "fault"

    @property
    def left(self) -> bool:
        return self.served == 0 and self.exempt is None

    def to_json(self) -> dict[str, Any]:
        return {
            "recording": self.recording,
            "method": self.method,
            "inner": self.inner,
            "driver_call": self.driver_call,
            "served": self.served,
            "exempt": self.exempt,
        }


def _group(row: RecordingUse) -> str:
    """Where a poll's siblings are: the cassette for outer calls, the recorded tunnel for inner ones."""
    return row.recording.split("/stream ", 1)[0] if row.inner else row.cassette


def with_exemptions(rows: Iterable[RecordingUse], peers_seen: set[str], displaced: set[str]) -> list[RecordingUse]:
    """The rows with `exempt` set by the rules in this module's docstring."""
    rows = list(rows)
    served_polls = {(_group(r), r.method) for r in rows if r.served and r.method in POLL_METHODS}
    recorded_peers = {r.peer for r in rows if r.peer}
    any_peer_came = bool(recorded_peers & peers_seen)
    out: list[RecordingUse] = []
    for row in rows:
        exempt: str | None = None
        if row.served == 0:
            if row.recording in displaced:
                exempt = "fault"
            elif row.method in POLL_METHODS and (_group(row), row.method) in served_polls:
                exempt = "poll"
            elif any_peer_came and row.peer and row.peer not in peers_seen:
                exempt = "peer"
        out.append(replace(row, exempt=exempt))
    return out


@dataclass
class Coverage:
    """Recordings per cassette, with how often each was served; the injections made; how many runs merged."""

    rows: dict[tuple[str, str], RecordingUse] = field(default_factory=dict)  # (cassette, recording) -> use
    injected: list[dict[str, Any]] = field(default_factory=list)
    runs: int = 0

    @classmethod
    def of(cls, rows: Iterable[RecordingUse], injected: Iterable[Mapping[str, Any]] = ()) -> Coverage:
        coverage = cls(runs=1, injected=[dict(i) for i in injected])
        for row in rows:
            coverage._add(row)
        return coverage

    def _add(self, row: RecordingUse) -> None:
        key = (row.cassette, row.recording)
        old = self.rows.get(key)
        if old is None:
            self.rows[key] = row
            return
        # Served in any run counts; left unserved, it is exempt only if no run required it.
        exempt = None if old.exempt is None or row.exempt is None else old.exempt
        self.rows[key] = replace(old, served=old.served + row.served, exempt=exempt)

    def merge(self, other: Coverage) -> None:
        for row in other.rows.values():
            self._add(row)
        self.injected.extend(other.injected)
        self.runs += other.runs

    @property
    def left(self) -> list[RecordingUse]:
        return [r for r in self.rows.values() if r.left]

    def cassettes(self) -> list[str]:
        return sorted({c for c, _ in self.rows})

    def _summary(self, rows: list[RecordingUse], key: str) -> list[dict[str, Any]]:
        table: dict[tuple[str, bool], dict[str, Any]] = {}
        for row in rows:
            name = short_method(row.method) if key == "method" else row.driver_call
            if name is None:
                continue
            entry = table.setdefault(
                (name, row.inner), {key: name, "inner": row.inner, "recordings": 0, "served": 0, "left": 0}
            )
            entry["recordings"] += 1
            entry["served"] += row.served
            entry["left"] += int(row.left)
        return [table[k] for k in sorted(table, key=lambda k: (k[1], k[0]))]

    def to_json(self) -> dict[str, Any]:
        cassettes = []
        for cassette in self.cassettes():
            rows = [r for (c, _), r in sorted(self.rows.items(), key=lambda kv: _order(kv[0][1])) if c == cassette]
            cassettes.append(
                {
                    "cassette": cassette,
                    "recordings": len(rows),
                    "served": sum(r.served for r in rows),
                    "left": sum(1 for r in rows if r.left),
                    "methods": self._summary(rows, "method"),
                    "driver_methods": [
                        {k: v for k, v in e.items() if k != "inner"} for e in self._summary(rows, "driver_call")
                    ],
                    "rows": [r.to_json() for r in rows],
                }
            )
        return {
            "format": FORMAT,
            "version": VERSION,
            "runs": self.runs,
            "cassettes": cassettes,
            "left": [
                {"cassette": r.cassette, "recording": r.recording, "method": r.method, "driver_call": r.driver_call}
                for r in sorted(self.left, key=lambda r: (r.cassette, _order(r.recording)))
            ],
            "injected": self.injected,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Coverage:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        coverage = cls(runs=int(data.get("runs", 1)), injected=list(data.get("injected", [])))
        for entry in data.get("cassettes", []):
            for row in entry.get("rows", []):
                coverage._add(
                    RecordingUse(
                        cassette=entry["cassette"],
                        recording=row["recording"],
                        method=row["method"],
                        served=int(row["served"]),
                        inner=bool(row["inner"]),
                        driver_call=row.get("driver_call"),
                        exempt=row.get("exempt"),
                    )
                )
        return coverage

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def table(self) -> str:
        """A short text table: per cassette and method, recordings served and left; then driver methods."""
        lines: list[str] = []
        for entry in self.to_json()["cassettes"]:
            lines.append(
                f"{entry['cassette']}: {entry['recordings'] - entry['left']}/{entry['recordings']} recordings "
                f"covered, {entry['served']} calls served, {entry['left']} left"
            )
            width = max((len(m["method"]) + (2 if m["inner"] else 0) for m in entry["methods"]), default=10)
            width = max(width, len(entry["driver_methods"][0]["driver_call"]) if entry["driver_methods"] else 0)
            lines.append(f"  {'call':<{width}}  recorded  served  left")
            for m in entry["methods"]:
                name = ("  " if m["inner"] else "") + m["method"]
                lines.append(f"  {name:<{width}}  {m['recordings']:>8}  {m['served']:>6}  {m['left']:>4}")
            for d in entry["driver_methods"]:
                lines.append(
                    f"  {'  ' + d['driver_call']:<{width}}  {d['recordings']:>8}  {d['served']:>6}  {d['left']:>4}"
                )
        if self.injected:
            lines.append(f"injected: {len(self.injected)}")
            for i in self.injected:
                what = f"{i['method']}" + (f" [{i['driver_call']}]" if i.get("driver_call") else "")
                lines.append(f"  {i['kind']} {i['spec']!r} on {what} #{i['occurrence']}")
        return "\n".join(lines)


def _order(recording: str) -> tuple[str, int, int]:
    """Recordings in event order: "a.msgpack#11/stream 3" -> ("a.msgpack", 11, 3)."""
    source, _, rest = recording.rpartition("#")
    outer, _, stream = rest.partition("/stream ")
    return source, int(outer) if outer.isdigit() else 0, int(stream) if stream.isdigit() else -1


def combine(coverages: Iterable[Coverage]) -> Coverage:
    total = Coverage()
    for coverage in coverages:
        total.merge(coverage)
    return total


def describe_left(left: Iterable[RecordingUse]) -> str:
    """What `--fail-unused` prints: one line per recording left, by cassette and event."""
    lines = []
    for row in sorted(left, key=lambda r: (r.cassette, _order(r.recording))):
        what = short_method(row.method) + (f" [{row.driver_call}]" if row.driver_call else "")
        lines.append(f"- {row.cassette}: {row.recording} {what}")
    return "\n".join(lines)
