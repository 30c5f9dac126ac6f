"""Unit tests of the inspect cores: alignment, values, schema comparison, ignores, Mermaid text, docs."""

from __future__ import annotations

import time
from difflib import SequenceMatcher
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from jsreplay.inspect.align import align
from jsreplay.inspect.diff import DiffKind, value_diffs
from jsreplay.inspect.ignores import IGNORED, Normalizer
from jsreplay.inspect.mermaid import text as mermaid_text
from jsreplay.inspect.schema_diff import diff_schemas
from jsreplay.inspect.values import block_lines, inline_text, quote, to_json
from jsreplay.protocol.registry import Registry, UnknownField, WireType
from jsreplay.session.drivers import driver_names
from jsreplay.session.volatile import VOLATILE_FIELDS, IgnoreRule

LEASE = "3f2a61c0-7c1e-4c9a-9f0b-2b1d3c4e5f60"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "inspect.md"


def _cost(a: str, b: str) -> int:
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


# ---------------------------------------------------------------------------------------------------- align


def test_one_added_item_does_not_shift_the_rest() -> None:
    old = ["a", "b", "c", "d"]
    new = ["a", "x", "b", "c", "d"]
    assert align(old, new, str, _cost) == [(0, 0), (None, 1), (1, 2), (2, 3), (3, 4)]


def test_a_changed_item_pairs_with_its_counterpart() -> None:
    old = ["GetReport", "on", "off"]
    new = ["GetReport", "oN", "off"]
    assert align(old, new, str, _cost) == [(0, 0), (1, 1), (2, 2)]


def test_an_inserted_item_next_to_a_changed_one() -> None:
    # "call" changed to "cell" and "zzzz" was inserted before it: pair call/cell, add zzzz.
    pairs = align(["head", "call", "tail"], ["head", "zzzz", "cell", "tail"], str, _cost)
    assert pairs == [(0, 0), (None, 1), (1, 2), (2, 3)]


def test_a_changed_item_that_moved_is_still_paired_but_a_pure_move_is_not() -> None:
    assert (0, 2) in align(["abcd", "x", "y"], ["x", "y", "abce"], str, _cost)
    moved = align(["abcd", "x", "y"], ["x", "y", "abcd"], str, _cost)
    assert (0, None) in moved and (None, 2) in moved


def test_very_different_items_are_removed_and_added() -> None:
    pairs = align(["aaaaaaaaaa", "bbbbbbbbbb", "same"], ["zzzzzzzzzz", "same"], str, _cost)
    assert sorted(pairs, key=str) == sorted([(0, None), (1, None), (None, 0), (2, 1)], key=str)
    # ...unless each is the only one left at its place: then it is the same call, changed.
    assert align(["aaaaaaaaaa", "same"], ["zzzzzzzzzz", "same"], str, _cost) == [(0, 0), (1, 1)]


# ---------------------------------------------------------------------------------------------------- values


def test_json_tags_bytes_unknown_fields_and_odd_floats() -> None:
    value = {
        "payload": b"\x00\x01",
        "#7": [UnknownField(7, WireType.VARINT, 42)],
        "x": float("nan"),
        "big": b"\xff" * 300,
    }
    out = to_json(value, max_bytes=256)
    assert out["payload"] == {"$bytes": "AAE="}
    assert out["#7"] == [{"$unknown": {"number": 7, "wire_type": "VARINT", "value": 42}}]
    assert out["x"] == {"$float": "nan"}
    assert out["big"]["$bytes_len"] == 300 and len(out["big"]["$sha256"]) == 64


def test_text_escapes_control_characters_and_marks_unknown_fields() -> None:
    assert quote("a\x1b[31mb\u0085") == '"a\\u001b[31mb\\u0085"'
    line = inline_text({"name": "x", "#9": [UnknownField(9, WireType.LENGTH_DELIMITED, b"hi")], "n": None})
    assert line == '{name: "x", #9: unknown field: "hi" (length_delimited), n: null}'
    lines = block_lines({"a": {"b": "c" * 50}, "d": [1, 2]}, "", width=30)
    assert lines[0] == "a:" and lines[1].startswith("  b: ") and lines[-1] == "d: [1, 2]"


# ---------------------------------------------------------------------------------------------------- value diffs


