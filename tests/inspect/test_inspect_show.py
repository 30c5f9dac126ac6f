"""jsreplay show (text, JSON, Mermaid) and textconv on real recordings."""

from __future__ import annotations

import dataclasses
import difflib
import io
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import Recordings
from inspect_support import call_ids, edit, json_schema, load, run_cli

from jsreplay.cassette.model import Cassette, ServerMessage
from jsreplay.cli.inspecting import load_view
from jsreplay.cli.progress import StatusLine
from jsreplay.inspect.show import ShowOptions, dump_json, view_json_text, view_to_json
from jsreplay.protocol.registry import UnknownField, WireType, encode_unknown

pytestmark = pytest.mark.e2e  # the recordings come from the real client and exporter

EXIT_OK, EXIT_ERROR = 0, 2
METHOD_LINE = re.compile(r"^\s*(\+\d+\.\d{3}s|stream \d+)\s+(controller|router|tunnel)\s+(\S+)\s+(\S+/\S+)\s")


def show_json(path: Path, *options: str) -> dict[str, Any]:
    result = run_cli("show", "--format", "json", *options, path)
    assert result.exit_code == EXIT_OK, result.stderr
    document = result.json()
    jsonschema.validate(document, json_schema("show.schema.json"))
    return document


# ---------------------------------------------------------------------------------------------------- text


def test_text_lists_every_call_in_time_order_with_tunnels_nested(recordings: Recordings) -> None:
    result = run_cli("show", recordings.baseline)
    assert result.exit_code == EXIT_OK
    lines = result.stdout.splitlines()
    outer = [m for line in lines if (m := METHOD_LINE.match(line)) and not line.startswith(" " * 4)]
    view = load(recordings.baseline)
    assert [m.group(4) for m in outer] == [c.short_method for c in view.calls]
    times = [float(m.group(1)[1:-1]) for m in outer]
    assert times == sorted(times)
    # The main tunnel's inner calls are listed under the client's end, in stream order, indented.
    inner = [m.group(4) for line in lines if line.startswith(" " * 4) and (m := METHOD_LINE.match(line))]
    assert inner == [
        "ExporterService/GetReport",
        "ExporterService/DriverCall",
        "ExporterService/DriverCall",
        "ExporterService/StreamingDriverCall",
        "RouterService/Stream",
        "ExporterService/GetStatus",
    ]
    assert sum("tunnel: client end, peer #" in line for line in lines) == 1
    assert sum("tunnel: exporter end, peer #" in line and "(inner calls listed there)" in line for line in lines) == 1
    # Decoded messages, under their call.
    assert any('> DriverCallRequest {uuid: "' in line and 'method: "on"' in line for line in lines)
    assert any("result: {current: 2.0, voltage: 5.0}" in line for line in lines)
    assert "frames out" in result.stdout and "KiB" in result.stdout


def test_method_filter_raw_and_no_tunnel(recordings: Recordings) -> None:
    only_dials = run_cli("show", "--method", "ControllerService/Dial", recordings.baseline).stdout
    assert [m.group(4) for line in only_dials.splitlines() if (m := METHOD_LINE.match(line))] == [
        "ControllerService/Dial",
        "ControllerService/Dial",
    ]
    # A glob on the full path; inner calls select their tunnel, with only the matching inner calls.
    driver_calls = run_cli(
        "show", "--method", "/jumpstarter.v1.ExporterService/*DriverCall", recordings.baseline
    ).stdout
    shown = [m.group(4) for line in driver_calls.splitlines() if (m := METHOD_LINE.match(line))]
    assert shown == [
        "RouterService/Stream",
        "ExporterService/DriverCall",
        "ExporterService/DriverCall",
        "ExporterService/StreamingDriverCall",
    ]
    raw = run_cli("show", "--raw", "--method", "*/Unregister", recordings.baseline).stdout
    reason = b"Exporter shutdown".hex()  # UnregisterRequest.reason is field 2: tag 0x12
    assert re.search(rf"> UnregisterRequest 19 B: 1211{reason}$", raw, re.MULTILINE)
    assert "reason:" not in raw
    no_tunnel = run_cli("show", "--no-tunnel", recordings.baseline).stdout
    assert "ExporterService/" not in no_tunnel and "RouterService/Stream" in no_tunnel


