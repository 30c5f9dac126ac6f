"""protos/v0.9.0 and its committed descriptor set match jumpstarter-protocol 0.9.0's wire schema field for field;
the committed sets (v0.9.0, head, their union) are current."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool
from schema_compare import compare_file_sets, file_set_from_pool, load_file_set

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos" / "v0.9.0"
DESCRIPTORS = REPO_ROOT / "jsreplay" / "protocol" / "schemas" / "v0.9.0.binpb"
UNION = REPO_ROOT / "jsreplay" / "protocol" / "descriptors.binpb"

JUMPSTARTER_FILES = [
    "jumpstarter/v1/common.proto",
    "jumpstarter/v1/kubernetes.proto",
    "jumpstarter/v1/router.proto",
    "jumpstarter/v1/jumpstarter.proto",
    "jumpstarter/client/v1/client.proto",
]


def _load_build_script() -> ModuleType:
    name = "jsreplay_build_descriptors"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / "build_descriptors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


build_descriptors = _load_build_script()


@pytest.fixture(scope="module")
def upstream() -> descriptor_pb2.FileDescriptorSet:
    """The wire schema as shipped by the jumpstarter-protocol 0.9.0 package."""
    for name in JUMPSTARTER_FILES:
        module = name.removesuffix(".proto").replace("/", ".") + "_pb2"
        importlib.import_module(f"jumpstarter_protocol.{module}")
    return file_set_from_pool(descriptor_pool.Default(), JUMPSTARTER_FILES)


def _build(proto_root: Path, tmp_path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = tmp_path / "out" / "descriptors.binpb"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(build_descriptors.build_descriptor_set(proto_root))
    return load_file_set(out)


def _mutated_build(tmp_path: Path, rel: str, pattern: str, replacement: str) -> descriptor_pb2.FileDescriptorSet:
    """Copy protos/ to tmp_path, apply one regex substitution to ``rel`` (it must match once), build."""
    root = tmp_path / "protos"
    shutil.copytree(PROTO_ROOT, root)
    path = root / rel
    text, n = re.subn(pattern, replacement, path.read_text(), flags=re.DOTALL)
    assert n == 1, f"mutation {pattern!r} matched {n} times in {rel}"
    path.write_text(text)
    return _build(root, tmp_path)


def test_committed_descriptors_match_jumpstarter_protocol(upstream: descriptor_pb2.FileDescriptorSet) -> None:
    ours = load_file_set(DESCRIPTORS)
    assert compare_file_sets(upstream, ours, only=JUMPSTARTER_FILES) == []
    # Imports are included (well-known types), source info is not.
    names = {f.name for f in ours.file}
    assert {"google/protobuf/struct.proto", "google/protobuf/timestamp.proto"} <= names
    assert not any(f.HasField("source_code_info") for f in ours.file)


def test_committed_descriptors_are_current(tmp_path: Path) -> None:
    rebuilt = _build(PROTO_ROOT, tmp_path)
    assert rebuilt == load_file_set(DESCRIPTORS), "run: python scripts/build_descriptors.py"
    assert build_descriptors.stale() == [], "run: python scripts/build_descriptors.py"


def test_the_default_schema_is_the_union_of_both_lines() -> None:
    from jsreplay.protocol.registry import Registry

    union = Registry(UNION.read_bytes())
    paths = {m.path for m in union.methods()}
    assert "/jumpstarter.v1.ControllerService/AuditStream" in paths  # 0.9.0 only
    assert "/jumpstarter.v1.ControllerService/GetServiceEndpoints" in paths  # head only
    assert "/jumpstarter.v1.TelemetryService/PushLogs" in paths
    assert "motd" in union.descriptor("jumpstarter.v1.GetReportResponse").fields_by_name
    assert "context" in union.descriptor("jumpstarter.client.v1.Lease").fields_by_name


def test_check_mode_flags_stale_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "descriptors.binpb"
    assert build_descriptors.main(["--output", str(out)]) == 0
    assert build_descriptors.main(["--check", "--output", str(out)]) == 0
    out.write_bytes(out.read_bytes() + b"\x00")
    assert build_descriptors.main(["--check", "--output", str(out)]) == 1
    assert "out of date" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rel", "pattern", "replacement", "expected"),
    [
        pytest.param(
            "jumpstarter/v1/jumpstarter.proto",
            r"(message DialResponse \{.*?string router_token = )2;",
            r"\g<1>3;",
            "jumpstarter.v1.DialResponse.router_token: number 2 != 3",
            id="changed-field-number",
        ),
        pytest.param(
            "jumpstarter/v1/jumpstarter.proto",
            r"(message DialResponse \{.*?)\n  string router_token = 2;",
            r"\g<1>",
            "jumpstarter.v1.DialResponse.router_token: field missing",
            id="removed-field",
        ),
        pytest.param(
            "jumpstarter/v1/jumpstarter.proto",
            r"rpc Dial\(DialRequest\) returns \(DialResponse\);",
            "rpc Dial(DialRequest) returns (stream DialResponse);",
            "jumpstarter.v1.ControllerService.Dial: server_streaming False != True",
            id="changed-streaming-kind",
        ),
        pytest.param(
            "jumpstarter/v1/router.proto",
            r"rpc Stream\(stream StreamRequest\)",
            "rpc Stream(StreamRequest)",
            "jumpstarter.v1.RouterService.Stream: client_streaming True != False",
            id="changed-client-streaming",
        ),
        pytest.param(
            "jumpstarter/v1/jumpstarter.proto",
            r"optional string parent_uuid = 2;",
            "string parent_uuid = 2;",
            "jumpstarter.v1.DriverInstanceReport.parent_uuid: proto3_optional True != False",
            id="dropped-optional",
        ),
        pytest.param(
            "jumpstarter/v1/router.proto",
            r"FRAME_TYPE_GOAWAY = 7;",
            "FRAME_TYPE_GOAWAY = 8;",
            "jumpstarter.v1.FrameType.FRAME_TYPE_GOAWAY: number 7 != 8",
            id="changed-enum-value",
        ),
    ],
)
def test_mutations_are_reported(
    tmp_path: Path,
    upstream: descriptor_pb2.FileDescriptorSet,
    rel: str,
    pattern: str,
    replacement: str,
    expected: str,
) -> None:
    diffs = compare_file_sets(upstream, _mutated_build(tmp_path, rel, pattern, replacement), only=JUMPSTARTER_FILES)
    assert expected in diffs, diffs
