"""diff's schema section between the 0.9.0 line and the development line: Jumpstarter packages only, with the
added and removed RPCs, messages and fields named."""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from jsreplay.inspect.schema_diff import diff_schemas
from jsreplay.protocol.schemas import shipped


def test_the_development_line_against_0_9_0_names_rpcs_and_fields_and_no_google_types() -> None:
    changes = {(c.change, c.element, c.name) for c in diff_schemas(shipped("v0.9.0"), shipped("head"))}
    assert ("added", "method", "/jumpstarter.v1.ControllerService/GetServiceEndpoints") in changes
    assert ("removed", "method", "/jumpstarter.v1.ControllerService/AuditStream") in changes
    assert ("added", "service", "jumpstarter.v1.TelemetryService") in changes
    for field in ("jumpstarter.v1.GetReportResponse.motd", "jumpstarter.client.v1.Lease.context",
                  "jumpstarter.v1.StatusResponse.context", "jumpstarter.v1.LogStreamResponse.timestamp",
                  "jumpstarter.v1.LogStreamResponse.structured_fields"):  # fmt: skip
        assert ("added", "field", field) in changes
    assert not [name for _, _, name in changes if name.lstrip("/").startswith("google.")]


def test_google_files_are_left_out() -> None:
    fds = descriptor_pb2.FileDescriptorSet()
    fds.ParseFromString(shipped("v0.9.0"))
    extra = fds.file.add(name="google/api/x.proto", package="google.api")
    extra.message_type.add(name="Http")
    assert diff_schemas(shipped("v0.9.0"), fds.SerializeToString()) == []
