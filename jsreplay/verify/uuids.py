"""Driver UUIDs and handed-out values: the recorded session's onto the live exporter's, in every recorded request.

An exporter makes new driver UUIDs for every session, and the client echoes them from GetReport in DriverCall,
StreamingDriverCall and the `request` metadata of byte streams. Verify replays the recorded client, so before a
recorded request goes out, every recorded driver UUID in it is replaced by the UUID of the same driver in the
live exporter. "The same driver" is the one at the same place in the device tree: the path of driver names
(the `jumpstarter.dev/name` label) from the root, or the position among its siblings for an unnamed driver.
Other values the exporter hands out (file handles, resource ids: `verify.handles`) are added as they arrive.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from google.protobuf.message import Message

from jsreplay.protocol.registry import ProtocolError, Registry
from jsreplay.session.drivers import tree_paths

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class UuidMap:
    """Recorded UUID -> live UUID, learned from pairs of GetReport responses (recorded, live)."""

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}  # recorded UUID (lower case) -> live UUID
        self.values: dict[str, str] = {}  # other handed-out values, whole: recorded -> live
        self.unmatched: list[str] = []  # recorded driver paths with no live driver, for the report

    def learn(self, recorded: Mapping[str, Any], live: Mapping[str, Any]) -> None:
        """Pair two decoded GetReportResponses: the exporter's own UUID and every driver's."""
        old_uuid, new_uuid = recorded.get("uuid"), live.get("uuid")
        if isinstance(old_uuid, str) and isinstance(new_uuid, str) and old_uuid and new_uuid:
            self.mapping[old_uuid.lower()] = new_uuid
        old_paths = tree_paths(recorded.get("reports") or [])
        new_paths = tree_paths(live.get("reports") or [])
        for path, uuid in old_paths.items():
            found = new_paths.get(path)
            if found is None:
                self.unmatched.append("/".join(path))
            else:
                self.mapping[uuid.lower()] = found

    def add(self, recorded: str, live: str) -> None:
        """A value the recorded exporter handed out (a handle, a session id) and what the live one handed out."""
        if _UUID.fullmatch(recorded):
            self.mapping.setdefault(recorded.lower(), live)
        else:
            self.values.setdefault(recorded, live)

    def text(self, value: str) -> str:
        if value in self.values:
            return self.values[value]
        if not self.mapping or "-" not in value:
            return value
        return _UUID.sub(lambda m: self.mapping.get(m.group(0).lower(), m.group(0)), value)

    def metadata(self, metadata: Iterable[tuple[str, str | bytes]]) -> tuple[tuple[str, str | bytes], ...]:
        return tuple((k, self.text(v) if isinstance(v, str) else v) for k, v in metadata)

    def message(self, registry: Registry, type_name: str | None, data: bytes) -> bytes:
        """A serialized request with recorded UUIDs replaced; the original bytes when nothing changed."""
        if not (self.mapping or self.values) or type_name is None or not data:
            return data
        try:
            message = registry.parse(type_name, data)
        except ProtocolError:
            return data
        if not self._rewrite(message):
            return data
        return message.SerializeToString()

    def _rewrite(self, message: Message) -> bool:
        changed = False
        for field, value in message.ListFields():
            if field.message_type is None:
                if field.type != field.TYPE_STRING:
                    continue
                if field.is_repeated:
                    for i, item in enumerate(value):
                        new = self.text(item)
                        if new != item:
                            value[i] = new
                            changed = True
                else:
                    new = self.text(value)
                    if new != value:
                        setattr(message, field.name, new)
                        changed = True
                continue
            if field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                for key in list(value):
                    if value_field.message_type is not None:
                        changed |= self._rewrite(value[key])
                    elif isinstance(value[key], str):
                        new = self.text(value[key])
                        if new != value[key]:
                            value[key] = new
                            changed = True
                continue
            for item in value if field.is_repeated else [value]:
                changed |= self._rewrite(item)
        return changed
