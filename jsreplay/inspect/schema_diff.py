"""Compare two embedded schemas (serialized FileDescriptorSets): services, methods, messages, enums, fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from jsreplay.protocol.registry import ProtocolError

_TYPE_NAMES = {value: name[len("TYPE_") :].lower() for name, value in descriptor_pb2.FieldDescriptorProto.Type.items()}
_LABELS = {value: name[len("LABEL_") :].lower() for name, value in descriptor_pb2.FieldDescriptorProto.Label.items()}


#: Only the protocol's own packages are compared (their imports, the well-known types, come with the compiler).
JUMPSTARTER_PACKAGE = "jumpstarter"


@dataclass(frozen=True)
class SchemaChange:
    """One element added, removed or changed. `element` is service, method, message, field, enum or
    enum_value; `name` its full name; old/new describe it (None when absent)."""

    change: str  # "added", "removed" or "changed"
    element: str
    name: str
    old: str | None = None
    new: str | None = None


def _field_text(field: descriptor_pb2.FieldDescriptorProto) -> str:
    kind = field.type_name.lstrip(".") if field.type_name else _TYPE_NAMES.get(field.type, str(field.type))
    label = _LABELS.get(field.label, "")
    prefix = "repeated " if label == "repeated" else "optional " if field.proto3_optional else ""
    return f"{prefix}{kind} = {field.number}"


def _method_text(method: descriptor_pb2.MethodDescriptorProto) -> str:
    request = ("stream " if method.client_streaming else "") + method.input_type.lstrip(".")
    response = ("stream " if method.server_streaming else "") + method.output_type.lstrip(".")
    return f"({request}) returns ({response})"


def _index(descriptor_set: bytes) -> dict[str, dict[str, str]]:
    """element kind -> full name -> a description; a change in the description is a change of the element."""
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(descriptor_set)
    except DecodeError as err:
        raise ProtocolError(f"not a serialized FileDescriptorSet: {err}") from None
    out: dict[str, dict[str, str]] = {k: {} for k in ("service", "method", "message", "field", "enum", "enum_value")}

    def add_enum(enum: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        name = f"{scope}.{enum.name}" if scope else enum.name
        out["enum"][name] = "enum"
        for value in enum.value:
            out["enum_value"][f"{name}.{value.name}"] = str(value.number)

    def add_message(message: descriptor_pb2.DescriptorProto, scope: str) -> None:
        name = f"{scope}.{message.name}" if scope else message.name
        out["message"][name] = "map entry" if message.options.map_entry else "message"
        for field in message.field:
            out["field"][f"{name}.{field.name}"] = _field_text(field)
        for nested in message.nested_type:
            add_message(nested, name)
        for enum in message.enum_type:
            add_enum(enum, name)

    for file in fds.file:
        if not file.package.startswith(JUMPSTARTER_PACKAGE):
            continue  # google.protobuf, google.api...: the compiler's, not the protocol's
        for message in file.message_type:
            add_message(message, file.package)
        for enum in file.enum_type:
            add_enum(enum, file.package)
        for service in file.service:
            name = f"{file.package}.{service.name}" if file.package else service.name
            out["service"][name] = "service"
            for method in service.method:
                out["method"][f"/{name}/{method.name}"] = _method_text(method)
    return out


def diff_schemas(old: bytes, new: bytes) -> list[SchemaChange]:
    """Everything added, removed or changed (in type, number, label or stream kind) from `old` to `new`.

    Elements inside an added or removed message, service or enum are not listed again.
    """
    if old == new:
        return []
    a, b = _index(old), _index(new)
    changes: list[SchemaChange] = []
    parents = {"field": "message", "method": "service", "enum_value": "enum"}
    for element in ("service", "method", "message", "field", "enum", "enum_value"):
        old_items, new_items = a[element], b[element]
        parent = parents.get(element)
        for name in sorted(old_items.keys() | new_items.keys()):
            before, after = old_items.get(name), new_items.get(name)
            if before == after:
                continue
            if parent is not None:
                owner = name.rsplit("/", 1)[0].lstrip("/") if element == "method" else name.rsplit(".", 1)[0]
                if (owner in a[parent]) != (owner in b[parent]):
                    continue  # its service/message/enum was added or removed as a whole
            change = "added" if before is None else "removed" if after is None else "changed"
            changes.append(SchemaChange(change=change, element=element, name=name, old=before, new=after))
    return changes


def schema_summary(descriptor_set: bytes) -> dict[str, Any]:
    """Counts of services, methods and messages, for headers."""
    index = _index(descriptor_set)
    return {k: len(index[k]) for k in ("service", "method", "message")}
