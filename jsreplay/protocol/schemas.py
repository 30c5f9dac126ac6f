"""The schemas jsreplay ships, one per Jumpstarter protocol line, and loading one named by `--schema`.

- `v0.9.0`: what jumpstarter-protocol 0.9.0 (PyPI) speaks (protos/v0.9.0);
- `head`: the development line after 0.9.0 (protos/head: GetServiceEndpoints, TelemetryService, no
  AuditStream, new fields);
- `union` (the default, `descriptors.binpb`): the development line plus what 0.9.0 had and it dropped
  (AuditStream), so a recording of either line decodes by name.

`--schema` takes one of those names, a `.proto` tree (a directory, compiled with grpcio-tools, which must be
installed) or a serialized `FileDescriptorSet` file.
"""

from __future__ import annotations

import tempfile
from importlib import resources
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

from jsreplay.protocol.registry import DescriptorSetError, Registry

#: Shipped schema names -> the resource file under jsreplay/protocol/.
SHIPPED = {"union": "descriptors.binpb", "v0.9.0": "schemas/v0.9.0.binpb", "head": "schemas/head.binpb"}
ALIASES = {"0.9.0": "v0.9.0", "default": "union", "dev": "head"}
DEFAULT = "union"


class SchemaError(Exception):
    """A `--schema` that names nothing loadable; the message says what was tried."""


def shipped(name: str) -> bytes:
    """The serialized FileDescriptorSet of a shipped schema (`union`, `v0.9.0`, `head`)."""
    key = ALIASES.get(name, name)
    if key not in SHIPPED:
        raise SchemaError(f"no shipped schema named {name!r} (shipped: {', '.join(SHIPPED)})")
    return resources.files("jsreplay.protocol").joinpath(SHIPPED[key]).read_bytes()


def compile_protos(proto_root: Path) -> bytes:
    """Compile every .proto under `proto_root` (plus the well-known types they import) into a FileDescriptorSet.

    Input files go in sorted order and protoc's output is deterministic, so a tree always gives the same bytes."""
    try:
        import grpc_tools
        from grpc_tools import protoc
    except ImportError:
        raise SchemaError(f"compiling {proto_root} needs grpcio-tools (pip install grpcio-tools)") from None
    root = proto_root.resolve()
    files = sorted(root.rglob("*.proto"), key=lambda p: p.relative_to(root).as_posix())
    if not files:
        raise SchemaError(f"no .proto files under {root}")
    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="jsreplay-descriptors-") as tmp:
        out = Path(tmp) / "descriptors.binpb"
        args = ["grpc_tools.protoc", f"--proto_path={root}", f"--proto_path={include}", "--include_imports",
                f"--descriptor_set_out={out}", *(str(f) for f in files)]  # fmt: skip
        if protoc.main(args) != 0:
            raise SchemaError(f"protoc could not compile {root} (see its messages above)")
        return out.read_bytes()


def load_schema(spec: str) -> bytes:
    """A `--schema` value -> a serialized FileDescriptorSet, checked to load as a Registry."""
    path = Path(spec)
    if path.is_dir():
        data = compile_protos(path)
    elif path.is_file():
        data = path.read_bytes()
    elif ALIASES.get(spec, spec) in SHIPPED:
        return shipped(spec)
    else:
        raise SchemaError(f"{spec!r} is neither a shipped schema ({', '.join(SHIPPED)}), a .proto tree nor a file")
    try:
        Registry(data)
    except DescriptorSetError as err:
        raise SchemaError(f"{spec}: {err}") from None
    return data


def registry_for(spec: str | None) -> Registry | None:
    """The registry for a `--schema` value, or None when none was given (use the cassette's own)."""
    return None if spec is None else Registry.for_descriptor_set(load_schema(spec))


# ------------------------------------------------------------------------------------------------- the union


def union(newer: bytes, older: bytes) -> bytes:
    """`newer` plus whatever `older` declares that `newer` lacks (files, messages, fields, enum values,
    services, methods), so messages of either line decode by name. Where both declare an element, `newer`'s
    declaration wins."""
    new, old = _parse(newer), _parse(older)
    by_name = {f.name: f for f in new.file}
    for file in old.file:
        mine = by_name.get(file.name)
        if mine is None:
            new.file.append(file)
            continue
        _merge_repeated(mine.message_type, file.message_type, _merge_message)
        _merge_repeated(mine.enum_type, file.enum_type, _merge_enum)
        _merge_repeated(mine.service, file.service, _merge_service)
        for dep in file.dependency:
            if dep not in mine.dependency:
                mine.dependency.append(dep)
    return new.SerializeToString(deterministic=True)


def _parse(data: bytes) -> descriptor_pb2.FileDescriptorSet:
    fds = descriptor_pb2.FileDescriptorSet()
    try:
        fds.ParseFromString(data)
    except DecodeError as err:
        raise SchemaError(f"not a serialized FileDescriptorSet: {err}") from None
    return fds


def _merge_repeated(mine, theirs, merge) -> None:  # type: ignore[no-untyped-def]
    names = {item.name: item for item in mine}
    for item in theirs:
        if item.name in names:
            if merge is not None:
                merge(names[item.name], item)
        else:
            mine.add().CopyFrom(item)


def _merge_message(mine: descriptor_pb2.DescriptorProto, theirs: descriptor_pb2.DescriptorProto) -> None:
    numbers = {f.number for f in mine.field}
    names = {f.name for f in mine.field}
    for field in theirs.field:
        if field.number not in numbers and field.name not in names:
            mine.field.add().CopyFrom(field)
    _merge_repeated(mine.nested_type, theirs.nested_type, _merge_message)
    _merge_repeated(mine.enum_type, theirs.enum_type, _merge_enum)


def _merge_enum(mine: descriptor_pb2.EnumDescriptorProto, theirs: descriptor_pb2.EnumDescriptorProto) -> None:
    numbers = {v.number for v in mine.value}
    for value in theirs.value:
        if value.number not in numbers and value.name not in {v.name for v in mine.value}:
            mine.value.add().CopyFrom(value)


def _merge_service(mine: descriptor_pb2.ServiceDescriptorProto, theirs: descriptor_pb2.ServiceDescriptorProto) -> None:
    _merge_repeated(mine.method, theirs.method, None)
