"""jsreplay diff against real recordings: equivalent runs, and each kind of change reported alone and precisely."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import jsonschema
import pytest
from click.testing import CliRunner
from conftest import Recordings
from google.protobuf import descriptor_pb2
from inspect_support import call_ids, edit, json_schema, load, replace_events, run_cli

from jsreplay.cassette.format import read_cassette
from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    Cancel,
    CancelSource,
    Cassette,
    ClientMessage,
    ServerHeaders,
    ServerMessage,
    Status,
)
from jsreplay.cli import cli
from jsreplay.cli.diff import drop_inner_messages
from jsreplay.inspect.diff import CanonicalUnits, DiffOptions, DroppedDataError, canonical_units, diff_views
from jsreplay.inspect.view import CassetteView
from jsreplay.protocol.registry import Registry, UnknownField, WireType, encode_unknown

pytestmark = pytest.mark.e2e  # the recordings come from the real client and exporter

EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR = 0, 1, 2


def diff_json(old: Path, new: Path, *options: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("diff", "--format", "json", *options, old, new)
    document = result.json()
    jsonschema.validate(document, json_schema("diff.schema.json"))
    assert document["equivalent"] == (result.exit_code == EXIT_OK)
    return result.exit_code, document


def only(document: dict[str, Any]) -> dict[str, Any]:
    """The single difference of a report (fails, showing them all, when there are more or none)."""
    differences = document["differences"]
    assert len(differences) == 1, differences
    return differences[0]


# ---------------------------------------------------------------------------------------------------- equivalence


def test_two_runs_of_the_same_scenario_are_equivalent(recordings: Recordings) -> None:
    for old, new in ((recordings.baseline, recordings.baseline2), (recordings.baseline2, recordings.baseline)):
        code, document = diff_json(old, new)
        assert code == EXIT_OK, document["differences"]
        assert document["differences"] == []
    text = run_cli("diff", recordings.baseline, recordings.baseline2)
    assert text.exit_code == EXIT_OK
    assert "equivalent" in text.stdout


def test_without_default_ignores_two_runs_differ_in_volatile_values(recordings: Recordings) -> None:
    code, document = diff_json(recordings.baseline, recordings.baseline2, "--no-default-ignores")
    assert code == EXIT_DIFFERENT
    paths = {d["path"] for d in document["differences"]}
    # Lease names, router endpoints and driver UUIDs differ between runs: exactly what the defaults mask.
    assert "ControllerService/Dial[0].requests[0].lease_name" in paths
    assert "ControllerService/Dial[0].responses[0].router_endpoint" in paths
    assert "RouterService/Stream[0] > ExporterService/DriverCall[0].requests[0].uuid" in paths


def test_a_cassette_is_equivalent_to_itself(recordings: Recordings) -> None:
    view = load(recordings.baseline)
    report = diff_views(view, view, DiffOptions(defaults=False))
    assert report.equivalent, report.differences


# ---------------------------------------------------------------------------------------------------- variants


def test_a_field_added_to_a_response_is_an_unknown_field(recordings: Recordings, tmp_path: Path) -> None:
    extra = UnknownField(99, WireType.VARINT, 7)

    def add_field(c: Cassette) -> Cassette:
        [call] = call_ids(c, "/GetExporter")
        events = tuple(
            dataclasses.replace(e, data=e.data + encode_unknown(extra))
            if isinstance(e, ServerMessage) and e.call_id == call
            else e
            for e in c.events
        )
        return dataclasses.replace(c, events=events)

    variant = edit(recordings.baseline2, tmp_path / "added_field.msgpack", add_field)
    code, document = diff_json(recordings.baseline, variant)
    assert code == EXIT_DIFFERENT
    assert only(document) | {"old_call": None, "new_call": None} == {
        "kind": "unknown_field_added",
        "path": "ClientService/GetExporter[0].responses[0].#99",
        "old": None,
        "new": [{"$unknown": {"number": 99, "wire_type": "VARINT", "value": 7}}],
        "old_call": None,
        "new_call": None,
        "detail": "",
    }
    # --ignore takes it out again, by full path or by field name.
    assert diff_json(recordings.baseline, variant, "--ignore", "ClientService/GetExporter.response.#99")[0] == EXIT_OK
    assert diff_json(recordings.baseline, variant, "--ignore", "#99")[0] == EXIT_OK


def test_a_renamed_method(recordings: Recordings, tmp_path: Path) -> None:
    renamed = "/jumpstarter.client.v1.ClientService/FetchExporter"

    def rename(c: Cassette) -> Cassette:
        events = tuple(
            dataclasses.replace(e, method=renamed)
            if isinstance(e, CallStart) and e.method.endswith("ClientService/GetExporter")
            else e
            for e in c.events
        )
        return dataclasses.replace(c, events=events)

    variant = edit(recordings.baseline2, tmp_path / "renamed.msgpack", rename)
    code, document = diff_json(recordings.baseline, variant)
    assert code == EXIT_DIFFERENT
    difference = only(document)
    assert difference["kind"] == "method_renamed"
    assert difference["path"] == "ClientService/GetExporter"
    assert (difference["old"], difference["new"]) == ("/jumpstarter.client.v1.ClientService/GetExporter", renamed)


def test_a_different_status_code(recordings: Recordings, tmp_path: Path) -> None:
    def not_found(c: Cassette) -> Cassette:
        [call] = call_ids(c, "/DeleteLease")
        events = []
        for e in c.events:
            if e.call_id == call and isinstance(e, ServerMessage):
                continue  # a failed unary call has no response
            if e.call_id == call and isinstance(e, Status):
                e = dataclasses.replace(e, code=5, details="lease not found")
            events.append(e)
        return dataclasses.replace(c, events=tuple(events))

    variant = edit(recordings.baseline2, tmp_path / "not_found.msgpack", not_found)
    code, document = diff_json(recordings.baseline, variant)
    assert code == EXIT_DIFFERENT
    difference = only(document)
    assert difference["kind"] == "status_changed"
    assert difference["path"] == "ClientService/DeleteLease[0].status"
    assert (difference["old"], difference["new"]) == ("OK", "NOT_FOUND: lease not found")


def test_a_changed_driver_result_inside_the_tunnel(recordings: Recordings) -> None:
    code, document = diff_json(recordings.baseline, recordings.driver_changed)
    assert code == EXIT_DIFFERENT
    difference = only(document)
    assert difference["kind"] == "field_changed"
    assert (
        difference["path"]
        == "RouterService/Stream[0] > ExporterService/StreamingDriverCall[0].responses[1].result.voltage"
    )
    assert (difference["old"], difference["new"]) == (5.0, 12.0)


def test_an_added_inner_call(recordings: Recordings) -> None:
    code, document = diff_json(recordings.baseline, recordings.extra_call)
    assert code == EXIT_DIFFERENT
    difference = only(document)
    assert difference["kind"] == "call_added"
    assert difference["path"] == "RouterService/Stream[0] > ExporterService/DriverCall[0]"
    assert difference["old"] is None
    assert difference["new"]["requests"] == [{"uuid": "<driver:power>", "method": "off"}]
    assert difference["new"]["outcome"] == "OK"
    # The same change seen the other way round is a removed call.
    code, document = diff_json(recordings.extra_call, recordings.baseline)
    assert (code, only(document)["kind"]) == (EXIT_DIFFERENT, "call_removed")


# ---------------------------------------------------------------------------------------------------- noise vs change


def test_how_the_router_chunked_a_tunnel_is_not_a_difference(recordings: Recordings, tmp_path: Path) -> None:
    registry = Registry.default()

    def split(data: bytes, type_name: str) -> list[bytes]:
        frame = registry.decode(type_name, data)
        payload = frame.get("payload", b"")
        if frame.get("frame_type", "FRAME_TYPE_DATA") != "FRAME_TYPE_DATA" or len(payload) < 2:
            return [data]
        half = len(payload) // 2
        return [
            registry.encode(type_name, {"payload": payload[:half]}),
            registry.encode(type_name, {"payload": payload[half:]}),
        ]

    def rechunk(c: Cassette) -> Cassette:
        router = set(call_ids(c, "RouterService/Stream"))
        events: list[Any] = []
        for e in c.events:
            if e.call_id in router and isinstance(e, ClientMessage):
                events.extend(dataclasses.replace(e, data=d) for d in split(e.data, "jumpstarter.v1.StreamRequest"))
            elif e.call_id in router and isinstance(e, ServerMessage):
                events.extend(dataclasses.replace(e, data=d) for d in split(e.data, "jumpstarter.v1.StreamResponse"))
            else:
                events.append(e)
        return dataclasses.replace(c, events=tuple(events))

    variant = edit(recordings.baseline2, tmp_path / "rechunked.msgpack", rechunk)
    frames = [c.stream.frames_out for c in load(variant).calls if c.stream and c.stream.holds_inner]
    assert frames and frames[0] > max(c.stream.frames_out for c in load(recordings.baseline2).calls if c.stream)
    code, document = diff_json(recordings.baseline, variant)
    assert (code, document["differences"]) == (EXIT_OK, [])


def test_a_tunnel_recorded_from_one_end_compares_by_its_inner_calls(recordings: Recordings, tmp_path: Path) -> None:
    view = load(recordings.baseline2)
    [client_end] = [c for c in view.calls if c.stream is not None and c.stream.holds_inner]
    variant = edit(
        recordings.baseline2,
        tmp_path / "exporter_end_only.msgpack",
        lambda c: replace_events(c, lambda e: None if e.call_id == client_end.id else e),
    )
    [exporter_end] = [c for c in load(variant).calls if c.stream is not None and c.stream.holds_inner]
    assert exporter_end.stream is not None and exporter_end.stream.side.value == "exporter"
    assert exporter_end.stream.peer is None
    assert [c.short_method for c in exporter_end.inner or []] == [c.short_method for c in client_end.inner or []]
    code, document = diff_json(recordings.baseline, variant)
    assert (code, document["differences"]) == (EXIT_OK, [])


def test_a_missing_readiness_probe_is_not_a_difference(recordings: Recordings, tmp_path: Path) -> None:
    # The probe's Dial is itself a race, so a recording may lack the probe already: start from one that has it.
    with_probe = [
        p
        for p in (recordings.baseline2, recordings.baseline)
        if any(c.stream and c.stream.probe for c in load(p).calls)
    ]
    if not with_probe:
        pytest.skip("neither recording has a readiness probe to remove")
    source = with_probe[0]
    other = recordings.baseline if source == recordings.baseline2 else recordings.baseline2
    view = load(source)
    probes = [c for c in view.calls if c.stream is not None and c.stream.probe]
    assert len(probes) == 2
    tokens = {str(dict(c.metadata)["authorization"]).split(" ", 1)[1] for c in probes}
    probe_ids = {c.id for c in probes}
    dials = {
        c.id
        for c in view.calls
        if c.short_method == "ControllerService/Dial" and (c.responses[0].value or {}).get("router_token") in tokens
    }
    assert len(dials) == 1

    def no_probe(e: AnyEvent) -> AnyEvent | None:
        if e.call_id in probe_ids | dials:
            return None
        if isinstance(e, ServerMessage) and b"redacted:" in e.data:
            if any(t.encode() in e.data for t in tokens):
                return None  # the probe's Listen message
        return e

    variant = edit(source, tmp_path / "no_probe.msgpack", lambda c: replace_events(c, no_probe))
    assert len(load(variant).calls) == len(view.calls) - 3
    code, document = diff_json(other, variant)
    assert (code, document["differences"]) == (EXIT_OK, [])


def test_a_repeated_poll_is_not_a_difference_but_a_new_call_is(recordings: Recordings, tmp_path: Path) -> None:
    def repeat_get_lease(c: Cassette) -> Cassette:
        return _copy_call(c, call_ids(c, "/GetLease")[0])

    variant = edit(recordings.baseline2, tmp_path / "polled.msgpack", repeat_get_lease)
    assert diff_json(recordings.baseline, variant)[0] == EXIT_OK

    other = Registry.default().encode(
        "jumpstarter.client.v1.GetExporterRequest", {"name": "namespaces/default/exporters/x"}
    )

    def repeat_create_lease_differently(c: Cassette) -> Cassette:
        # The same call, for another exporter: a different call, not a repeat.
        return _copy_call(
            c,
            call_ids(c, "/GetExporter")[0],
            lambda e: dataclasses.replace(e, data=other) if isinstance(e, ClientMessage) else e,
        )

    variant = edit(recordings.baseline2, tmp_path / "other_exporter.msgpack", repeat_create_lease_differently)
    code, document = diff_json(recordings.baseline, variant)
    difference = only(document)
    assert (code, difference["kind"], difference["path"]) == (
        EXIT_DIFFERENT,
        "call_added",
        "ClientService/GetExporter[1]",
    )
    assert difference["new"]["requests"] == [{"name": "namespaces/default/exporters/x"}]


def _copy_call(c: Cassette, call: int, change: Callable[[AnyEvent], AnyEvent] = lambda e: e) -> Cassette:
    """The cassette with a copy of `call` (a new id), started just after the original ended."""
    events = [e for e in c.events if e.call_id == call]
    shift = events[-1].t_ns - events[0].t_ns + 1_000_000
    new_id = max(e.call_id for e in c.events) + 1
    copies = tuple(dataclasses.replace(change(e), call_id=new_id, t_ns=e.t_ns + shift) for e in events)
    return dataclasses.replace(c, events=c.events + copies)


def _swap_start_times(c: Cassette, first: int, second: int) -> Cassette:
    starts = {e.call_id: e.t_ns for e in c.events if isinstance(e, CallStart) and e.call_id in (first, second)}
    other = {first: starts[second], second: starts[first]}
    return replace_events(
        c,
        lambda e: (
            dataclasses.replace(e, t_ns=other[e.call_id]) if isinstance(e, CallStart) and e.call_id in other else e
        ),
    )


def _swap_requests(c: Cassette, first: int, second: int) -> Cassette:
    data = {e.call_id: e.data for e in c.events if isinstance(e, ClientMessage) and e.call_id in (first, second)}
    other = {first: data[second], second: data[first]}
    return replace_events(
        c,
        lambda e: (
            dataclasses.replace(e, data=other[e.call_id]) if isinstance(e, ClientMessage) and e.call_id in other else e
        ),
    )


def test_the_order_of_calls_that_raced_is_not_a_difference(recordings: Recordings, tmp_path: Path) -> None:
    registry = Registry.default()

    def distinct_dials(c: Cassette) -> Cassette:
        second = call_ids(c, "/Dial")[1]
        request = registry.encode("jumpstarter.v1.DialRequest", {"lease_name": "second-dial"})
        return replace_events(
            c,
            lambda e: (
                dataclasses.replace(e, data=request) if isinstance(e, ClientMessage) and e.call_id == second else e
            ),
        )

    base = edit(recordings.baseline2, tmp_path / "dials.msgpack", distinct_dials)
    dial_a, dial_b = call_ids(read_cassette(base), "/Dial")
    swapped = edit(base, tmp_path / "dials_swapped.msgpack", lambda c: _swap_start_times(c, dial_a, dial_b))
    # The two Dials overlap in time: their order is a race, not a difference.
    code, document = diff_json(base, swapped)
    assert (code, document["differences"]) == (EXIT_OK, [])

    # Two ReportStatus calls that did not overlap keep their order: swapping them is reported. (Their
    # requests are swapped, not their start times: a swapped start leaves each call's end where it was, so
    # the two would overlap, and be ordered by content, whichever order that happens to give.)
    first, second = call_ids(read_cassette(base), "/ReportStatus")[:2]
    reordered = edit(base, tmp_path / "reports_swapped.msgpack", lambda c: _swap_requests(c, first, second))
    code, document = diff_json(base, reordered)
    assert code == EXIT_DIFFERENT
    assert {d["path"].split(".")[0] for d in document["differences"]} <= {
        "ControllerService/ReportStatus[0]",
        "ControllerService/ReportStatus[1]",
    }


def test_a_cancel_racing_the_answer_is_not_a_difference_but_a_deadline_is(
    recordings: Recordings, tmp_path: Path
) -> None:
    def cancelled(at_deadline: bool) -> Callable[[Cassette], Cassette]:
        def change(c: Cassette) -> Cassette:
            call = call_ids(c, "/ReportStatus")[2]  # "Available for new lease", sent while the exporter shuts down
            start = next(e for e in c.events if isinstance(e, CallStart) and e.call_id == call)
            assert start.timeout_ns is not None
            at = start.t_ns + (start.timeout_ns if at_deadline else 1_000_000)

            # Whatever the recording got (an answer, or already a cancel: it is a race), end it our way.
            kept = [e for e in c.events if not (e.call_id == call and isinstance(e, ServerMessage | Status | Cancel))]
            last = max(i for i, e in enumerate(kept) if e.call_id == call)
            cancel = Cancel(call_id=call, seq=0, t_ns=at, by=CancelSource.CLIENT, reason="caller cancelled")
            return dataclasses.replace(c, events=(*kept[: last + 1], cancel, *kept[last + 1 :]))

        return change

    early = edit(recordings.baseline2, tmp_path / "cancelled.msgpack", cancelled(at_deadline=False))
    assert diff_json(recordings.baseline, early)[0] == EXIT_OK
    late = edit(recordings.baseline2, tmp_path / "deadline.msgpack", cancelled(at_deadline=True))
    code, document = diff_json(recordings.baseline, late)
    difference = only(document)
    assert (code, difference["kind"], difference["path"]) == (
        EXIT_DIFFERENT,
        "status_changed",
        "ControllerService/ReportStatus[2].status",
    )
    # The baseline's own call got its answer or was cancelled early (a race); either way, not a deadline.
    assert difference["old"] in ("OK", "cancelled by client")
    assert difference["new"] == "cancelled by client (deadline)"


def test_timing_threshold(recordings: Recordings, tmp_path: Path) -> None:
    def slow_get_exporter(c: Cassette) -> Cassette:
        call = call_ids(c, "/GetExporter")[0]
        later = {ServerHeaders, ServerMessage, Status}
        return replace_events(
            c,
            lambda e: (
                dataclasses.replace(e, t_ns=e.t_ns + 2_000_000_000) if e.call_id == call and type(e) in later else e
            ),
        )

    slow = edit(recordings.baseline, tmp_path / "slow.msgpack", slow_get_exporter)
    assert diff_json(recordings.baseline, slow)[0] == EXIT_OK  # off by default
    code, document = diff_json(recordings.baseline, slow, "--timing-threshold", "50")
    difference = only(document)
    assert (code, difference["kind"], difference["path"]) == (
        EXIT_DIFFERENT,
        "timing_changed",
        "ClientService/GetExporter[0].duration",
    )
    assert difference["new"] - difference["old"] == pytest.approx(2000, abs=1)


def test_a_changed_value_that_is_not_volatile_is_reported(recordings: Recordings, tmp_path: Path) -> None:
    def bob(c: Cassette) -> Cassette:
        def change(e: AnyEvent) -> AnyEvent:
            if isinstance(e, CallStart) and e.method.endswith("/GetExporter"):
                metadata = tuple((k, "bob" if k == "jumpstarter-name" else v) for k, v in e.metadata)
                return dataclasses.replace(e, metadata=metadata)
            return e

        return replace_events(c, change)

    variant = edit(recordings.baseline2, tmp_path / "bob.msgpack", bob)
    code, document = diff_json(recordings.baseline, variant)
    difference = only(document)
    assert (code, difference["kind"], difference["path"]) == (
        EXIT_DIFFERENT,
        "metadata_value_changed",
        "ClientService/GetExporter[0].metadata.jumpstarter-name",
    )
    assert (difference["old"], difference["new"]) == (["alice"], ["bob"])


# ---------------------------------------------------------------------------------------------------- schemas


def without_field(descriptor_set: bytes, message: str, field: str) -> bytes:
    """The descriptor set with one field removed (and its synthetic `optional` oneof), as an older schema."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    package, _, name = message.rpartition(".")
    for file in fds.file:
        if file.package != package:
            continue
        for proto in file.message_type:
            if proto.name != name:
                continue
            [target] = [f for f in proto.field if f.name == field]
            proto.field.remove(target)
            if target.HasField("oneof_index") and target.proto3_optional:
                index = target.oneof_index
                del proto.oneof_decl[index]
                for f in proto.field:
                    if f.HasField("oneof_index") and f.oneof_index > index:
                        f.oneof_index -= 1
            return fds.SerializeToString()
    raise AssertionError(f"{message} not found")