def test_unknown_fields_are_shown_by_number_and_marked(recordings: Recordings, tmp_path: Path) -> None:
    def add_field(c: Cassette) -> Cassette:
        [call] = call_ids(c, "/GetExporter")
        extra = encode_unknown(UnknownField(77, WireType.LENGTH_DELIMITED, b"hello"))
        events = tuple(
            dataclasses.replace(e, data=e.data + extra) if isinstance(e, ServerMessage) and e.call_id == call else e
            for e in c.events
        )
        return dataclasses.replace(c, events=events)

    variant = edit(recordings.baseline, tmp_path / "unknown.msgpack", add_field)
    text = run_cli("show", "--method", "*GetExporter", variant).stdout
    assert '#77: unknown field: "hello" (length_delimited)' in text  # printable bytes read as text
    [call] = show_json(variant, "--method", "*GetExporter")["calls"]
    [response] = call["responses"]
    assert response["unknown_fields"] == ["#77"]
    assert response["value"]["#77"] == [
        {"$unknown": {"number": 77, "wire_type": "LENGTH_DELIMITED", "value": {"$bytes": "aGVsbG8="}}}
    ]


def test_a_corrupt_cassette_is_one_line_and_exit_2(recordings: Recordings, tmp_path: Path) -> None:
    data = recordings.baseline.read_bytes()
    corrupt = tmp_path / "corrupt.msgpack"
    corrupt.write_bytes(data[:200] + b"\xc1" * 64 + data[264:])  # 0xc1 is never valid msgpack
    for command in ("show", "textconv"):
        result = run_cli(command, corrupt)
        assert result.exit_code == EXIT_ERROR
        assert result.stderr.startswith("jsreplay: error: ") and len(result.stderr.strip().splitlines()) == 1


