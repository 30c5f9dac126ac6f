"""What diff and textconv do not compare: the default list of volatile fields and values, and `--ignore`.

Two mechanisms, both documented in docs/inspect.md ("What is ignored"):

- **Field paths** (`IgnoreRule`): a glob over `Service/Method.<section>.<field>.<field>...`, where section is
  `request`, `response`, `metadata`, `initial_metadata` or `trailing_metadata`, and list indices are left out
  (`ClientService/GetLease.response.conditions.lastTransitionTime`). `*` matches anything, dots included; a
  pattern also matches the tail of a path from a field on (`lastTransitionTime`, `conditions.reason`). Paths
  as diff prints them work too: `labels["a/b"]` is read as `labels.a/b` and `[n]` indices are dropped.
  The default rules *mask* a value (it is compared as `<ignored>`, so a volatile field that appears or
  disappears is still reported); `--ignore` rules *drop* the field from the comparison altogether.
- **Value masks**, applied to every string: UUIDs become `<uuid>`, or `<driver:NAME>` when the cassette's
  driver reports (Register, GetReport) name the driver with that UUID, so a DriverCall still says which
  driver it called; redaction fingerprints (`redacted:<hex>`, keyed anew for every recording) become
  `redacted:<fingerprint>`; the cluster's and the proxy's own addresses and ports (the upstreams in the header,
  the router endpoints of Dial and Listen responses, as recorded and as forwarded) become `<router>`;
  temporary paths (`/tmp/...`, `/var/tmp/...`, `/dev/shm/...`) `<tmp>`; times of day, with or without a date
  and zone (`2025-01-02T03:04:05.678Z`, `03:04:05,678`), `<time>`. Log lines carry all three.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jsreplay.protocol.registry import UnknownField, WireType
from jsreplay.session.volatile import COMPARING_IGNORES, IgnoreRule

IGNORED = "<ignored>"
UUID_MASK = "<uuid>"
FINGERPRINT_MASK = "redacted:<fingerprint>"
ROUTER_MASK = "<router>"
TMP_MASK = "<tmp>"
TIME_MASK = "<time>"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_FINGERPRINT = re.compile(r"redacted:[0-9a-f]{12}")
# A path under a temporary directory, up to whitespace, a quote or closing punctuation.
_TMP_PATH = re.compile(r"(?<![\w.])(?:/private)?(?:/tmp|/var/tmp|/dev/shm|/var/folders)/[^\s'\"`),;\]>]*")
# A time of day with seconds, optionally after a date and with fractions and a zone; or a date-time.
_TIME = re.compile(
    r"(?<![\w:.])(?:\d{4}-\d{2}-\d{2}[T ])?\d{1,2}:\d{2}:\d{2}(?:[.,]\d{1,9})?"
    r"(?:Z|[+-]\d{2}:?\d{2}|\s?UTC)?(?![\w:])"
)
_MIN_MASKED_PORT = 1024  # ports below this are not masked on their own (too likely to be another number)
_TEXT_CACHE = 1 << 16  # distinct strings remembered by Normalizer.text


#: What diff, textconv and verify mask by default: `session.volatile`'s list, in its comparing scope.
DEFAULT_IGNORES: tuple[IgnoreRule, ...] = COMPARING_IGNORES

#: The value masks, for the docs and `--format json` output.
DEFAULT_VALUE_MASKS: tuple[tuple[str, str], ...] = (
    ("UUID", "lease names, exporter and driver instance UUIDs: `<uuid>`, or `<driver:NAME>` for a known driver"),
    ("redacted:<12 hex>", "redaction fingerprints, keyed anew for every recording: `redacted:<fingerprint>`"),
    ("HOST:PORT, PORT", "the cluster's and the proxy's addresses and ports, known from the cassette: `<router>`"),
    ("/tmp/...", "paths under a temporary directory: `<tmp>`"),
    ("HH:MM:SS", "times of day, with their date, fractions and zone: `<time>`"),
)


#: The tokens the masks leave in a value, and what each stands for (--show-ignored says why a value was masked).
MASKS: tuple[tuple[str, str], ...] = (
    (UUID_MASK, "a UUID (lease names, exporter and driver instances)"),
    ("<driver:", "a driver instance UUID"),
    (FINGERPRINT_MASK, "a redaction fingerprint, keyed anew for every recording"),
    (ROUTER_MASK, "the cluster's or the proxy's address"),
    (TMP_MASK, "a temporary path"),
    (TIME_MASK, "a time"),
)


def address_pattern(addresses: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern for the given `host:port` addresses in a text: the address under any host name (`localhost`,
    `[::1]`, `0.0.0.0`) with one of their ports, or such a port after the word port (`port 43123`, `port=43123`).
    None when there are none."""
    ports = sorted({a.rsplit(":", 1)[1] for a in addresses if ":" in a and a.rsplit(":", 1)[1].isdigit()})
    ports = [p for p in ports if int(p) >= _MIN_MASKED_PORT]
    if not ports:
        return None
    either = "|".join(ports)
    host = r"(?:\[[0-9a-fA-F:.]*\]|[A-Za-z0-9_.-]+)"
    return re.compile(rf"(?:(?<![\w.-]){host}:|(?i:(\bport\b[ =:]*)))(?:{either})(?!\w)")


