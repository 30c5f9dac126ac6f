"""The protocol registry: method -> message types and stream kinds, and decode/encode of raw message bytes.

A registry is built from a serialized FileDescriptorSet: jsreplay's own (built from protos/) or the one a
cassette embeds, so an old cassette decodes with the schema it was recorded with. Each registry has its own
descriptor pool, so two schemas never clash in one process.

Decoded messages are plain Python values ("readable structures"): a message is a dict of the fields that are
set, by name; enums are their value names; `google.protobuf.Value`/`Struct`/`ListValue` become JSON-like
values; bytes stay bytes. Fields the schema does not know are never dropped: they appear under the key
`"#<number>"` as a list of `UnknownField`, and `encode` writes them back.
"""

from __future__ import annotations

import collections
import enum
import functools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet


class ProtocolError(Exception):
    """Base class for schema and message decoding problems."""


class UnknownTypeError(ProtocolError):
    pass


class MessageDecodeError(ProtocolError):
    pass


class MessageEncodeError(ProtocolError):
    pass


class DescriptorSetError(ProtocolError):
    """A serialized schema (a cassette's embedded descriptor_set) that cannot be loaded or would break decoding."""


# Bounds on a schema, all far above real ones (jsreplay's own: 13 kB, 10 files, types nested 2 deep). A cassette
# header is data like any other: these keep loading a hostile one short and its memory small.
MAX_DESCRIPTOR_SET_BYTES = 16 << 20
MAX_DESCRIPTOR_FILES = 1_024  # each costs the pool about 1 KB; Jumpstarter's schema has a dozen
MAX_TYPE_NESTING = 32  # message types declared inside message types
# Message and enum types in all: each becomes a descriptor and a message class of about 6 KB, so with the file
# limit this bounds what any schema costs in memory to about 13 MB; Jumpstarter's own has under two hundred.
MAX_SCHEMA_TYPES = 2_048


class StreamKind(enum.Enum):
    UNARY = "unary"
    SERVER_STREAMING = "server_streaming"
    CLIENT_STREAMING = "client_streaming"
    BIDI_STREAMING = "bidi_streaming"


@dataclass(frozen=True)
class MethodInfo:
    path: str  # "/jumpstarter.v1.ControllerService/Dial", as on the wire
    service: str  # "jumpstarter.v1.ControllerService"
    name: str  # "Dial"
    request_type: str  # full message names
    response_type: str
    client_streaming: bool
    server_streaming: bool

    @property
    def kind(self) -> StreamKind:
        if self.client_streaming and self.server_streaming:
            return StreamKind.BIDI_STREAMING
        if self.client_streaming:
            return StreamKind.CLIENT_STREAMING
        if self.server_streaming:
            return StreamKind.SERVER_STREAMING
        return StreamKind.UNARY


class WireType(enum.IntEnum):
    VARINT = 0
    FIXED64 = 1
    LENGTH_DELIMITED = 2
    START_GROUP = 3
    FIXED32 = 5


@dataclass(frozen=True)
class UnknownField:
    """A field the schema does not know, kept with its wire type so it can be written back."""

    number: int
    wire_type: WireType
    value: int | bytes


def unknown_key(number: int) -> str:
    return f"#{number}"


_WKT_VALUE = "google.protobuf.Value"
_WKT_STRUCT = "google.protobuf.Struct"
_WKT_LIST = "google.protobuf.ListValue"


