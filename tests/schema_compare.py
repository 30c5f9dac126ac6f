"""Compare two protobuf schemas for wire-relevant differences.

``compare_file_sets(expected, actual)`` walks two sets of ``FileDescriptorProto`` and returns a
list of human-readable differences, e.g. ``"jumpstarter.v1.DialResponse.router_token: number 2 != 3"``
(always *expected* value first, *actual* second). An empty list means the schemas agree.

Compared: files present, package, syntax, imports (except google/api/*), messages (recursively
nested), map-entry-ness, oneofs, fields (number, type, label, type_name, oneof membership,
proto3_optional, default_value, the ``packed`` option), enums and their values, services and
methods (input/output types, client/server streaming). Ignored: json_name, declaration order,
source info and all other options (they do not change the wire format).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeAlias, TypeVar

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor_pool import DescriptorPool

FileSetLike: TypeAlias = descriptor_pb2.FileDescriptorSet | Iterable[descriptor_pb2.FileDescriptorProto]

_FDP = descriptor_pb2.FieldDescriptorProto
_IGNORED_DEPENDENCY_PREFIXES = ("google/api/",)

_T = TypeVar("_T")


def load_file_set(path: Path | str) -> descriptor_pb2.FileDescriptorSet:
    """Parse a serialized FileDescriptorSet (e.g. ``jsreplay/protocol/descriptors.binpb``)."""
    return descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())


def file_set_from_pool(pool: DescriptorPool, file_names: Iterable[str]) -> descriptor_pb2.FileDescriptorSet:
    """Export the named files of a DescriptorPool (e.g. ``descriptor_pool.Default()``) as a FileDescriptorSet."""
    fds = descriptor_pb2.FileDescriptorSet()
    for name in file_names:
        pool.FindFileByName(name).CopyToProto(fds.file.add())
    return fds


def _files(files: FileSetLike) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    items = files.file if isinstance(files, descriptor_pb2.FileDescriptorSet) else files
    return {f.name: f for f in items}


def _by_name(
    diffs: list[str],
    what: str,
    scope: str,
    expected: Iterable[_T],
    actual: Iterable[_T],
    name: Callable[[_T], str],
    compare: Callable[[str, _T, _T], None],
) -> None:
    """Report items missing from / unexpected in ``actual``; call ``compare`` on pairs with equal names."""
    exp = {name(x): x for x in expected}
    act = {name(x): x for x in actual}
    for key in sorted(exp.keys() - act.keys()):
        diffs.append(f"{scope}{key}: {what} missing")
    for key in sorted(act.keys() - exp.keys()):
        diffs.append(f"{scope}{key}: unexpected {what}")
    for key in sorted(exp.keys() & act.keys()):
        compare(f"{scope}{key}", exp[key], act[key])


def _check(diffs: list[str], where: str, attr: str, expected: object, actual: object) -> None:
    if expected != actual:
        diffs.append(f"{where}: {attr} {expected} != {actual}")


def _compare_enum(
    diffs: list[str], where: str, exp: descriptor_pb2.EnumDescriptorProto, act: descriptor_pb2.EnumDescriptorProto
) -> None:
    def value(w: str, e: descriptor_pb2.EnumValueDescriptorProto, a: descriptor_pb2.EnumValueDescriptorProto) -> None:
        _check(diffs, w, "number", e.number, a.number)

    _by_name(diffs, "enum value", f"{where}.", exp.value, act.value, lambda v: v.name, value)


def _oneof_of(msg: descriptor_pb2.DescriptorProto, field: descriptor_pb2.FieldDescriptorProto) -> str | None:
    return msg.oneof_decl[field.oneof_index].name if field.HasField("oneof_index") else None


def _packed(field: descriptor_pb2.FieldDescriptorProto) -> bool | None:
    return field.options.packed if field.options.HasField("packed") else None


def _compare_message(
    diffs: list[str], where: str, exp: descriptor_pb2.DescriptorProto, act: descriptor_pb2.DescriptorProto
) -> None:
    _check(diffs, where, "map_entry", exp.options.map_entry, act.options.map_entry)
    _check(diffs, where, "oneofs", sorted(o.name for o in exp.oneof_decl), sorted(o.name for o in act.oneof_decl))

    def field(w: str, e: descriptor_pb2.FieldDescriptorProto, a: descriptor_pb2.FieldDescriptorProto) -> None:
        _check(diffs, w, "number", e.number, a.number)
        _check(diffs, w, "type", _FDP.Type.Name(e.type), _FDP.Type.Name(a.type))
        _check(diffs, w, "label", _FDP.Label.Name(e.label), _FDP.Label.Name(a.label))
        _check(diffs, w, "type_name", e.type_name or None, a.type_name or None)
        _check(diffs, w, "oneof", _oneof_of(exp, e), _oneof_of(act, a))
        _check(diffs, w, "proto3_optional", e.proto3_optional, a.proto3_optional)
        _check(diffs, w, "default_value", e.default_value or None, a.default_value or None)
        _check(diffs, w, "packed", _packed(e), _packed(a))

    _by_name(diffs, "field", f"{where}.", exp.field, act.field, lambda f: f.name, field)
    _by_name(
        diffs,
        "message",
        f"{where}.",
        exp.nested_type,
        act.nested_type,
        lambda m: m.name,
        lambda w, e, a: _compare_message(diffs, w, e, a),
    )
    _by_name(
        diffs,
        "enum",
        f"{where}.",
        exp.enum_type,
        act.enum_type,
        lambda e: e.name,
        lambda w, e, a: _compare_enum(diffs, w, e, a),
    )


def _compare_service(
    diffs: list[str], where: str, exp: descriptor_pb2.ServiceDescriptorProto, act: descriptor_pb2.ServiceDescriptorProto
) -> None:
    def method(w: str, e: descriptor_pb2.MethodDescriptorProto, a: descriptor_pb2.MethodDescriptorProto) -> None:
        _check(diffs, w, "input_type", e.input_type, a.input_type)
        _check(diffs, w, "output_type", e.output_type, a.output_type)
        _check(diffs, w, "client_streaming", e.client_streaming, a.client_streaming)
        _check(diffs, w, "server_streaming", e.server_streaming, a.server_streaming)

    _by_name(diffs, "method", f"{where}.", exp.method, act.method, lambda m: m.name, method)


def _deps(f: descriptor_pb2.FileDescriptorProto) -> list[str]:
    return sorted(d for d in f.dependency if not d.startswith(_IGNORED_DEPENDENCY_PREFIXES))


def _compare_file(
    diffs: list[str], exp: descriptor_pb2.FileDescriptorProto, act: descriptor_pb2.FileDescriptorProto
) -> None:
    where = exp.name
    _check(diffs, where, "package", exp.package, act.package)
    _check(diffs, where, "syntax", exp.syntax or "proto2", act.syntax or "proto2")
    _check(diffs, where, "imports", _deps(exp), _deps(act))
    if exp.package != act.package:
        return  # every type below would differ; the package line says it all
    scope = f"{exp.package}." if exp.package else ""
    _by_name(
        diffs,
        "message",
        scope,
        exp.message_type,
        act.message_type,
        lambda m: m.name,
        lambda w, e, a: _compare_message(diffs, w, e, a),
    )
    _by_name(
        diffs,
        "enum",
        scope,
        exp.enum_type,
        act.enum_type,
        lambda e: e.name,
        lambda w, e, a: _compare_enum(diffs, w, e, a),
    )
    _by_name(
        diffs,
        "service",
        scope,
        exp.service,
        act.service,
        lambda s: s.name,
        lambda w, e, a: _compare_service(diffs, w, e, a),
    )
    _by_name(diffs, "extension", scope, exp.extension, act.extension, lambda x: x.name, lambda w, e, a: None)


def compare_file_sets(
    expected: FileSetLike,
    actual: FileSetLike,
    *,
    only: Iterable[str] | None = None,
) -> list[str]:
    """Return human-readable wire-schema differences between ``expected`` and ``actual``.

    ``expected``/``actual`` are FileDescriptorSets or iterables of FileDescriptorProto (use
    :func:`file_set_from_pool` for a DescriptorPool). ``only`` restricts the comparison to these
    file names (each must be present on both sides); by default all files of both sides are compared.
    """
    exp_files: Mapping[str, descriptor_pb2.FileDescriptorProto] = _files(expected)
    act_files: Mapping[str, descriptor_pb2.FileDescriptorProto] = _files(actual)
    if only is not None:
        wanted = set(only)
        exp_files = {k: v for k, v in exp_files.items() if k in wanted}
        act_files = {k: v for k, v in act_files.items() if k in wanted}
        diffs = [f"{name}: file missing from expected" for name in sorted(wanted - exp_files.keys())]
    else:
        diffs = []
    _by_name(
        diffs,
        "file",
        "",
        exp_files.values(),
        act_files.values(),
        lambda f: f.name,
        lambda w, e, a: _compare_file(diffs, e, a),
    )
    return diffs