def test_a_cut_off_cassette_still_shows_what_survived(recordings: Recordings, tmp_path: Path) -> None:
    data = recordings.baseline.read_bytes()
    cut = tmp_path / "cut.msgpack"
    cut.write_bytes(data[: len(data) * 2 // 3])
    result = run_cli("show", cut)
    assert result.exit_code == EXIT_OK
    assert "truncated: the file ends inside a record" in result.stdout
    assert "warning" in result.stderr


# ---------------------------------------------------------------------------------------------------- JSON


def test_json_document_validates_and_has_the_documented_shape(recordings: Recordings) -> None:
    document = show_json(recordings.baseline)
    assert document["header"]["schema"]["embedded"] is True
    calls = document["calls"]
    assert [c["id"] for c in calls] == [c.id for c in load(recordings.baseline).calls]
    by_method: dict[str, list[dict[str, Any]]] = {}
    for call in calls:
        by_method.setdefault(call["short_method"], []).append(call)
    [register] = by_method["ControllerService/Register"]
    assert (register["role"], register["caller"], register["status"]) == ("controller", "Exporter", "OK")
    assert register["requests"][0]["type"] == "jumpstarter.v1.RegisterRequest"
    assert register["requests"][0]["value"]["reports"][1]["labels"]["jumpstarter.dev/name"] == "power"
    [status] = by_method["ControllerService/Status"]
    assert (status["status"], status["end"]) == ("CANCELLED", {"kind": "cancel", "by": "client"})
    assert len(status["responses"]) == 3
    streams = by_method["RouterService/Stream"]
    holders = [s for s in streams if s["tunnel"] is not None]
    assert len(holders) == 1 and holders[0]["stream"]["side"] == "client" and holders[0]["caller"] == "Client"
    peer = next(s for s in streams if s["id"] == holders[0]["stream"]["peer"])
    assert (peer["stream"]["side"], peer["tunnel"]) == ("exporter", None)
    inner = holders[0]["tunnel"]
    assert [c["short_method"] for c in inner][:2] == ["ExporterService/GetReport", "ExporterService/DriverCall"]
    assert all(c["role"] == "tunnel" and set(c) == set(register) for c in inner)
    assert inner[1]["requests"][0]["value"]["method"] == "on"
    probes = [s for s in streams if s["stream"]["probe"]]
    assert all(p["tunnel"] is None for p in probes)
    # The CLI prints the document a call at a time, bytes spliced in as base64 after encoding: the same text
    # as dumping it whole, even when a string looks like one of the splicer's tokens.
    view = load(recordings.baseline)
    for options in (ShowOptions(), ShowOptions(raw=True), ShowOptions(methods=("*Stream",))):
        whole = dump_json(view_to_json(view, "c", options))
        assert "".join(view_json_text(view, "c", options)) == whole
    [message] = next(c for c in view.calls if c.short_method == "ControllerService/Unregister").requests
    assert message.value is not None
    message.value = {**message.value, "m": {"$bytes": 10**19, '"$bytes":1' + "0" * 30: b"x", "t": '"$bytes":1'}}
    assert "".join(view_json_text(view, "c")) == dump_json(view_to_json(view, "c"))


def test_json_raw(recordings: Recordings) -> None:
    [call] = show_json(recordings.baseline, "--raw", "--method", "*Unregister")["calls"]
    [request] = call["requests"]
    assert request["value"] is None
    assert bytes.fromhex(request["raw"]) == b"\x12\x11Exporter shutdown"


# ---------------------------------------------------------------------------------------------------- Mermaid

ARROW = re.compile(
    r"^    (Client|Exporter|Controller|Router)(->>|-->>|-x|--x)(Client|Exporter|Controller|Router): (.+)$"
)
NOTE = re.compile(r"^    Note over (Client|Exporter|Controller|Router)(,(Client|Exporter|Controller|Router))?: (.+)$")


def test_mermaid_is_a_well_formed_sequence_diagram(recordings: Recordings) -> None:
    result = run_cli("show", "--format", "mermaid", recordings.baseline)
    assert result.exit_code == EXIT_OK
    lines = result.stdout.splitlines()
    assert lines[0] == "sequenceDiagram"
    participants = [line.split()[1] for line in lines[1:] if line.startswith("    participant ")]
    assert participants == ["Client", "Exporter", "Controller", "Router"]
    body = lines[1 + len(participants) :]
    arrows = []
    for line in body:
        match = ARROW.match(line)
        assert match or NOTE.match(line), f"not a Mermaid arrow or note: {line!r}"
        if match:
            assert ";" not in match.group(4).replace("#59;", "").replace("#35;", "") and "\n" not in line
            arrows.append((*match.groups()[:3], match.group(4)))
    # Who called is known: exporter calls from Exporter, client calls from Client, tunnels from their side.
    assert ("Exporter", "->>", "Controller") == arrows[0][:3] and arrows[0][3].startswith("Register")
    requests = [(a[0], a[3].split()[0]) for a in arrows if a[1] == "->>"]
    assert ("Client", "CreateLease") in requests and ("Client", "Dial") in requests
    assert ("Exporter", "Listen") in requests and ("Exporter", "Unregister") in requests
    assert ("Client", "Stream") in requests and ("Exporter", "Stream") in requests
    inner = [a for a in arrows if a[0] == "Client" and a[2] == "Exporter" and a[1] == "->>"]
    assert [a[3] for a in inner][:3] == ["GetReport", "DriverCall", "DriverCall"]
    # Every call opens with one request arrow: as many as the calls and inner calls that are not probes.
    view = load(recordings.baseline)
    expected = sum(1 for c in view.calls if not (c.stream and c.stream.probe)) + sum(
        len(c.inner or []) for c in view.calls
    )
    assert len(requests) == expected


# ---------------------------------------------------------------------------------------------------- textconv


def test_textconv_is_deterministic_and_masks_volatile_values(recordings: Recordings) -> None:
    first = run_cli("textconv", recordings.baseline)
    again = run_cli("textconv", recordings.baseline)
    assert first.exit_code == EXIT_OK and first.stdout == again.stdout
    text = first.stdout
    view = load(recordings.baseline)
    lease = next(c for c in view.calls if c.short_method == "ControllerService/Dial").requests[0].value["lease_name"]
    assert lease not in text and '{lease_name: "<uuid>"}' in text
    assert "redacted:" not in text.replace("redacted:<fingerprint>", "")
    assert 'uuid: "<driver:power>", method: "on"' in text
    assert "+0." not in text  # no timings


def test_textconv_of_two_runs_differs_only_where_a_race_shows(recordings: Recordings) -> None:
    # The exporter's last ReportStatus may be cancelled by its own shutdown before the answer arrives; textconv
    # writes what was recorded, so that call's outcome is the only line allowed to differ.
    a = run_cli("textconv", recordings.baseline).stdout.splitlines()
    b = run_cli("textconv", recordings.baseline2).stdout.splitlines()
    if a != b:
        changed = [
            line
            for line in difflib.unified_diff(a, b, lineterm="", n=0)
            if line[:1] in "+-" and line[:3] not in ("+++", "---")
        ]
        assert {line[1:].strip() for line in changed} <= {"- OK", "- CANCELLED", "< {}"}, changed


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_and_silence_elsewhere(recordings: Recordings) -> None:
    terminal = _Terminal()
    view = load_view(recordings.baseline, status=StatusLine(stream=terminal, interval=0))
    assert view.calls
    written = terminal.getvalue()
    assert "decoding calls" in written and "decoding tunnels" in written
    assert written.endswith("\r\x1b[K")  # the status line is cleared before any output
    pipe = io.StringIO()
    load_view(recordings.baseline, status=StatusLine(stream=pipe, interval=0))
    assert pipe.getvalue() == ""