class Registry:
    """Message types and methods of one schema."""

    def __init__(self, descriptor_set: bytes) -> None:
        """Load and check a serialized FileDescriptorSet; any way it is unusable raises DescriptorSetError here,
        so that nothing later (decoding, encoding, building message classes) meets a broken schema.

        Linear in the set's size: files are added in an import order computed once (Kahn's algorithm)."""
        self.descriptor_set = descriptor_set
        if len(descriptor_set) > MAX_DESCRIPTOR_SET_BYTES:
            raise DescriptorSetError(
                f"the schema is larger than {MAX_DESCRIPTOR_SET_BYTES >> 20} MiB ({len(descriptor_set)} bytes)"
            )
        fds = descriptor_pb2.FileDescriptorSet()
        try:
            fds.ParseFromString(descriptor_set)
        except (DecodeError, RuntimeError, ValueError) as err:
            raise DescriptorSetError(f"not a serialized FileDescriptorSet: {err}") from None
        if len(fds.file) > MAX_DESCRIPTOR_FILES:
            raise DescriptorSetError(f"the schema has more than {MAX_DESCRIPTOR_FILES} files ({len(fds.file)})")
        types = _count_types(fds.file)
        if types > MAX_SCHEMA_TYPES:
            raise DescriptorSetError(f"the schema has more than {MAX_SCHEMA_TYPES} message and enum types ({types})")
        self._pool = descriptor_pool.DescriptorPool()
        order = _import_order(fds.file)
        for file in order:
            _check_nesting(file)
            try:
                self._pool.Add(file)
            except Exception as err:  # protobuf raises TypeError, KeyError, its own errors... for bad descriptors
                raise DescriptorSetError(f"cannot load {file.name!r}: {err}") from None
        self.files = tuple(f.name for f in fds.file)
        self._methods: dict[str, MethodInfo] = {}
        messages: list[Descriptor] = []
        for file in order:
            try:
                loaded = self._pool.FindFileByName(file.name)
                messages.extend(_check_messages(loaded))
                self._add_methods(loaded)
            except ProtocolError:
                raise
            except Exception as err:
                raise DescriptorSetError(f"cannot load {file.name!r}: {err}") from None
        self._classes = _message_classes(messages)
        self._with_maps = _types_reaching_maps(messages)

    def _add_methods(self, file: FileDescriptor) -> None:
        # From the pool's descriptors, not the file's protos: type names there may be relative ("M", "pkg.M").
        for service in file.services_by_name.values():
            for m in service.methods:
                info = MethodInfo(
                    path=f"/{service.full_name}/{m.name}",
                    service=service.full_name,
                    name=m.name,
                    request_type=m.input_type.full_name,
                    response_type=m.output_type.full_name,
                    client_streaming=m.client_streaming,
                    server_streaming=m.server_streaming,
                )
                self._methods[info.path] = info

    @classmethod
    @functools.cache
    def default(cls) -> Registry:
        """The schema this jsreplay was built with (protos/, compiled into descriptors.binpb)."""
        return cls(resources.files("jsreplay.protocol").joinpath("descriptors.binpb").read_bytes())

    @classmethod
    def for_descriptor_set(cls, descriptor_set: bytes) -> Registry:
        """The registry for a cassette's embedded schema, or the default one when it embeds none."""
        if not descriptor_set:
            return cls.default()
        return _cached_registry(descriptor_set)

    # ------------------------------------------------------------------------------------------------ methods

    def method(self, path: str) -> MethodInfo | None:
        return self._methods.get(path)

    def kind_of(self, path: str) -> StreamKind:
        """How a call on `path` streams; a method the schema does not know is served as bidi (the most general)."""
        info = self._methods.get(path)
        return info.kind if info is not None else StreamKind.BIDI_STREAMING

    def methods(self) -> list[MethodInfo]:
        return list(self._methods.values())

    # ------------------------------------------------------------------------------------------------ messages

    def descriptor(self, type_name: str) -> Descriptor:
        try:
            return self._pool.FindMessageTypeByName(type_name)
        except KeyError:
            raise UnknownTypeError(f"unknown message type {type_name}") from None

    def message_class(self, type_name: str) -> type[Message]:
        cls = self._classes.get(type_name)
        return cls if cls is not None else message_factory.GetMessageClass(self.descriptor(type_name))

    def reaches_maps(self, type_name: str) -> bool:
        """Whether a map field or a Struct/Value/ListValue is reachable from this message type's fields."""
        return type_name in self._with_maps

    def parse(self, type_name: str, data: bytes) -> Message:
        message = self.message_class(type_name)()
        try:
            message.ParseFromString(data)
        except (DecodeError, RuntimeError, ValueError) as err:
            raise MessageDecodeError(f"cannot decode {len(data)} bytes as {type_name}: {err}") from None
        return message

    def decode(self, type_name: str, data: bytes) -> dict[str, Any]:
        """Raw bytes -> readable structure (see the module docstring)."""
        value = message_to_value(self.parse(type_name, data))
        if not isinstance(value, dict):  # a top-level Value/ListValue; wrap so callers always get a dict
            return {"value": value}
        return value

    def encode(self, type_name: str, value: Mapping[str, Any]) -> bytes:
        """Readable structure -> raw bytes; the inverse of `decode`."""
        return value_to_bytes(self.descriptor(type_name), value)

    def decode_request(self, path: str, data: bytes) -> dict[str, Any] | None:
        info = self.method(path)
        return None if info is None else self.decode(info.request_type, data)

    def decode_response(self, path: str, data: bytes) -> dict[str, Any] | None:
        info = self.method(path)
        return None if info is None else self.decode(info.response_type, data)


