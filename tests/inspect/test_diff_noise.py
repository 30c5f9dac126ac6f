"""Two recordings of one session diff as "no difference"; real changes in the same sessions still show, one line each.

Every scenario of `jsreplay.testing.sweeps` is recorded `SWEEP_COUNT` times with the real 0.9.0 client and
exporter (once per module) and every pair is diffed. The noise each run brings on its own (a shell's exit code
merged into its last output or not, a GOAWAY at a byte stream's teardown, a Listen ending OK or CANCELLED, a
log stream cancelled before its last line) does not come on demand, so those are also made by editing a
recording's decoded view, where they are certain. `scripts/diff_sweep.py` repeats the sweep and prints a tally.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from inspect_support import edit, json_schema, load, replace_events, run_cli
from jumpstarter.driver import Driver
from jumpstarter_driver_composite.driver import Composite
from jumpstarter_driver_power.driver import MockPower
from jumpstarter_driver_shell.driver import Shell

from jsreplay.cassette.model import ServerMessage
from jsreplay.inspect.diff import DiffKind, DiffOptions, DiffReport, IgnoredKind, diff_views
from jsreplay.inspect.ignores import Normalizer
from jsreplay.inspect.view import CallEnd, CassetteView, EndKind, ViewCall, ViewMessage
from jsreplay.testing.drivers import SCENARIOS, SHELL_SCRIPT, DriverScenario
from jsreplay.testing.recording import LABELS, record_scenario
from jsreplay.testing.sweeps import SWEEP_NAMES, record_sweep

SWEEP_COUNT = 5  # 10 pairs per scenario


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("sweeps")

    async def record_all() -> dict[str, list[Path]]:
        out = {}
        for name in SWEEP_NAMES:
            (root / name).mkdir()
            out[name] = await record_sweep(name, root / name, SWEEP_COUNT)
        return out

    return asyncio.run(record_all())


@pytest.fixture(scope="module")
def views(sweeps: dict[str, list[Path]]) -> dict[str, list[CassetteView]]:
    return {name: [load(p) for p in paths] for name, paths in sweeps.items()}


def _lines(report: DiffReport) -> list[str]:
    return [f"{d.kind.value} {d.path}: {d.old!r} -> {d.new!r}" for d in report.differences]


# ---------------------------------------------------------------------------------------------------- no difference


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_every_pair_of_recordings_of_one_scenario_is_no_difference(
    views: dict[str, list[CassetteView]], name: str
) -> None:
    found = {}
    for (i, a), (j, b) in itertools.combinations(enumerate(views[name]), 2):
        report = diff_views(a, b)
        if report.differences:
            found[(i, j)] = _lines(report)
    assert not found, f"{len(found)} of 10 pairs differ: {found}"


def test_the_command_says_no_difference_and_exits_0(sweeps: dict[str, list[Path]]) -> None:
    result = run_cli("diff", *sweeps["logstream"][:2])
    assert result.exit_code == 0, result.stdout
    assert "equivalent: no differences" in result.stdout


# ---------------------------------------------------------------------------------------------------- real changes


def _changed_shell(script: str) -> Callable[[], Driver]:
    def drivers() -> Driver:
        shell = Shell(methods={"lines": script}, shell=["bash", "-c"], timeout=30)
        return Composite(children={"shell": shell, "power": MockPower()})  # type: ignore[abstract]

    return drivers


def _shell_steps_with(*, env: dict[str, str] | None = None, extra_call: bool = False, methods: bool = True) -> Any:
    def steps(root: Any) -> dict[str, Any]:
        shell = root.children["shell"]
        got = shell.call("get_methods") if methods else None
        chunks = [tuple(c) for c in shell.streamingcall("call_method", "lines", env or {})]
        root.children["power"].on()
        if extra_call:
            root.children["power"].off()
        return {"methods": got, "chunks": chunks}

    return steps


def _shell_run(*, drivers: Callable[[], Driver] | None = None, **steps: Any) -> dict[str, Any]:
    scenario = DriverScenario("changed", drivers or SCENARIOS["shell"].drivers, _shell_steps_with(**steps))
    return {"drivers": scenario.drivers, "client_side": scenario.client()}


#: name -> (baseline scenario, record_scenario arguments, the one kind expected, a part of its path)
CHANGES: dict[str, tuple[str, dict[str, Any], DiffKind, str]] = {
    "exporter label": (
        "power-echo",
        {"labels": {**LABELS, "jsreplay.dev/test": "another-cluster"}},
        DiffKind.FIELD_CHANGED,
        'ClientService/GetExporter[0].responses[0].labels["jsreplay.dev/test"]',
    ),
    "shell output": (
        "shell",
        _shell_run(drivers=_changed_shell(SHELL_SCRIPT.replace("echo three", "echo four"))),
        DiffKind.FIELD_CHANGED,
        "ExporterService/StreamingDriverCall[0].responses[",
    ),
    "driver argument": (
        "shell",
        _shell_run(env={"GREETING": "hello"}),
        DiffKind.FIELD_ADDED,
        "ExporterService/StreamingDriverCall[0].requests[0].args[1].GREETING",
    ),
    "new call": ("shell", _shell_run(extra_call=True), DiffKind.CALL_ADDED, "ExporterService/DriverCall["),
    "missing call": ("shell", _shell_run(methods=False), DiffKind.CALL_REMOVED, "ExporterService/DriverCall[0]"),
}


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("changed")

    async def record_all() -> dict[str, Path]:
        out = {}
        for name, (_, kwargs, _, _) in CHANGES.items():
            out[name] = root / (name.replace(" ", "-") + ".msgpack")
            await record_scenario(out[name], **kwargs)
        return out

    return asyncio.run(record_all())


@pytest.mark.parametrize("name", CHANGES)
def test_a_real_change_shows_in_one_line(
    views: dict[str, list[CassetteView]], changed: dict[str, Path], name: str
) -> None:
    baseline, _, kind, where = CHANGES[name]
    new = load(changed[name])
    for old in views[baseline][:3]:  # against several baselines: whatever their noise, the one change shows
        report = diff_views(old, new)
        assert len(report.differences) == 1, _lines(report)
        assert report.differences[0].kind is kind, _lines(report)
        assert where in report.differences[0].path, _lines(report)


def test_a_new_field_shows_in_one_line(sweeps: dict[str, list[Path]], tmp_path: Path) -> None:
    # A newer peer adds field 101 (varint 42) to the GetExporter response.
    base = sweeps["power-echo"][1]
    calls = {c.id for c in load(base).calls if c.method.endswith("/GetExporter")}

    def add_field(c: Any) -> Any:
        return replace_events(
            c,
            lambda e: (
                dataclasses.replace(e, data=e.data + b"\xa8\x06\x2a")
                if isinstance(e, ServerMessage) and e.call_id in calls
                else e
            ),
        )

    new = edit(base, tmp_path / "new-field.msgpack", add_field)
    result = run_cli("diff", "--format", "json", base, new)
    assert result.exit_code == 1
    differences = result.json()["differences"]
    assert [(d["kind"], d["path"]) for d in differences] == [
        ("unknown_field_added", "ClientService/GetExporter[0].responses[0].#101")
    ]


# ---------------------------------------------------------------------------------------------------- noise on demand


def _inner(view: CassetteView, method: str) -> list[ViewCall]:
    return [i for c in view.calls for i in c.inner or () if i.method.endswith(method)]


def _copy(view: CassetteView) -> CassetteView:
    """A view whose calls (and inner calls) can be edited without touching the fixture's."""
    calls = []
    for call in view.calls:
        inner = [dataclasses.replace(i, responses=list(i.responses)) for i in call.inner] if call.inner else call.inner
        calls.append(dataclasses.replace(call, inner=inner, responses=list(call.responses)))
    return dataclasses.replace(view, calls=calls)