@pytest.fixture
def old_schema_cassette(recordings: Recordings, tmp_path: Path) -> Path:
    def older(c: Cassette) -> Cassette:
        descriptors = without_field(c.header.descriptor_set, "jumpstarter.v1.GetStatusResponse", "previous_status")
        return dataclasses.replace(c, header=dataclasses.replace(c.header, descriptor_set=descriptors))

    return edit(recordings.baseline, tmp_path / "old_schema.msgpack", older)


def test_an_older_schema_diffs_as_a_schema_change_only(recordings: Recordings, old_schema_cassette: Path) -> None:
    code, document = diff_json(old_schema_cassette, recordings.baseline2)
    difference = only(document)
    assert code == EXIT_DIFFERENT
    assert difference["kind"] == "schema_added"
    assert difference["path"] == "schema:field:jumpstarter.v1.GetStatusResponse.previous_status"
    assert difference["new"] == "optional jumpstarter.v1.ExporterStatus = 4"
    code, document = diff_json(recordings.baseline2, old_schema_cassette)
    assert (code, only(document)["kind"]) == (EXIT_DIFFERENT, "schema_removed")


def test_the_same_bytes_under_an_older_schema_show_as_an_unknown_field(old_schema_cassette: Path) -> None:
    view = load(old_schema_cassette)
    [get_status] = [c for t in view.calls for c in t.inner or [] if c.short_method == "ExporterService/GetStatus"]
    assert get_status.responses[0].unknown_paths == ["#4"]
    assert "previous_status" not in (get_status.responses[0].value or {})
    text = run_cli("show", "--method", "*GetStatus", old_schema_cassette)
    assert text.exit_code == EXIT_OK
    field = Registry.default().descriptor("jumpstarter.v1.GetStatusResponse").fields_by_name["previous_status"]
    available = field.enum_type.values_by_name["EXPORTER_STATUS_AVAILABLE"].number
    assert re.search(rf"#4: unknown field: {available} \(varint\)", text.stdout)
    document = run_cli("show", "--format", "json", old_schema_cassette).json()
    jsonschema.validate(document, json_schema("show.schema.json"))