def _import_order(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> list[descriptor_pb2.FileDescriptorProto]:
    """The files, each after the files it imports (Kahn's algorithm: one pass over files and imports)."""
    by_name: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for file in files:
        if file.name in by_name:
            raise DescriptorSetError(f"the schema lists {file.name!r} twice")
        by_name[file.name] = file
    missing = sorted({d for f in by_name.values() for d in f.dependency if d not in by_name})
    if missing:
        raise DescriptorSetError(f"the schema lacks imports: {_names(missing)}")
    waiting: dict[str, int] = {}
    importers: dict[str, list[str]] = collections.defaultdict(list)
    for name, file in by_name.items():
        imports = set(file.dependency)
        waiting[name] = len(imports)
        for dep in imports:
            importers[dep].append(name)
    ready = collections.deque(name for name, n in waiting.items() if n == 0)
    order: list[descriptor_pb2.FileDescriptorProto] = []
    while ready:
        name = ready.popleft()
        order.append(by_name[name])
        for importer in importers.get(name, ()):
            waiting[importer] -= 1
            if waiting[importer] == 0:
                ready.append(importer)
    if len(order) < len(by_name):
        raise DescriptorSetError(f"import cycle among {_names(sorted(n for n, w in waiting.items() if w))}")
    return order


def _names(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


def _count_types(files: Iterable[descriptor_pb2.FileDescriptorProto]) -> int:
    count = 0
    for file in files:
        stack = list(file.message_type)
        count += len(file.enum_type)
        while stack:
            message = stack.pop()
            count += 1 + len(message.enum_type)
            stack.extend(message.nested_type)
    return count


def _check_nesting(file: descriptor_pb2.FileDescriptorProto) -> None:
    stack = [(message, 1) for message in file.message_type]
    while stack:
        message, depth = stack.pop()
        if depth > MAX_TYPE_NESTING:
            raise DescriptorSetError(f"{file.name!r}: message types nested more than {MAX_TYPE_NESTING} deep")
        stack.extend((nested, depth + 1) for nested in message.nested_type)


def _shape(descriptor: Descriptor) -> tuple[tuple[Any, ...], ...]:
    """What decoding and encoding rely on in a message type: its fields' names, numbers, types and oneofs."""
    return tuple(
        (
            f.name,
            f.number,
            f.type,
            f.is_repeated,
            f.message_type.full_name if f.message_type is not None else None,
            _shape(f.message_type) if f.message_type is not None and f.message_type.GetOptions().map_entry else None,
            f.enum_type.full_name if f.enum_type is not None else None,
            f.containing_oneof.name if f.containing_oneof is not None else None,
        )
        for f in descriptor.fields
    )


# The well-known types that decode/encode treat as JSON values: a schema that declares them must declare them so.
_WKT_SHAPES = {d.full_name: _shape(d) for d in (struct_pb2.Struct.DESCRIPTOR, struct_pb2.Value.DESCRIPTOR,
                                                struct_pb2.ListValue.DESCRIPTOR)}  # fmt: skip


def _check_messages(file: FileDescriptor) -> list[Descriptor]:
    """The message types of a loaded file, nested ones included, each checked to be one decode/encode handle."""
    out: list[Descriptor] = []
    stack: list[Descriptor] = list(file.message_types_by_name.values())
    while stack:
        descriptor = stack.pop()
        out.append(descriptor)
        stack.extend(descriptor.nested_types)
        name = descriptor.full_name
        if descriptor.GetOptions().map_entry:
            fields = {f.name: f for f in descriptor.fields}
            key, value = fields.get("key"), fields.get("value")
            if len(fields) != 2 or key is None or value is None or key.number != 1 or value.number != 2:
                raise DescriptorSetError(f"map entry {name} must have exactly the fields key = 1 and value = 2")
        expected = _WKT_SHAPES.get(name)
        if expected is not None:
            siblings = file.message_types_by_name
            if _shape(descriptor) != expected or not all(n.rsplit(".", 1)[1] in siblings for n in _WKT_SHAPES):
                raise DescriptorSetError(f"{name} is not the well-known type of that name")
            null = descriptor.fields_by_name.get("null_value")
            if null is not None and 0 not in null.enum_type.values_by_number:
                raise DescriptorSetError(f"{null.enum_type.full_name} is not the well-known type of that name")
    return out


def _message_classes(messages: list[Descriptor]) -> dict[str, type[Message]]:
    """A message class for every type, each built after the types its fields use (an iterative depth-first walk).

    protobuf builds the classes of field types recursively, and forgets a class nobody holds: so they are built
    leaves first (no deep recursion for a long chain of types) and kept here (built once, not on each use)."""
    classes: dict[str, type[Message]] = {}
    seen: set[str] = set()
    try:
        for root in messages:
            if root.full_name in seen:
                continue
            seen.add(root.full_name)
            stack = [(root, iter(root.fields))]
            while stack:
                descriptor, fields = stack[-1]
                for field in fields:
                    used = field.message_type
                    if used is not None and used.full_name not in seen:
                        seen.add(used.full_name)
                        stack.append((used, iter(used.fields)))
                        break
                else:
                    stack.pop()
                    classes[descriptor.full_name] = message_factory.GetMessageClass(descriptor)
    except RecursionError:  # a cycle of types so long that protobuf's recursive class building cannot follow it
        raise DescriptorSetError("message types refer to each other in too long a cycle") from None
    except Exception as err:
        raise DescriptorSetError(f"cannot build message classes: {err}") from None
    return classes


def _types_reaching_maps(messages: list[Descriptor]) -> frozenset[str]:
    """The message types from which a map field or a Struct/Value/ListValue is reachable (decoded values sort
    their keys there): one backward walk over the field types, not a walk per type."""
    used_by: dict[str, list[str]] = collections.defaultdict(list)
    found: set[str] = set()
    for descriptor in messages:
        name = descriptor.full_name
        if name in _WKT_SHAPES:
            found.add(name)
        for field in descriptor.fields:
            used = field.message_type
            if used is not None:
                used_by[used.full_name].append(name)
                if used.GetOptions().map_entry:
                    found.add(name)
    queue = collections.deque(found)
    while queue:
        for user in used_by.get(queue.popleft(), ()):
            if user not in found:
                found.add(user)
                queue.append(user)
    return frozenset(found)


@functools.lru_cache(maxsize=16)
def _cached_registry(descriptor_set: bytes) -> Registry:
    return Registry(descriptor_set)


# ---------------------------------------------------------------------------------------------------- decode


def _scalar_to_value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        enum_type: EnumDescriptor = field.enum_type
        named = enum_type.values_by_number.get(value)
        return named.name if named is not None else value
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return message_to_value(value)
    return value


def message_to_value(message: Message) -> Any:
    """A protobuf message as a readable structure, unknown fields included."""
    name = message.DESCRIPTOR.full_name
    if name == _WKT_VALUE:
        return _wkt_value(message)
    if name == _WKT_STRUCT:
        return {k: _wkt_value(v) for k, v in message.fields.items()}
    if name == _WKT_LIST:
        return [_wkt_value(v) for v in message.values]
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _scalar_to_value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_scalar_to_value(field, v) for v in value]
        else:
            out[field.name] = _scalar_to_value(field, value)
    for number, fields in _unknown_fields(message).items():
        out[unknown_key(number)] = fields
    return out


def _wkt_value(message: Any) -> Any:
    kind = message.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "struct_value":
        return message_to_value(message.struct_value)
    if kind == "list_value":
        return message_to_value(message.list_value)
    return getattr(message, kind)


def _unknown_fields(message: Message) -> dict[int, list[UnknownField]]:
    out: dict[int, list[UnknownField]] = {}
    for item in UnknownFieldSet(message):
        wire_type = WireType(item.wire_type)
        data = item.data
        if wire_type == WireType.START_GROUP:  # groups are long deprecated; keep their presence, not content
            data = b""
        out.setdefault(item.field_number, []).append(UnknownField(item.field_number, wire_type, data))
    return out


def iter_unknown_paths(value: Any, prefix: str = "") -> Iterator[str]:
    """Paths ("reports[0].#7") of every unknown field in a decoded structure."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(key, str) and key.startswith("#"):
                yield path
            else:
                yield from iter_unknown_paths(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from iter_unknown_paths(item, f"{prefix}[{i}]")


# ---------------------------------------------------------------------------------------------------- encode


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_unknown(field: UnknownField) -> bytes:
    tag = _varint((field.number << 3) | int(field.wire_type))
    value = field.value
    match field.wire_type:
        case WireType.VARINT if isinstance(value, int):
            return tag + _varint(value)
        case WireType.FIXED64 if isinstance(value, int):
            return tag + (value & ((1 << 64) - 1)).to_bytes(8, "little")
        case WireType.FIXED32 if isinstance(value, int):
            return tag + (value & 0xFFFFFFFF).to_bytes(4, "little")
        case WireType.LENGTH_DELIMITED if isinstance(value, bytes):
            return tag + _varint(len(value)) + value
    raise MessageEncodeError(f"cannot encode unknown field #{field.number} of wire type {field.wire_type.name}")


def _wkt_to_message(descriptor: Descriptor, value: Any) -> bytes:
    """JSON-like value -> serialized Value/Struct/ListValue."""
    pool_file = descriptor.file
    value_desc = pool_file.message_types_by_name["Value"]
    struct_desc = pool_file.message_types_by_name["Struct"]
    list_desc = pool_file.message_types_by_name["ListValue"]
    if descriptor.full_name == _WKT_STRUCT:
        msg = message_factory.GetMessageClass(struct_desc)()
        if not isinstance(value, Mapping):
            raise MessageEncodeError(f"Struct needs a mapping, not {type(value).__name__}")
        for k, v in value.items():
            msg.fields[k].MergeFromString(_wkt_to_message(value_desc, v))
        return msg.SerializeToString()
    if descriptor.full_name == _WKT_LIST:
        msg = message_factory.GetMessageClass(list_desc)()
        if not isinstance(value, list):
            raise MessageEncodeError(f"ListValue needs a list, not {type(value).__name__}")
        for v in value:
            msg.values.add().MergeFromString(_wkt_to_message(value_desc, v))
        return msg.SerializeToString()
    msg = message_factory.GetMessageClass(value_desc)()
    if value is None:
        msg.null_value = 0
    elif isinstance(value, bool):
        msg.bool_value = value
    elif isinstance(value, int | float):
        msg.number_value = float(value)
    elif isinstance(value, str):
        msg.string_value = value
    elif isinstance(value, Mapping):
        msg.struct_value.MergeFromString(_wkt_to_message(struct_desc, value))
    elif isinstance(value, list):
        msg.list_value.MergeFromString(_wkt_to_message(list_desc, value))
    else:
        raise MessageEncodeError(f"cannot put a {type(value).__name__} in a google.protobuf.Value")
    return msg.SerializeToString()


def _scalar_from_value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM and isinstance(value, str):
        named = field.enum_type.values_by_name.get(value)
        if named is None:
            raise MessageEncodeError(f"{field.full_name}: no enum value named {value!r}")
        return named.number
    return value


def value_to_bytes(descriptor: Descriptor, value: Any) -> bytes:
    if descriptor.full_name in (_WKT_VALUE, _WKT_STRUCT, _WKT_LIST):
        return _wkt_to_message(descriptor, value)
    if not isinstance(value, Mapping):
        raise MessageEncodeError(f"{descriptor.full_name} needs a mapping, not {type(value).__name__}")
    message = message_factory.GetMessageClass(descriptor)()
    unknown = b""
    try:
        for key, item in value.items():
            if isinstance(key, str) and key.startswith("#"):
                unknown += b"".join(encode_unknown(f) for f in item)
                continue
            field = descriptor.fields_by_name.get(key)
            if field is None:
                raise MessageEncodeError(f"{descriptor.full_name} has no field {key!r}")
            target = getattr(message, field.name)
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value_field = field.message_type.fields_by_name["value"]
                for k, v in item.items():
                    if value_field.message_type is not None:
                        target[k].MergeFromString(value_to_bytes(value_field.message_type, v))
                    else:
                        target[k] = _scalar_from_value(value_field, v)
            elif field.is_repeated:
                for v in item:
                    if field.message_type is not None:
                        target.add().MergeFromString(value_to_bytes(field.message_type, v))
                    else:
                        target.append(_scalar_from_value(field, v))
            elif field.message_type is not None:
                target.MergeFromString(value_to_bytes(field.message_type, item))
                if not item and field.message_type.full_name != _WKT_VALUE:
                    target.SetInParent()  # an empty dict still means "set"
            else:
                setattr(message, field.name, _scalar_from_value(field, item))
    except (TypeError, ValueError, AttributeError) as err:
        raise MessageEncodeError(f"{descriptor.full_name}: {err}") from None
    return message.SerializeToString() + unknown


# ------------------------------------------------------------------------------------------- unknown fields


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, i
        shift += 7


def _map_entry(data: bytes) -> tuple[Any, Any] | None:
    """(key, value) when `data` looks like a map entry: only fields 1 and 2, each at most once, each a varint or
    length-delimited (text when it is UTF-8); None otherwise."""
    found: dict[int, Any] = {}
    i = 0
    try:
        while i < len(data):
            tag, i = _read_varint(data, i)
            number, wire = tag >> 3, tag & 7
            if number not in (1, 2) or number in found:
                return None
            if wire == WireType.VARINT:
                found[number], i = _read_varint(data, i)
            elif wire == WireType.LENGTH_DELIMITED:
                size, i = _read_varint(data, i)
                if i + size > len(data):
                    return None
                raw = data[i : i + size]
                i += size
                try:
                    found[number] = raw.decode()
                except UnicodeDecodeError:
                    found[number] = raw
            else:
                return None
    except ValueError:
        return None
    if 1 not in found:
        return None
    return found[1], found.get(2, "")


def unknown_map(fields: Iterable[Any]) -> dict[Any, Any] | None:
    """An unknown repeated field read as a map (entries: key = 1, value = 2) when every entry looks like one and
    the keys are distinct, else None. Map entries come in whatever order the sender's hash table had, which
    differs between processes: compare them as this dict, not by position."""
    out: dict[Any, Any] = {}
    for field in fields:
        if not isinstance(field, UnknownField) or field.wire_type != WireType.LENGTH_DELIMITED:
            return None
        assert isinstance(field.value, bytes)
        entry = _map_entry(field.value)
        if entry is None or not isinstance(entry[0], str | int) or entry[0] in out:
            return None
        out[entry[0]] = entry[1]
    return out or None


def printable_text(data: bytes) -> str | None:
    """The bytes as text when they are UTF-8 with no control characters but newlines and tabs, else None."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    if not text or any((ch < " " and ch not in "\n\t") or ch == "\x7f" for ch in text):
        return None
    return text
