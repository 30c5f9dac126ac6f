"""Redaction across protocol versions: the jmp shell passphrase, extra metadata keys, and fields unknown to the
schema (which redaction by field name cannot see) named so the recorder can warn."""

from __future__ import annotations

from jsreplay.cassette.model import CallStart, Role
from jsreplay.cassette.redaction import Redactor
from jsreplay.protocol.registry import Registry
from jsreplay.protocol.schemas import shipped

V090 = Registry(shipped("v0.9.0"))
HEAD = Registry(shipped("head"))


def _start(*metadata: tuple[str, str]) -> CallStart:
    return CallStart(
        call_id=1, seq=0, t_ns=0, method="/jumpstarter.v1.ExporterService/GetReport", role=Role.TUNNEL,
        metadata=metadata, peer="", target="", timeout_ns=None,
    )  # fmt: skip


def test_the_jmp_shell_passphrase_is_redacted_by_default() -> None:
    redacted = Redactor(registry=V090, key=b"k").redact(_start(("x-jumpstarter-passphrase", "hunter2")), "")
    assert isinstance(redacted, CallStart)
    ((key, value),) = redacted.metadata
    assert key == "x-jumpstarter-passphrase" and value != "hunter2" and str(value).startswith("redacted:")


def test_more_metadata_keys_can_be_redacted() -> None:
    redactor = Redactor(registry=V090, key=b"k", metadata_keys=("authorization", "x-site-secret"))
    redacted = redactor.redact(_start(("x-site-secret", "abc"), ("x-other", "plain")), "")
    assert isinstance(redacted, CallStart)
    assert dict(redacted.metadata)["x-site-secret"].startswith("redacted:")
    assert dict(redacted.metadata)["x-other"] == "plain"
    assert "x-site-secret" in redactor.description.metadata_keys


def test_fields_unknown_to_the_schema_are_noted_for_a_warning() -> None:
    # A development-line Status message carries `context` (field 4), which 0.9.0's schema does not know.
    data = HEAD.encode("jumpstarter.v1.StatusResponse", {"leased": True, "context": {"api_key": "s3cret"}})
    redactor = Redactor(registry=V090, key=b"k")
    assert redactor.redact_message("jumpstarter.v1.StatusResponse", data) == data  # stored as is: not seen
    assert redactor.unknown_fields == {"jumpstarter.v1.StatusResponse": {"#4"}}
    # With the schema the peers speak, the field is known: nothing to warn about.
    knowing = Redactor(registry=HEAD, key=b"k")
    knowing.redact_message("jumpstarter.v1.StatusResponse", data)
    assert knowing.unknown_fields == {}
