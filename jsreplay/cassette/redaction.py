"""Redaction of secrets: one rule, applied by the cassette writer to every event before it reaches the disk.

A secret is replaced by a keyed fingerprint, `redacted:<12 hex digits>` (HMAC-SHA256 under a key that is made
for each recording and never stored), so equal secrets within a cassette stay equal and replay can still pair
a router token handed out by Dial with the Stream call that presents it. Authorization values keep their
scheme: `Bearer redacted:…`, whose token part is the same fingerprint the token field got.

Only messages that actually held a secret are re-encoded; every other message keeps its recorded bytes. A
message of a type that can hold a secret but whose bytes do not decode cannot be searched, so none of it is
stored: it becomes `redacted:undecodable <n> bytes <fingerprint>`, which does not decode either.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Any

from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    ClientMessage,
    Metadata,
    MetadataValue,
    Redaction,
    ServerHeaders,
    ServerMessage,
    Status,
)
from jsreplay.protocol.registry import ProtocolError, Registry, iter_unknown_paths

REDACTED_PREFIX = "redacted:"

# x-jumpstarter-passphrase: what `jmp shell --tls-grpc` sends an exporter's gRPC listener.
DEFAULT_METADATA_KEYS = (
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "x-jumpstarter-passphrase",
)
#: How many paths of fields unknown to the schema are kept per message type, for the warning.
MAX_UNKNOWN_PATHS = 8
# Known secret fields of the Jumpstarter schema...
DEFAULT_FIELDS = (
    "jumpstarter.v1.DialResponse.router_token",
    "jumpstarter.v1.ListenResponse.router_token",
    "jumpstarter.v1.Endpoint.client_private_key",
    "jumpstarter.client.v1.RotateTokenResponse.token",
)
# ...and name patterns that catch secret fields a newer schema adds. Page tokens are cursors, not secrets.
DEFAULT_FIELD_NAMES = (
    r"(?!.*page_token$).*(^|_)token$",
    r".*(^|_)private_key$",
    r".*(^|_)password$",
    r".*(^|_)secret$",
)


def is_redacted(value: str | bytes) -> bool:
    if isinstance(value, bytes):
        return value.startswith(REDACTED_PREFIX.encode())
    return value.startswith(REDACTED_PREFIX) or REDACTED_PREFIX in value.split(" ", 1)[-1][: len(REDACTED_PREFIX)]


class Redactor:
    """Replaces secrets in events. Stateless apart from its key and rules, so one can serve many writers."""

    def __init__(
        self,
        *,
        registry: Registry,
        key: bytes | None = None,
        metadata_keys: Iterable[str] = DEFAULT_METADATA_KEYS,
        fields: Iterable[str] = DEFAULT_FIELDS,
        field_names: Iterable[str] = DEFAULT_FIELD_NAMES,
    ) -> None:
        self._registry = registry
        self._key = key if key is not None else secrets.token_bytes(32)
        self._metadata_keys = tuple(k.lower() for k in metadata_keys)
        self._fields = tuple(fields)
        self._field_names = tuple(field_names)
        self._name_patterns = [re.compile(p) for p in self._field_names]
        self._secret_cache: dict[str, frozenset[str]] = {}
        # message type -> paths of fields the schema does not know, seen in messages written: redaction by field
        # name cannot see them, so a secret there is stored in clear; the recorder warns about them.
        self.unknown_fields: dict[str, set[str]] = {}

    @property
    def description(self) -> Redaction:
        """What this redactor does, for the cassette header."""
        return Redaction(
            enabled=True,
            metadata_keys=self._metadata_keys,
            fields=self._fields,
            field_names=self._field_names,
        )

    def fingerprint(self, secret: str | bytes) -> str:
        raw = secret.encode() if isinstance(secret, str) else secret
        if raw.startswith(REDACTED_PREFIX.encode()):
            return raw.decode(errors="replace")  # already redacted: keep it stable
        digest = hmac.new(self._key, raw, hashlib.sha256).hexdigest()
        return f"{REDACTED_PREFIX}{digest[:12]}"

    # ------------------------------------------------------------------------------------------- metadata

    def _redact_metadata_value(self, value: MetadataValue) -> MetadataValue:
        if isinstance(value, bytes):
            return self.fingerprint(value).encode()
        scheme, sep, rest = value.partition(" ")
        if sep and rest and scheme.isalpha():  # "Bearer <token>": keep the scheme so the value stays readable
            return f"{scheme} {self.fingerprint(rest)}"
        return self.fingerprint(value)

    def redact_metadata(self, metadata: Metadata) -> Metadata:
        if not any(k.lower() in self._metadata_keys for k, _ in metadata):
            return metadata
        return tuple(
            (k, self._redact_metadata_value(v)) if k.lower() in self._metadata_keys else (k, v) for k, v in metadata
        )

    # ------------------------------------------------------------------------------------------- messages

    def _is_secret_field(self, full_name: str, name: str) -> bool:
        return full_name in self._fields or any(p.fullmatch(name) for p in self._name_patterns)

    def _secret_fields(self, type_name: str) -> frozenset[str]:
        """Full names of message types reachable from `type_name` that hold a secret somewhere (memoized)."""
        cached = self._secret_cache.get(type_name)
        if cached is not None:
            return cached
        found: set[str] = set()
        seen: set[str] = set()

        def visit(name: str) -> bool:
            if name in seen:
                return name in found
            seen.add(name)
            descriptor = self._registry.descriptor(name)
            holds = False
            for field in descriptor.fields:
                if field.message_type is not None:
                    holds |= visit(field.message_type.full_name)
                elif field.type in (field.TYPE_STRING, field.TYPE_BYTES) and self._is_secret_field(
                    field.full_name, field.name
                ):
                    holds = True
            if holds:
                found.add(name)
            return holds

        visit(type_name)
        result = frozenset(found)
        self._secret_cache[type_name] = result
        return result

    def _redact_value(self, type_name: str, value: Any) -> bool:
        """Redact secrets in a decoded message in place; True if anything changed."""
        if not isinstance(value, dict):
            return False
        descriptor = self._registry.descriptor(type_name)
        changed = False
        for field in descriptor.fields:
            if field.name not in value:
                continue
            item = value[field.name]
            if field.message_type is not None:
                if field.message_type.full_name not in self._secret_fields(type_name):
                    continue
                if field.message_type.GetOptions().map_entry:
                    value_field = field.message_type.fields_by_name["value"]
                    if value_field.message_type is not None and isinstance(item, dict):
                        for v in item.values():
                            changed |= self._redact_value(value_field.message_type.full_name, v)
                    continue
                items = item if isinstance(item, list) else [item]
                for v in items:
                    changed |= self._redact_value(field.message_type.full_name, v)
            elif self._is_secret_field(field.full_name, field.name):
                if isinstance(item, list):
                    value[field.name] = [self._redact_scalar(v) for v in item]
                else:
                    value[field.name] = self._redact_scalar(item)
                changed = changed or value[field.name] != item
        return changed

    def _redact_scalar(self, value: Any) -> Any:
        if isinstance(value, bytes):
            return self.fingerprint(value).encode() if value else value
        if isinstance(value, str):
            return self.fingerprint(value) if value else value
        return value

    def undecodable(self, data: bytes) -> bytes:
        """What is stored for a secret-bearing message that does not decode: a marker, none of its bytes."""
        digest = hmac.new(self._key, data, hashlib.sha256).hexdigest()  # not fingerprint(): it keeps "redacted:…"
        return f"{REDACTED_PREFIX}undecodable {len(data)} bytes {digest[:12]}".encode()

    def _note_unknown_fields(self, type_name: str, data: bytes) -> None:
        """Remember where a message carries fields the schema does not know (cheaply: parse, drop unknown
        fields, compare sizes; names the paths only when there are some)."""
        try:
            message = self._registry.parse(type_name, data)
            size = message.ByteSize()
            message.DiscardUnknownFields()
            if message.ByteSize() == size:
                return
            paths = self.unknown_fields.setdefault(type_name, set())
            if len(paths) < MAX_UNKNOWN_PATHS:
                paths.update(list(iter_unknown_paths(self._registry.decode(type_name, data)))[:MAX_UNKNOWN_PATHS])
        except ProtocolError:
            return

    def redact_message(self, type_name: str, data: bytes) -> bytes:
        """The message with its secret fields fingerprinted; the same bytes when it holds none."""
        self._note_unknown_fields(type_name, data)
        try:
            if not self._secret_fields(type_name):
                return data
        except ProtocolError:
            return data  # a type the schema does not have: nothing is known to be secret in it
        try:
            value = self._registry.decode(type_name, data)
            if not self._redact_value(type_name, value):
                return data
            return self._registry.encode(type_name, value)
        except ProtocolError:
            # Bytes that do not decode cannot be searched for the secrets this type holds: keep none of them.
            return self.undecodable(data)

    # ------------------------------------------------------------------------------------------- events

    def redact(self, event: AnyEvent, method: str) -> AnyEvent:
        """The event as it may be stored."""
        match event:
            case CallStart():
                redacted = self.redact_metadata(event.metadata)
                return event if redacted is event.metadata else dataclasses.replace(event, metadata=redacted)
            case ServerHeaders():
                redacted = self.redact_metadata(event.metadata)
                return event if redacted is event.metadata else dataclasses.replace(event, metadata=redacted)
            case Status():
                redacted = self.redact_metadata(event.trailing_metadata)
                if redacted is event.trailing_metadata:
                    return event
                return dataclasses.replace(event, trailing_metadata=redacted)
            case ClientMessage():
                info = self._registry.method(method)
                if info is None:
                    return event
                data = self.redact_message(info.request_type, event.data)
                return event if data is event.data else dataclasses.replace(event, data=data)
            case ServerMessage():
                info = self._registry.method(method)
                if info is None:
                    return event
                data = self.redact_message(info.response_type, event.data)
                forwarded = event.forwarded
                if forwarded is not None:
                    forwarded = self.redact_message(info.response_type, forwarded)
                if data is event.data and forwarded is event.forwarded:
                    return event
                return dataclasses.replace(event, data=data, forwarded=forwarded)
        return event