# ---------------------------------------------------------------------------------------------------- errors


def test_errors_exit_2_with_one_line(recordings: Recordings, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.msgpack"
    garbage.write_bytes(b"not a cassette at all")
    for args in (("diff", recordings.baseline, garbage), ("diff", recordings.baseline, tmp_path / "missing.msgpack")):
        result = run_cli(*args)
        assert result.exit_code == EXIT_ERROR
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("jsreplay: error: ")
    assert run_cli("diff", "--timing-threshold", "-5", recordings.baseline, recordings.baseline).exit_code == EXIT_ERROR


def test_big_cassettes_load_side_by_side_with_the_same_result(recordings: Recordings, tmp_path: Path) -> None:
    # Run in a fresh interpreter with the size threshold at 0: forking this test process (which ran gRPC
    # threads while recording) is not something to do.
    script = (
        "import sys, jsreplay.cli.diff as d; d.PARALLEL_LOAD_BYTES = 0; "
        "sys.argv = ['jsreplay', *sys.argv[1:]]; from jsreplay.cli import main; main()"
    )

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-c", script, *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)

    result = run("diff", "--format", "json", recordings.baseline, recordings.driver_changed)
    assert result.returncode == EXIT_DIFFERENT, result.stderr
    assert [d["path"] for d in json.loads(result.stdout)["differences"]] == [
        "RouterService/Stream[0] > ExporterService/StreamingDriverCall[0].responses[1].result.voltage"
    ]
    # A renamed method: the new side's units, built in the worker, are rebuilt in the parent with its builder.
    renamed = "/jumpstarter.client.v1.ClientService/FetchExporter"
    variant = edit(
        recordings.baseline2,
        tmp_path / "renamed.msgpack",
        lambda c: replace_events(
            c,
            lambda e: (
                dataclasses.replace(e, method=renamed)
                if isinstance(e, CallStart) and e.method.endswith("ClientService/GetExporter")
                else e
            ),
        ),
    )
    for old, new in ((recordings.baseline, variant), (variant, recordings.driver_changed)):
        side_by_side = run("diff", "--format", "json", old, new)
        assert side_by_side.stdout == run_cli("diff", "--format", "json", old, new).stdout
    garbage = tmp_path / "garbage.msgpack"
    garbage.write_bytes(b"\x89JSR\r\n\x1a\n" + b"\xc1" * 32)
    result = run("diff", recordings.baseline, garbage)
    assert result.returncode == EXIT_ERROR
    assert result.stderr.startswith("jsreplay: error: ") and len(result.stderr.strip().splitlines()) == 1


def test_an_inner_rename_with_dropped_messages_asks_for_the_whole_view(recordings: Recordings) -> None:
    # diff's worker builds the new cassette's units, then drops inner messages' bytes and values before
    # sending; rebuilding a renamed inner method's units needs them, so diff_views says so and the CLI then
    # loads the new cassette itself.
    def renamed() -> CassetteView:
        view = load(recordings.baseline2)
        for call in view.calls:
            for inner in call.inner or ():
                if inner.method.endswith("/GetStatus"):
                    inner.method = "/jumpstarter.v1.ExporterService/FetchStatus"
        return view

    def as_sent(view: CassetteView) -> tuple[CassetteView, CanonicalUnits]:
        units = canonical_units(view)
        drop_inner_messages(view)
        return view, units

    old = load(recordings.baseline)
    whole = diff_views(old, renamed())
    assert [(d.kind.value, d.path) for d in whole.differences] == [
        ("method_renamed", "RouterService/Stream[0] > ExporterService/GetStatus")
    ]
    dropped, units = as_sent(renamed())
    with pytest.raises(DroppedDataError):
        diff_views(old, dropped, new_units=units)
    with pytest.raises(DroppedDataError):
        canonical_units(dropped)  # units must be built before the messages go
    # Without a rename, the dropped messages are not missed.
    plain, units = as_sent(load(recordings.baseline2))
    assert diff_views(old, plain, new_units=units).differences == []
    changed, units = as_sent(load(recordings.driver_changed))
    assert diff_views(old, changed, new_units=units) == diff_views(old, load(recordings.driver_changed))


def test_a_message_that_does_not_decode_is_shown_raw_and_diffed_whole(recordings: Recordings, tmp_path: Path) -> None:
    garbage = b"\xff\xff\xff"  # a truncated varint: no protobuf message

    def break_response(c: Cassette) -> Cassette:
        [call] = call_ids(c, "/GetExporter")
        return replace_events(
            c,
            lambda e: dataclasses.replace(e, data=garbage) if isinstance(e, ServerMessage) and e.call_id == call else e,
        )

    variant = edit(recordings.baseline2, tmp_path / "garbled.msgpack", break_response)
    text = run_cli("show", "--method", "*GetExporter", variant)
    assert text.exit_code == EXIT_OK
    assert re.search(r"< Exporter 3 B: ffffff  \(cannot decode 3 bytes as jumpstarter.client.v1.Exporter", text.stdout)
    code, document = diff_json(recordings.baseline, variant)
    difference = only(document)
    assert (code, difference["kind"], difference["path"]) == (
        EXIT_DIFFERENT,
        "field_changed",
        "ClientService/GetExporter[0].responses[0]",
    )
    assert difference["new"] == {"$raw": {"$bytes": "////"}}


def test_text_is_coloured_on_a_terminal_only(recordings: Recordings) -> None:
    args = ["diff", str(recordings.baseline), str(recordings.driver_changed)]
    plain = CliRunner().invoke(cli, args)
    coloured = CliRunner().invoke(cli, args, color=True)
    assert plain.exit_code == coloured.exit_code == EXIT_DIFFERENT
    assert "\x1b[" not in plain.stdout
    assert "\x1b[33m~ RouterService/Stream[0] > ExporterService/StreamingDriverCall[0]" in coloured.stdout
    assert click.unstyle(coloured.stdout) == plain.stdout