def test_value_diffs_name_each_change_with_its_path() -> None:
    old = {"a": 1, "list": [{"k": 1}, {"k": 2}], "gone": True, "m": {"x y": "1"}}
    extra = [UnknownField(5, WireType.VARINT, 1)]
    new = {"a": 2, "list": [{"k": 1}, {"k": 3}, {"k": 4}], "m": {"x y": "2"}, "#5": extra}
    found = {(d.kind, d.path, repr(d.old), repr(d.new)) for d in value_diffs(old, new, "M")}
    assert found == {
        (DiffKind.FIELD_CHANGED, "M.a", "1", "2"),
        (DiffKind.FIELD_CHANGED, "M.list[1].k", "2", "3"),
        (DiffKind.FIELD_ADDED, "M.list[2]", "None", "{'k': 4}"),
        (DiffKind.FIELD_REMOVED, "M.gone", "True", "None"),
        (DiffKind.FIELD_CHANGED, 'M.m["x y"]', "'1'", "'2'"),
        (DiffKind.UNKNOWN_FIELD_ADDED, "M.#5", "None", repr(extra)),
    }


def test_value_diffs_tell_types_apart() -> None:
    assert [d.kind for d in value_diffs({"v": 1}, {"v": 1.0}, "")] == [DiffKind.FIELD_CHANGED]
    assert [d.kind for d in value_diffs({"v": True}, {"v": 1}, "")] == [DiffKind.FIELD_CHANGED]
    assert value_diffs({"v": float("nan")}, {"v": float("nan")}, "") == []


# ---------------------------------------------------------------------------------------------------- schemas


def _schema(edit: str | None = None) -> bytes:
    fds = descriptor_pb2.FileDescriptorSet.FromString(Registry.default().descriptor_set)
    for file in fds.file:
        for message in file.message_type:
            if file.package == "jumpstarter.v1" and message.name == "DialResponse":
                if edit == "retype":
                    message.field[0].type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                elif edit == "renumber":
                    message.field[1].number = 9
                elif edit == "add":
                    message.field.add(name="router_region", number=3, type=9, label=1)
            if file.package == "jumpstarter.v1" and message.name == "ResetRequest" and edit == "drop_message":
                file.message_type.remove(message)
                break
        for service in file.service:
            if service.name == "ControllerService" and edit == "stream_dial":
                [dial] = [m for m in service.method if m.name == "Dial"]
                dial.server_streaming = True
    return fds.SerializeToString()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("retype", [("changed", "field", "jumpstarter.v1.DialResponse.router_endpoint", "string = 1", "bytes = 1")]),
        ("renumber", [("changed", "field", "jumpstarter.v1.DialResponse.router_token", "string = 2", "string = 9")]),
        ("add", [("added", "field", "jumpstarter.v1.DialResponse.router_region", None, "string = 3")]),
        ("drop_message", [("removed", "message", "jumpstarter.v1.ResetRequest", "message", None)]),
        (
            "stream_dial",
            [
                (
                    "changed",
                    "method",
                    "/jumpstarter.v1.ControllerService/Dial",
                    "(jumpstarter.v1.DialRequest) returns (jumpstarter.v1.DialResponse)",
                    "(jumpstarter.v1.DialRequest) returns (stream jumpstarter.v1.DialResponse)",
                )
            ],
        ),
    ],
)
def test_schema_changes(edit: str, expected: list[tuple[str, str, str, str | None, str | None]]) -> None:
    changes = diff_schemas(_schema(), _schema(edit))
    assert [(c.change, c.element, c.name, c.old, c.new) for c in changes] == expected
    assert diff_schemas(_schema(), _schema()) == []


# ---------------------------------------------------------------------------------------------------- ignores


def test_ignore_rules_accept_paths_as_diff_prints_them() -> None:
    assert IgnoreRule('labels["example.com/board"]').matches(
        "ClientService/GetExporter.response.labels.example.com/board"
    )
    assert IgnoreRule("conditions[0].reason").matches("ClientService/GetLease.response.conditions.reason")
    assert IgnoreRule("selector").matches("ClientService/CreateLease.request.lease.selector")
    assert not IgnoreRule("selector").matches("ClientService/CreateLease.request.lease.selectors")
    assert not IgnoreRule("ClientService/GetLease.response.name").matches("ClientService/GetLease.request.name")


