"""Hostile or damaged embedded schemas: refused when the cassette is opened, as one line naming file and place.

A cassette header's `descriptor_set` is data from the file like any other: the loader must be linear in its
size, bounded, and turn every way it can be wrong (a field of a missing type, an import cycle, a map entry
without `value`, a look-alike of a well-known type...) into a `CorruptCassetteError` at load, so that show,
textconv, diff, replay and verify never meet a broken registry later.
"""

from __future__ import annotations

import dataclasses
import gc
import time
import warnings
from pathlib import Path

import msgpack
import pytest
from click.testing import CliRunner
from google.protobuf import descriptor_pb2 as dpb
from hypothesis import given, settings
from hypothesis import strategies as st

from jsreplay.cassette import format as fmt
from jsreplay.cassette import migrations
from jsreplay.cassette.errors import CassetteError, CorruptCassetteError, TruncatedCassetteWarning
from jsreplay.cassette.format import MAGIC, CassetteReader, read_cassette
from jsreplay.cassette.model import CallStart, ClientMessage, Header, Redaction, Role
from jsreplay.cli.main import EXIT_ERROR, cli
from jsreplay.protocol import registry as reg
from jsreplay.protocol.registry import ProtocolError, Registry


def make_header() -> Header:
    return Header(
        format_version=migrations.FORMAT_VERSION,
        jsreplay_version="0.1.0",
        created_unix_ns=1_700_000_000_000_000_000,
        upstreams=("127.0.0.1:1234",),
        descriptor_set=b"",
        redaction=Redaction(enabled=False),
    )


def file_set(*files: dpb.FileDescriptorProto) -> bytes:
    return dpb.FileDescriptorSet(file=files).SerializeToString()


def write_with_schema(path: Path, descriptor_set: bytes, method: str = "/p.S/Do") -> Path:
    header = dataclasses.replace(make_header(), descriptor_set=descriptor_set)
    events = [
        CallStart(call_id=1, seq=0, t_ns=1, method=method, role=Role.CONTROLLER),
        ClientMessage(call_id=1, seq=1, t_ns=2, data=b"\x0a\x06\x0a\x01a\x12\x01b"),
    ]
    body = b"".join(msgpack.packb(fmt.event_to_record(e), use_bin_type=True) for e in events)
    path.write_bytes(MAGIC + msgpack.packb(fmt.header_to_record(header), use_bin_type=True) + body)
    return path


def service_file(name: str = "s.proto", *, package: str = "p") -> dpb.FileDescriptorProto:
    f = dpb.FileDescriptorProto(name=name, package=package, syntax="proto3")
    f.message_type.add(name="M")
    f.service.add(name="S").method.add(name="Do", input_type=f".{package}.M", output_type=f".{package}.M")
    return f


