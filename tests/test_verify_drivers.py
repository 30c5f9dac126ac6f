"""`jsreplay verify` with real drivers (shell, opendal, pyserial, composite, power and echo) and the real 0.9.0
exporter, on cassettes recorded against the fake cluster in both of its Listen behaviours (held open after the
lease ends, or ended with OK at the lease end as a real controller may); and really changed exporters.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from jumpstarter.driver import Driver, export
from jumpstarter_driver_composite.driver import Composite
from jumpstarter_driver_opendal.driver import Opendal
from jumpstarter_driver_power.driver import MockPower
from jumpstarter_driver_shell.driver import Shell

from jsreplay.testing import run_exporter
from jsreplay.testing.drivers import SCENARIOS, SHELL_SCRIPT, DriverScenario
from jsreplay.testing.recording import record_scenario
from jsreplay.verify import Verdict, VerifyReport, verifying
from jsreplay.verify.handles import find_handouts, leaves

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

STEP_TIMEOUT = 10.0
MAX_REPORT_LINES = 100
FIGURES: dict[str, tuple[float, int]] = {}  # test -> (seconds, report lines), printed at the end


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def cassettes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str, bool], Awaitable[Path]]]:
    """Records a scenario on first use (per Listen behaviour) and keeps it for the module."""
    made: dict[tuple[str, bool], Path] = {}
    folder = tmp_path_factory.mktemp("verify-drivers")

    async def get(name: str, listen_ends: bool) -> Path:
        if (name, listen_ends) not in made:
            scenario = SCENARIOS[name]
            cassette = folder / f"{name}-{'ends' if listen_ends else 'open'}.msgpack"
            await record_scenario(
                cassette,
                drivers=scenario.drivers,
                client_side=scenario.client(),
                cluster_kwargs={"listen_ends_at_lease_end": listen_ends},
            )
            made[(name, listen_ends)] = cassette
        return made[(name, listen_ends)]

    yield get
    for name, (seconds, lines) in FIGURES.items():
        print(f"\n{name}: verify {seconds:.1f}s, report {lines} lines")


async def verify_against(cassette: Path, drivers: Callable[[], Driver], label: str) -> tuple[VerifyReport, str]:
    started = time.monotonic()
    with anyio.fail_after(60):
        async with verifying(cassette, timeout=STEP_TIMEOUT) as v:
            async with run_exporter(v.endpoint, "any-token", v.ca_pem, "exporter-1", drivers=drivers):
                report = await v.wait()
    text = report.render_text()
    FIGURES[label] = (time.monotonic() - started, len(text.splitlines()))
    assert len(text.splitlines()) < MAX_REPORT_LINES, text
    assert "Traceback" not in text
    return report, text


# ---------------------------------------------------------------------------------------------------- same


@pytest.mark.parametrize("listen_ends", [False, True], ids=["listen-held", "listen-ends"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_same_exporter_verifies_same(
    cassettes: Callable[[str, bool], Awaitable[Path]], name: str, listen_ends: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    cassette = await cassettes(name, listen_ends)
    capfd.readouterr()
    scenario: DriverScenario = SCENARIOS[name]
    report, text = await verify_against(cassette, scenario.drivers, f"{name}/{'ends' if listen_ends else 'held'}")
    assert report.same, text
    assert report.exit_code == 0
    assert report.calls and all(c.verdict is Verdict.SAME for c in report.calls)
    assert sorted(t.state.value for t in report.tunnels) == ["driven", "driven"], text
    assert not report.misses and not report.missing_controller, text
    _, err = capfd.readouterr()
    assert "Traceback" not in err


async def test_handouts_found_by_place_in_the_recording(cassettes: Callable[[str, bool], Awaitable[Path]]) -> None:
    from jsreplay.verify.plan import TunnelKind, load_plan

    plan = load_plan(await cassettes("opendal", False))
    (tunnel,) = [t for t in plan.tunnels.values() if t.kind is TunnelKind.SESSION]
    places = find_handouts(plan.registry, tunnel.calls)
    # Two file handles (open's results) and two resource ids (resource streams' initial metadata); and the
    # resource's kind, which the client passes back too (mapped to itself).
    assert [p.value for p in places if p.atom is None] == ["client_stream"]
    assert sorted((p.part, p.path) for p in places if p.atom is not None) == [
        ("metadata", ("resource", "$json", "uuid")),
        ("metadata", ("resource", "$json", "uuid")),
        ("response", ("result",)),
        ("response", ("result",)),
    ]
    assert list(leaves({"a": ['{"b": "x"}', 1]})) == [(("a", 0, "$json", "b"), "x")]


# ---------------------------------------------------------------------------------------------------- changed


class LoudShell(Shell):
    """The shell driver, whose `lines` method prints something else."""


def changed_shell() -> Driver:
    shell = LoudShell(methods={"lines": SHELL_SCRIPT.replace("two", "TWO")}, shell=["bash", "-c"], timeout=30)
    return Composite(children={"shell": shell, "power": MockPower()})  # type: ignore[abstract]


async def test_driver_answering_differently(cassettes: Callable[[str, bool], Awaitable[Path]]) -> None:
    report, text = await verify_against(await cassettes("shell", True), changed_shell, "changed/answer")
    assert report.exit_code == 1
    call = "RouterService/Stream[0] > ExporterService/StreamingDriverCall[0]"
    different = [c for c in report.calls if c.verdict is not Verdict.SAME]
    assert [c.path for c in different] == [call], text
    assert [(d.path, d.recorded, d.live) for d in different[0].differences] == [
        (call + ".responses[1].result[1]", "two\n", "TWO\n")
    ], text
    assert f"different {call}" in text


def missing_driver() -> Driver:
    return Composite(children={"shell": Shell(methods={"lines": SHELL_SCRIPT})})  # type: ignore[abstract]


async def test_driver_missing(cassettes: Callable[[str, bool], Awaitable[Path]]) -> None:
    report, text = await verify_against(await cassettes("shell", True), missing_driver, "changed/missing driver")
    assert report.exit_code == 1
    calls = {c.path: c for c in report.calls}
    get_report = calls["RouterService/Stream[0] > ExporterService/GetReport[0]"]
    assert get_report.verdict is Verdict.DIFFERENT
    assert any(d.kind == "field_removed" and ".responses[0].reports" in d.path for d in get_report.differences), text
    on = calls["RouterService/Stream[0] > ExporterService/DriverCall[1]"]
    assert on.verdict is Verdict.DIFFERENT
    assert [(d.path.removeprefix(on.path), d.recorded) for d in on.differences][:1] == [
        (".responses[0]", on.differences[0].recorded)
    ]
    assert "recorded drivers with no live driver at the same place: #0/power" in text


class Extra(Driver):
    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    def ping(self) -> str:
        return "pong"


def extra_driver() -> Driver:
    storage = Opendal(scheme="fs", kwargs={"root": str(Path(__import__("tempfile").mkdtemp()))})
    return Composite(children={"storage": storage, "extra": Extra()})  # type: ignore[abstract]


async def test_extra_driver(cassettes: Callable[[str, bool], Awaitable[Path]]) -> None:
    report, text = await verify_against(await cassettes("opendal", True), extra_driver, "changed/extra driver")
    assert report.exit_code == 1
    different = [c for c in report.calls if c.verdict is not Verdict.SAME]
    # Register no longer matches (a new driver in its reports), and GetReport lists it: the rest is the same.
    assert [c.path for c in different] == ["RouterService/Stream[0] > ExporterService/GetReport[0]"], text
    assert any(d.kind == "field_added" and ".responses[0].reports[" in d.path for d in different[0].differences)
    assert [m.method for m in report.misses] == ["/jumpstarter.v1.ControllerService/Register"]


def test_report_folds_repeats() -> None:
    from jsreplay.verify import ControllerMiss, TunnelReport, TunnelState
    from jsreplay.verify.report import fold_misses, fold_tunnels

    extra = TunnelReport("", "unknown", TunnelState.EXTRA, "the exporter presented the token of x again")
    folded = fold_tunnels([extra] * 30)
    assert [t.count for t in folded] == [30]
    report = VerifyReport(
        cassette="c", tunnels=folded, misses=fold_misses([ControllerMiss("/a/Listen", "used", "k")] * 14)
    )
    text = report.render_text()
    assert len(text.splitlines()) == 5, text
    assert "router stream extra (x30)" in text and "Listen x14" in text
    assert report.counts()["extra"] == 30 and report.counts()["controller_misses"] == 14


def test_streamed_output_split_otherwise_is_the_same_answer() -> None:
    # The shell driver polls its process: whether the exit code comes with the last line or after it races the
    # process's exit, in a recording as live. Verify compares streamed output as diff does.
    from jsreplay.verify.compare import _as_output

    def out(*results: list[object]) -> list[dict[str, object]]:
        return [{"uuid": "<driver:shell>", "result": list(r)} for r in results]

    joined = out(["one\n", "", None], ["", "two\n", None], ["three\n", "", 0.0])
    split = out(["one\n", "", None], ["", "two\n", None], ["three\n", "", None], ["", "", 0.0])
    a, b = _as_output(joined, split)
    assert a == b == joined
    changed = out(["one\n", "", None], ["", "TWO\n", None], ["three\n", "", None], ["", "", 0.0])
    a, b = _as_output(joined, changed)  # a real change, chunked otherwise: compared as joined output
    assert a == out(["one\nthree\n", "two\n", 0.0]) and b == out(["one\nthree\n", "TWO\n", 0.0])
    same_count = out(["one\n", "", None], ["", "TWO\n", None], ["three\n", "", 0.0])
    assert _as_output(joined, same_count) == (joined, same_count)  # message by message, as recorded
    readings = out([1.0, 2.0], [1.0, 2.0])  # values without text are separate values, never merged
    assert _as_output(readings, readings[:1]) == (readings, readings[:1])