def _message(like: ViewMessage, value: dict[str, Any]) -> ViewMessage:
    return ViewMessage(data=b"", type_name=like.type_name, value=value)


def _rechunk_exit_code(view: CassetteView, *, output: str | None = None) -> CassetteView:
    """The shell's exit code moved: into a message of its own when it came with the last output, into the last
    output when it came alone (the recordings have either); `output` replaces the last output."""
    view = _copy(view)
    (call,) = _inner(view, "/StreamingDriverCall")
    last = call.responses[-1]
    assert last.value is not None
    text, err, code = last.value["result"]
    if code is not None and (text or err):
        call.responses[-1:] = [
            _message(last, {**last.value, "result": [output if output is not None else text, err, None]}),
            _message(last, {**last.value, "result": ["", "", code]}),
        ]
    else:
        before = call.responses[-2]
        assert before.value is not None
        text, err, _ = before.value["result"]
        merged = [output if output is not None else text, err, code]
        call.responses[-2:] = [_message(before, {**before.value, "result": merged})]
    return view


def _show_ignored(old: CassetteView, new: CassetteView) -> DiffReport:
    return diff_views(old, new, DiffOptions(show_ignored=True))


def test_an_exit_code_in_a_message_of_its_own_is_no_difference(views: dict[str, list[CassetteView]]) -> None:
    old, new = views["shell"][0], _rechunk_exit_code(views["shell"][1])
    report = _show_ignored(old, new)
    assert report.differences == [], _lines(report)
    assert IgnoredKind.STREAM_CHUNKING in {g.kind for g in report.ignored}


def test_a_changed_output_split_otherwise_is_one_line(views: dict[str, list[CassetteView]]) -> None:
    old, new = views["shell"][0], _rechunk_exit_code(views["shell"][1], output="four\n")
    report = diff_views(old, new)
    assert [(d.kind, d.path.split(" > ")[-1]) for d in report.differences] == [
        (DiffKind.FIELD_CHANGED, "ExporterService/StreamingDriverCall[0].responses[0].result[0]")
    ], _lines(report)
    assert report.differences[0].old == "one\nthree\n" and report.differences[0].new == "one\nfour\n"


