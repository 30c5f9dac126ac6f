"""Rewrites of replayed responses: router and telemetry endpoints point at the replay server; timestamps move to now.

A telemetry endpoint (`GetServiceEndpoints`, the development line) also gets the replay server's CA as its
certificate (none when it serves plaintext), so the exporter pushes its logs to replay, which serves the recorded
PushLogs answers.

A lease recorded last month ended last month: shifting every timestamp by (now - recording start) makes the
client's lease monitor see a live lease. Messages without timestamps or endpoints keep their recorded bytes.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message

from jsreplay.protocol.registry import ProtocolError, Registry

TIMESTAMP_TYPES = frozenset({"google.protobuf.Timestamp", "jumpstarter.v1.Time"})
ENDPOINT_FIELD = "router_endpoint"
TELEMETRY_ENDPOINT = "jumpstarter.v1.TelemetryEndpoint"


class ResponseRewriter:
    def __init__(self, registry: Registry, *, advertise: str, shift_seconds: int, ca_pem: bytes | None = None) -> None:
        self._registry = registry
        self._advertise = advertise
        self._certificate = ca_pem.decode() if ca_pem else ""
        self._shift = shift_seconds
        self._interesting: dict[str, bool] = {}

    def _has_targets(self, descriptor: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
        name = descriptor.full_name
        cached = self._interesting.get(name)
        if cached is not None:
            return cached
        if name in seen:
            return False
        found = name == TELEMETRY_ENDPOINT
        for field in descriptor.fields:
            if field.name == ENDPOINT_FIELD and field.message_type is None:
                found = True
            elif field.message_type is not None:
                if field.message_type.full_name in TIMESTAMP_TYPES or self._has_targets(
                    field.message_type, seen | {name}
                ):
                    found = True
        self._interesting[name] = found
        return found

    def rewrite(self, method: str, data: bytes) -> bytes:
        info = self._registry.method(method)
        if info is None:
            return data
        try:
            descriptor = self._registry.descriptor(info.response_type)
            if not self._has_targets(descriptor):
                return data
            message = self._registry.parse(info.response_type, data)
        except ProtocolError:
            return data
        if self._apply(message):
            return message.SerializeToString()
        return data

    def _apply(self, message: Message) -> bool:
        if message.DESCRIPTOR.full_name == TELEMETRY_ENDPOINT and getattr(message, "endpoint", ""):
            message.endpoint = self._advertise
            message.certificate = self._certificate
            return True
        changed = False
        for field, value in message.ListFields():
            if field.message_type is None:
                if field.name == ENDPOINT_FIELD and value:
                    setattr(message, field.name, self._advertise)
                    changed = True
                continue
            items = list(value.values()) if field.message_type.GetOptions().map_entry else None
            if items is None:
                items = list(value) if field.is_repeated else [value]
            elif field.message_type.fields_by_name["value"].message_type is None:
                continue
            for item in items:
                if item.DESCRIPTOR.full_name in TIMESTAMP_TYPES:
                    if self._shift and getattr(item, "seconds", 0):
                        item.seconds += self._shift
                        changed = True
                elif isinstance(item, Message):
                    changed |= self._apply(item)
        return changed