def test_normalizer_masks_volatile_values_and_names_drivers() -> None:
    drivers = driver_names(
        [
            {"uuid": "11111111-1111-1111-1111-111111111111", "labels": {}},
            {
                "uuid": "22222222-2222-2222-2222-222222222222",
                "parent_uuid": "11111111-1111-1111-1111-111111111111",
                "labels": {"jumpstarter.dev/name": "power"},
            },
        ]
    )
    normalizer = Normalizer(
        drivers=drivers, ignores=["DialResponse.nothing", "ExporterService/DriverCall.request.args"]
    )
    value = normalizer.value(
        "ExporterService/DriverCall.request",
        {"uuid": "22222222-2222-2222-2222-222222222222", "method": "on", "args": [1]},
    )
    assert value == {"uuid": "<driver:power>", "method": "on"}  # --ignore drops the field
    lease = normalizer.value(
        "ClientService/GetLease.response",
        {
            "name": "namespaces/default/leases/3f2a61c0-7c1e-4c9a-9f0b-2b1d3c4e5f60",
            "effective_begin_time": {"seconds": 5},
        },
    )
    assert lease == {"name": "namespaces/default/leases/<uuid>", "effective_begin_time": IGNORED}  # defaults mask
    assert normalizer.text("Bearer redacted:0123456789ab") == "Bearer redacted:<fingerprint>"
    unknown = normalizer.value(
        "X/Y.response", {"#9": [UnknownField(9, WireType.LENGTH_DELIMITED, b"redacted:0123456789ab")]}
    )
    assert unknown["#9"][0].value == b"redacted:<fingerprint>"
    assert normalizer.metadata("X/Y.metadata", [("User-Agent", "grpc/1"), ("x-run", "42")]) == {
        "user-agent": [IGNORED],
        "x-run": ["42"],
    }
    plain = Normalizer(defaults=False)
    assert plain.text(LEASE) == LEASE


# ---------------------------------------------------------------------------------------------------- mermaid, docs


def test_mermaid_text_keeps_only_safe_characters() -> None:
    assert mermaid_text("Dial #7; ok\nnext <b>") == "Dial #35;7#59; ok next  b"


def test_the_docs_list_every_default_ignore_and_every_kind() -> None:
    docs = DOCS.read_text()
    for rule in VOLATILE_FIELDS:
        assert f"`{rule.pattern}`" in docs, rule.pattern
    for kind in DiffKind:
        assert f"`{kind.value}`" in docs, kind.value


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.text(alphabet="abc", min_size=1, max_size=3), max_size=12),
    st.lists(st.text(alphabet="abc", min_size=1, max_size=3), max_size=12),
)
def test_alignment_accounts_for_every_item_once(old: list[str], new: list[str]) -> None:
    pairs = align(old, new, str, _cost)
    assert sorted(i for i, _ in pairs if i is not None) == list(range(len(old)))
    assert sorted(j for _, j in pairs if j is not None) == list(range(len(new)))
    # The longest run of equal items is kept: no more items are left unmatched than difflib would leave.
    matched_equal = sum(1 for i, j in pairs if i is not None and j is not None and old[i] == new[j])
    assert matched_equal >= sum(
        block.size for block in SequenceMatcher(None, old, new, autojunk=False).get_matching_blocks()
    )


def test_long_groups_align_in_linear_time() -> None:
    # 2,000 calls whose every fourth one differs (a race on each of 500 sessions): the exact LCS search is
    # quadratic per block here; the resynchronising walk pairs each changed call with its counterpart.
    old = ["available", "ready", "ok", "offline"] * 500
    new = ["available", "ready", "cancelled", "offline"] * 500
    new.insert(1000, "extra")
    started = time.perf_counter()
    pairs = align(old, new, str, lambda a, b: 0 if a == b else 1)
    assert time.perf_counter() - started < 2.0
    assert (2, 2) in pairs and (1002, 1003) in pairs and (None, 1000) in pairs
    assert sorted(i for i, _ in pairs if i is not None) == list(range(len(old)))
    assert sorted(j for _, j in pairs if j is not None) == list(range(len(new)))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.sampled_from("abcd"), min_size=300, max_size=400), st.data())
def test_the_long_path_accounts_for_every_item_once(old: list[str], data: st.DataObject) -> None:
    new = data.draw(st.lists(st.sampled_from("abcde"), min_size=300, max_size=400))
    pairs = align(old, new, str, _cost)
    assert sorted(i for i, _ in pairs if i is not None) == list(range(len(old)))
    assert sorted(j for _, j in pairs if j is not None) == list(range(len(new)))