def test_a_goaway_at_a_byte_streams_teardown_is_no_difference(views: dict[str, list[CassetteView]]) -> None:
    old, new = views["power-echo"][0], _copy(views["power-echo"][1])
    (stream,) = _inner(new, "RouterService/Stream")
    goaway = {"frame_type": "FRAME_TYPE_GOAWAY"}
    if stream.responses[-1].value == goaway:
        del stream.responses[-1]  # the GOAWAY did not come in this run
    else:
        stream.responses.append(_message(stream.responses[-1], goaway))  # it came in this one
    report = _show_ignored(old, new)
    assert report.differences == [], _lines(report)
    assert IgnoredKind.TEARDOWN_FRAMES in {g.kind for g in report.ignored}


def test_a_listen_ending_ok_or_cancelled_is_no_difference(views: dict[str, list[CassetteView]]) -> None:
    # Two sessions: two Listens, both cancelled by the exporter at the end of its lease; in another run the
    # first one ended OK (the controller closed it first).
    old, new = views["two-sessions"][0], _copy(views["two-sessions"][1])
    listens = [c for c in new.calls if c.method.endswith("/Listen")]
    assert len(listens) == 2 and all(c.end.kind is EndKind.CANCEL for c in listens)
    index = new.calls.index(listens[0])
    new.calls[index] = dataclasses.replace(listens[0], end=CallEnd(EndKind.STATUS, "OK", t_ns=listens[0].end.t_ns))
    report = _show_ignored(old, new)
    assert report.differences == [], _lines(report)
    assert IgnoredKind.OUTCOME_RACE in {g.kind for g in report.ignored}


def test_a_log_stream_cancelled_before_its_last_line_is_no_difference(views: dict[str, list[CassetteView]]) -> None:
    old, new = views["logstream"][0], _copy(views["logstream"][1])
    (logs,) = _inner(new, "/LogStream")
    assert logs.end.status == "CANCELLED"
    del logs.responses[-1]
    report = _show_ignored(old, new)
    assert report.differences == [], _lines(report)
    assert IgnoredKind.CANCELLED_EARLY in {g.kind for g in report.ignored}


def test_log_texts_are_masked_and_the_rest_of_the_text_still_compares() -> None:
    normalizer = Normalizer(addresses=("127.0.0.1:33493", "127.0.0.1:41234"))
    text = (
        "2026-12-03 07:06:52,944 router 127.0.0.1:33493 via localhost:41234 (port 41234), "
        "socket unix:///tmp/jumpstarter-hb8y_3ug.sock at 07:06:52.941102+00:00"
    )
    assert normalizer.text(text) == (
        "<time> router <router> via <router> (port <router>), socket unix://<tmp> at <time>"
    )
    # Other numbers, versions and paths stay: a real change there shows.
    assert (
        normalizer.text("version 1.2.3 on /dev/ttyUSB0, 12:30, port 22")
        == "version 1.2.3 on /dev/ttyUSB0, 12:30, port 22"
    )
    assert Normalizer(defaults=False).text(text) == text


# ---------------------------------------------------------------------------------------------------- --show-ignored


def test_show_ignored_lists_what_was_treated_as_the_same(sweeps: dict[str, list[Path]], tmp_path: Path) -> None:
    old, new = sweeps["logstream"][:2]
    result = run_cli("diff", "--show-ignored", "--format", "json", old, new)
    assert result.exit_code == 0, result.stdout
    document = result.json()
    jsonschema.validate(document, json_schema("diff.schema.json"))
    assert document["equivalent"] is True and document["differences"] == []
    whys = {(g["rule"], g["why"]) for g in document["ignored"]}
    assert ("masked", "a temporary path; a time") in whys
    assert ("masked", "the cluster's or the proxy's address") in whys
    assert any(rule == "masked" and "bearer tokens" in why for rule, why in whys)
    logs = [g for g in document["ignored"] if "LogStream" in g["path"]]
    assert logs and all(g["old"] != g["new"] for g in logs)

    text = run_cli("diff", "--show-ignored", old, new)
    assert text.exit_code == 0
    assert "[ignored: masked]  a temporary path; a time" in text.stdout
    assert text.stdout.rstrip().endswith("equivalent: no differences")
    # Without the flag the document is as it was: no "ignored" key.
    assert "ignored" not in json.loads(run_cli("diff", "--format", "json", old, new).stdout)


def test_the_docs_name_every_ignored_rule_and_mask() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "inspect.md").read_text()
    for kind in IgnoredKind:
        assert f"`{kind.value}`" in docs, kind.value
    for token in ("`<router>`", "`<tmp>`", "`<time>`", "--show-ignored"):
        assert token in docs, token