def _router(match: re.Match[str]) -> str:
    return (match.group(1) or "") + ROUTER_MASK  # "port 43123" keeps its word: "port <router>"


class Normalizer:
    """Masks and drops what is not compared, for one cassette (driver names differ per cassette)."""

    def __init__(
        self,
        *,
        defaults: bool = True,
        ignores: Sequence[str] = (),
        drivers: Mapping[str, str] | None = None,
        addresses: Iterable[str] = (),
    ) -> None:
        self.defaults = defaults
        self._addresses = address_pattern(addresses) if defaults else None
        self.rules: tuple[IgnoreRule, ...] = (DEFAULT_IGNORES if defaults else ()) + tuple(
            IgnoreRule(p, "--ignore", drop=True) for p in ignores
        )
        self._drivers = dict(drivers or {})
        self._verdicts: dict[str, IgnoreRule | None] = {}
        self._texts: dict[str, str] = {}

    def rule_for(self, path: str) -> IgnoreRule | None:
        """The first rule that matches `path` (memoized: the same paths come up in every call)."""
        try:
            return self._verdicts[path]
        except KeyError:
            found = next((r for r in self.rules if r.matches(path)), None)
            self._verdicts[path] = found
            return found

    def text(self, value: str) -> str:
        """A string with the value masks applied (memoized: lease names and the like recur in many calls)."""
        if not self.defaults or ("-" not in value and ":" not in value and "/" not in value and "ort" not in value):
            return value
        masked = self._texts.get(value)
        if masked is None:
            masked = value
            if "/" in masked:
                masked = _TMP_PATH.sub(TMP_MASK, masked)
            if ":" in masked:
                if self._addresses is not None:
                    masked = self._addresses.sub(_router, masked)
                masked = _TIME.sub(TIME_MASK, masked)
            elif self._addresses is not None and "ort" in masked:
                masked = self._addresses.sub(_router, masked)
            if "-" in masked:
                masked = _UUID.sub(self._uuid, masked)
            if "redacted:" in masked:
                masked = _FINGERPRINT.sub(FINGERPRINT_MASK, masked)
            if len(self._texts) < _TEXT_CACHE:
                self._texts[value] = masked
        return masked

    def _uuid(self, match: re.Match[str]) -> str:
        name = self._drivers.get(match.group(0).lower())
        return f"<driver:{name}>" if name is not None else UUID_MASK

    def value(self, path: str, value: Any) -> Any:
        """A decoded value with ignored fields masked or dropped and strings masked. `path` is the value's
        ignore path (`Service/Method.response`)."""
        kind = type(value)  # exact types: decoded values are plain dicts, lists and scalars (and this is hot)
        if kind is dict:
            out: dict[str, Any] = {}
            verdicts = self._verdicts
            for key, item in value.items():
                child = f"{path}.{key}"
                rule = verdicts[child] if child in verdicts else self.rule_for(child)
                if rule is not None:
                    if not rule.drop:
                        out[key] = IGNORED
                    continue
                item_kind = type(item)
                if item_kind is str:
                    out[key] = self.text(item)
                elif item_kind is dict or item_kind is list or item_kind is UnknownField:
                    out[key] = self.value(child, item)
                else:
                    out[key] = item
            return out
        if kind is list:
            return [self.value(path, item) for item in value]
        if kind is str:
            return self.text(value)
        if kind is UnknownField:
            return self._unknown(value)
        return value

    def _unknown(self, field: UnknownField) -> Any:
        # An unknown length-delimited field may be a string holding a UUID: mask it like a known string.
        if field.wire_type is WireType.LENGTH_DELIMITED and isinstance(field.value, bytes) and self.defaults:
            try:
                text = field.value.decode("utf-8")
            except UnicodeDecodeError:
                return field
            masked = self.text(text)
            if masked != text:
                return UnknownField(field.number, field.wire_type, masked.encode())
        return field

    def metadata(self, path: str, metadata: Iterable[tuple[str, str | bytes]]) -> dict[str, list[str | bytes]]:
        """Metadata as key -> values, masked. `path` is `Service/Method.metadata` (or initial_/trailing_)."""
        out: dict[str, list[str | bytes]] = {}
        if not metadata:  # most inner calls' initial and trailing metadata
            return out
        for key, value in metadata:
            key = key.lower()
            rule = self.rule_for(f"{path}.{key}") if self.rules else None
            if rule is not None and rule.drop:
                continue
            masked: str | bytes = IGNORED if rule is not None else self.text(value) if isinstance(value, str) else value
            out.setdefault(key, []).append(masked)
        return out