def map_without_value() -> bytes:
    f = service_file()
    entry = f.message_type[0].nested_type.add(name="XEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=dpb.FieldDescriptorProto.TYPE_STRING, label=1)
    entry.field.add(name="val", number=2, type=dpb.FieldDescriptorProto.TYPE_STRING, label=1)
    f.message_type[0].field.add(name="x", number=1, type=dpb.FieldDescriptorProto.TYPE_MESSAGE, label=3,
                                type_name=".p.M.XEntry")  # fmt: skip
    return file_set(f)


def fake_struct() -> bytes:
    f = dpb.FileDescriptorProto(name="google/protobuf/struct.proto", package="google.protobuf", syntax="proto3")
    f.message_type.add(name="Struct")  # no `fields`: decoding one would raise AttributeError
    s = service_file()
    s.dependency.append(f.name)
    s.message_type[0].field.add(name="s", number=1, type=dpb.FieldDescriptorProto.TYPE_MESSAGE, label=1,
                                type_name=".google.protobuf.Struct")  # fmt: skip
    return file_set(f, s)


def missing_import() -> bytes:
    f = service_file()
    f.dependency.append("gone.proto")
    return file_set(f)


def import_cycle() -> bytes:
    a, b = service_file("a.proto", package="a"), service_file("b.proto", package="b")
    a.dependency.append("b.proto")
    b.dependency.append("a.proto")
    return file_set(a, b)


def duplicate_file() -> bytes:
    return file_set(service_file(), service_file())


def field_of_missing_type() -> bytes:
    f = service_file()
    f.message_type[0].field.add(name="n", number=1, type=dpb.FieldDescriptorProto.TYPE_MESSAGE, label=1,
                                type_name=".p.Nope")  # fmt: skip
    return file_set(f)


def import_chain(n: int, types_per_file: int = 1) -> bytes:
    """n files, each importing the one before and using its message; listed last first (the worst order)."""
    files = []
    for i in range(n):
        f = dpb.FileDescriptorProto(name=f"f{i}.proto", package="p")
        m = f.message_type.add(name=f"M{i}")
        for j in range(1, types_per_file):
            f.message_type.add(name=f"M{i}x{j}")
        if i:
            f.dependency.append(f"f{i - 1}.proto")
            m.field.add(name="prev", number=1, type=dpb.FieldDescriptorProto.TYPE_MESSAGE, label=1,
                        type_name=f".p.M{i - 1}")  # fmt: skip
        files.append(f)
    return file_set(*reversed(files))


HOSTILE = {
    "map entry without value": (map_without_value, "map entry"),
    "look-alike google.protobuf.Struct": (fake_struct, "google.protobuf.Struct"),
    "missing import": (missing_import, "gone.proto"),
    "import cycle": (import_cycle, "import cycle"),
    "duplicate file": (duplicate_file, "s.proto"),
    "field of a missing type": (field_of_missing_type, r"p\.Nope"),
    "not a FileDescriptorSet": (lambda: b"\xff\xff\xff", "FileDescriptorSet"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_descriptor_set_is_refused_on_open_naming_file_and_header(tmp_path: Path, case: str) -> None:
    make, message = HOSTILE[case]
    path = write_with_schema(tmp_path / "hostile.msgpack", make())
    with pytest.raises(ProtocolError, match=message):
        Registry(make())
    with pytest.raises(CorruptCassetteError, match=rf"hostile\.msgpack \(byte {len(MAGIC)}\): .*{message}") as err:
        read_cassette(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("command", ["show", "textconv", "diff", "replay", "verify"])
def test_hostile_descriptor_set_is_one_error_line_in_every_command(tmp_path: Path, command: str) -> None:
    path = write_with_schema(tmp_path / "hostile.msgpack", map_without_value())
    good = write_with_schema(tmp_path / "good.msgpack", file_set(service_file()))
    args = {
        "show": [path],
        "textconv": [path],
        "diff": [good, path],
        "replay": ["--listen", "127.0.0.1:0", "--plaintext", path],
        "verify": ["--listen", "127.0.0.1:0", "--plaintext", "--timeout", "1", path],
    }[command]
    result = CliRunner().invoke(cli, [command, *map(str, args)], catch_exceptions=False)
    assert result.exit_code == EXIT_ERROR
    assert result.stderr.strip().splitlines()[-1].startswith(f"jsreplay: error: {path} (byte {len(MAGIC)}): ")
    assert "Traceback" not in result.stderr


def test_type_names_are_resolved_by_the_pool_not_copied(tmp_path: Path) -> None:
    f = dpb.FileDescriptorProto(name="r.proto", package="p", syntax="proto3")
    f.message_type.add(name="M")
    f.service.add(name="S").method.add(name="Do", input_type="M", output_type="p.M")  # relative names
    info = Registry(file_set(f)).method("/p.S/Do")
    assert info is not None and (info.request_type, info.response_type) == ("p.M", "p.M")


def test_too_many_files_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reg, "MAX_DESCRIPTOR_FILES", 10)
    with pytest.raises(ProtocolError, match="more than 10 files"):
        Registry(import_chain(11))
    Registry(import_chain(10))


def test_too_big_descriptor_set_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = file_set(service_file())
    monkeypatch.setattr(reg, "MAX_DESCRIPTOR_SET_BYTES", len(data) - 1)
    with pytest.raises(ProtocolError, match="larger than"):
        Registry(data)


def test_too_deeply_nested_types_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    f = dpb.FileDescriptorProto(name="n.proto", package="p")
    message = f.message_type.add(name="N0")
    for i in range(1, 6):
        message = message.nested_type.add(name=f"N{i}")
    monkeypatch.setattr(reg, "MAX_TYPE_NESTING", 5)
    with pytest.raises(ProtocolError, match="nested more than 5"):
        Registry(file_set(f))


def test_the_default_schema_and_an_empty_one_still_load(tmp_path: Path) -> None:
    default = Registry.default()
    assert default.method("/jumpstarter.v1.ControllerService/Dial") is not None
    Registry(default.descriptor_set)
    Registry(b"")
    with CassetteReader(write_with_schema(tmp_path / "c.msgpack", default.descriptor_set)) as reader:
        assert reader.header.descriptor_set == default.descriptor_set


def test_import_chain_loads_in_linear_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loader must stay linear whatever the limits are set to: raised here past the chain's size.
    monkeypatch.setattr(reg, "MAX_DESCRIPTOR_FILES", 10_000)
    monkeypatch.setattr(reg, "MAX_SCHEMA_TYPES", 10_000)

    def seconds(n: int) -> float:
        data = import_chain(n)
        gc.collect()
        gc.disable()  # time the loader, not the collector's passes over what earlier tests left
        try:
            start = time.perf_counter()
            Registry(data)
            return time.perf_counter() - start
        finally:
            gc.enable()

    seconds(200)  # warm up
    small, big = min(seconds(1000) for _ in range(3)), min(seconds(4000) for _ in range(3))
    # Linear: about 4x; the old scan-until-no-progress loop was quadratic (16x and more).
    assert big < 8 * small, (small, big)


def test_terminal_escapes_in_a_cassette_are_printed_escaped(tmp_path: Path) -> None:
    """Method, metadata, status details and upstreams come from the file: shown with their control characters
    escaped in show, textconv and diff's text, never handed to the terminal."""
    from jsreplay.cassette.format import write_cassette
    from jsreplay.cassette.model import Cassette, Status

    evil = "\x1b]0;pwned\x07\x1b[2J\u202e\x9b"
    header = dataclasses.replace(make_header(), upstreams=(f"up{evil}:1",))
    events = (
        CallStart(
            call_id=1,
            seq=0,
            t_ns=1,
            method=f"/p.S/Do{evil}",
            role=Role.CONTROLLER,
            metadata=((f"k{evil}", f"v{evil}"),),
        ),
        Status(call_id=1, seq=1, t_ns=2, code=2, details=f"bad{evil}"),
    )
    path = tmp_path / "evil.msgpack"
    write_cassette(path, Cassette(header=header, events=events), redactor=None)
    other = tmp_path / "other.msgpack"
    write_cassette(other, Cassette(header=make_header(), events=()), redactor=None)
    for args in (["show", path], ["textconv", path], ["diff", other, path]):
        result = CliRunner().invoke(cli, [*map(str, args)], catch_exceptions=False)
        out = result.stdout
        for bad in ("\x1b", "\x07", "\u202e", "\x9b"):
            assert bad not in out, (args[0], out)
        assert "\\x1b" in out, (args[0], out)


# ---------------------------------------------------------------------------------------------------- fuzzing


def _mutate(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in flips:
        if out:
            out[position % len(out)] = value
    return bytes(out)


_SEEDS = [
    file_set(service_file()),
    map_without_value(),
    fake_struct(),
    import_chain(4),
    Registry.default().descriptor_set,
]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(range(len(_SEEDS))),
    st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6),
    st.binary(max_size=64),
)
def test_fuzzed_descriptor_sets_only_raise_cassette_errors(
    tmp_path_factory: pytest.TempPathFactory, seed: int, flips: list[tuple[int, int]], tail: bytes
) -> None:
    data = _mutate(_SEEDS[seed], flips) + tail
    path = write_with_schema(tmp_path_factory.mktemp("d") / "fuzz.msgpack", data)
    try:
        Registry(data)
    except ProtocolError:
        pass
    try:
        read_cassette(path)
    except CassetteError:
        return
    result = CliRunner().invoke(cli, ["show", str(path)], catch_exceptions=False)
    assert result.exit_code in (0, EXIT_ERROR)


_REAL = Path(__file__).parent.parent / "cassettes" / "power-echo.msgpack"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1, max_size=4))
def test_byte_flips_of_a_real_cassette_only_raise_cassette_errors(
    tmp_path_factory: pytest.TempPathFactory, flips: list[tuple[int, int]]
) -> None:
    path = tmp_path_factory.mktemp("f") / "flipped.msgpack"
    path.write_bytes(_mutate(_REAL.read_bytes(), flips))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", TruncatedCassetteWarning)
            read_cassette(path)
    except (CassetteError, TruncatedCassetteWarning):
        pass


def test_a_schema_of_too_many_types_is_refused_before_it_is_loaded() -> None:
    """Each type costs a descriptor and a message class (KBs from a few bytes): the count bounds the memory."""
    with pytest.raises(ProtocolError, match="more than 2048 message and enum types"):
        Registry(import_chain(1000, types_per_file=3))
    Registry(import_chain(600, types_per_file=3))
