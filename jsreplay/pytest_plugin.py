"""pytest plugin (entry point `pytest11`): serve cassettes to tests, or record them.

    @pytest.mark.jsreplay("cassettes/power.msgpack")
    def test_power(jsreplay_server):
        ...  # point a Jumpstarter client at jsreplay_server.endpoint, trusting jsreplay_server.ca_pem

The fixture runs the server on its own event loop in a background thread, so it serves blocking tests (the
Jumpstarter client API is blocking) and async tests alike. `--jsreplay-record-mode once|all` records through
`jsreplay.recording(...)` to `--jsreplay-upstream` instead; the fixture then yields the recording proxy, which has
the same `endpoint`, `ca_pem` and `ca_file`. A replayed test that leaves misses fails. See docs/pytest.md.

jsreplay itself (grpc and the rest) is imported only when a test uses the fixture: the plugin is loaded into
every pytest run in an environment where jsreplay is installed.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from jsreplay.replay.record_mode import PLUGIN_MODES, RecordMode

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal

    from jsreplay.replay.coverage import Coverage
    from jsreplay.replay.faults import FaultPlan
    from jsreplay.replay.report import Miss, ReplayReport
    from jsreplay.replay.server import ReplayServer

__all__ = ["JsreplayEndpoint"]

MATCH_MODES = ("default", "strict", "order")  # jsreplay.replay.MatchMode's values, without importing it here
MARKER = "jsreplay"
_MARKER_OPTIONS = {"match", "ignores", "allow_repeats", "fail_unused", "faults", "delays", "cut_tunnel"}
_WORKER_KEY = "jsreplay_coverage"  # what an xdist worker hands the controller: its coverage as JSON


class JsreplayEndpoint(Protocol):
    """What `jsreplay_server` yields, replaying (`ReplayServer`) or recording (`RecordingProxy`)."""

    @property
    def endpoint(self) -> str: ...

    @property
    def ca_pem(self) -> bytes | None: ...

    @property
    def ca_file(self) -> Path | None: ...


@dataclass(frozen=True)
class _Plan:
    cassettes: tuple[Path, ...]
    record: bool
    match: str
    ignores: tuple[str, ...]
    allow_repeats: bool
    fail_unused: bool
    faults: FaultPlan | None


_MISSES = pytest.StashKey[Callable[[], "list[Miss]"]]()  # the running replay's misses so far
_CASSETTES = pytest.StashKey[list[str]]()
_REPORTED = pytest.StashKey[int]()  # how many misses were already reported on the call phase
_PHASES = pytest.StashKey[dict[str, pytest.TestReport]]()  # the test's reports so far, by phase
_COVERAGE = pytest.StashKey[list["Coverage"]]()  # per config: the coverage of each replay this process ran
_OBSERVING = pytest.StashKey[bool]()  # --jsreplay-coverage: every ReplayServer in this process reports here


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("jsreplay", "jsreplay: record and replay Jumpstarter sessions")
    group.addoption(
        "--jsreplay-record-mode",
        choices=[m.value for m in PLUGIN_MODES],
        default="none",
        help="none (default): replay cassettes; once: record a cassette that does not exist yet, replay the "
        "others; all: re-record every cassette (overwrites). Recording needs --jsreplay-upstream.",
    )
    group.addoption(
        "--jsreplay-upstream",
        metavar="HOST:PORT",
        default=None,
        help="the real controller to record from",
    )
    group.addoption(
        "--jsreplay-upstream-ca",
        metavar="FILE",
        default=None,
        help="PEM CA to trust for the upstream (default: the system roots)",
    )
    group.addoption(
        "--jsreplay-fail-unused",
        action="store_true",
        default=False,
        help="fail a replayed test that leaves a recording unused (polls and other peers' calls excepted)",
    )
    group.addoption(
        "--jsreplay-fault",
        metavar="SPEC",
        action="append",
        default=[],
        help="inject a fault in every replayed test: SELECTOR=CODE[:details], e.g. "
        "'ExporterService/DriverCall[power.on]#1=UNAVAILABLE:busy' (repeatable)",
    )
    group.addoption(
        "--jsreplay-delay",
        metavar="SPEC",
        action="append",
        default=[],
        help="delay calls in every replayed test: SELECTOR=SECONDS, e.g. 'ExporterService/DriverCall=0.5s'",
    )
    group.addoption(
        "--jsreplay-cut-tunnel",
        metavar="SPEC",
        action="append",
        default=[],
        help="end router streams in every replayed test: after=BYTES or at=SELECTOR",
    )
    group.addoption(
        "--jsreplay-coverage",
        metavar="FILE",
        default=None,
        help="write the session's combined replay coverage (every replay in the run, all xdist workers) as JSON",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "jsreplay(*cassettes, match='default', ignores=(), allow_repeats=False, fail_unused=False, faults=(), "
        "delays=(), cut_tunnel=()): cassettes the jsreplay_server fixture serves (paths relative to the test "
        "file's directory)",
    )
    config.stash[_COVERAGE] = []
    if any(config.getoption(o) for o in ("--jsreplay-fault", "--jsreplay-delay", "--jsreplay-cut-tunnel")):
        _command_line_faults(config)  # a bad spec: a usage error before any test runs
    if config.getoption("--jsreplay-coverage"):
        from jsreplay.replay.server import ReplayServer

        collected = config.stash[_COVERAGE]

        def observe(report: ReplayReport) -> None:
            collected.append(report.coverage())

        ReplayServer.observers.append(observe)
        config.stash[_OBSERVING] = True
        config.add_cleanup(lambda: ReplayServer.observers.remove(observe))


def _specs(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)  # type: ignore[attr-defined]


def _command_line_faults(config: pytest.Config) -> FaultPlan:
    from jsreplay.replay.faults import FaultSpecError, parse_plan

    try:
        return parse_plan(
            tuple(config.getoption("--jsreplay-fault")),
            tuple(config.getoption("--jsreplay-delay")),
            tuple(config.getoption("--jsreplay-cut-tunnel")),
        )
    except FaultSpecError as err:
        raise pytest.UsageError(f"jsreplay: bad fault spec {err}") from None


def _faults(config: pytest.Config, marker: pytest.Mark) -> FaultPlan | None:
    """The command line's faults, then the marker's; None when there are none (nothing imported)."""
    given = [marker.kwargs.get(k) for k in ("faults", "delays", "cut_tunnel")]
    cli = [config.getoption(o) for o in ("--jsreplay-fault", "--jsreplay-delay", "--jsreplay-cut-tunnel")]
    if not any(given) and not any(cli):
        return None
    from jsreplay.replay.faults import FaultPlan, FaultSpecError, parse_plan

    try:
        plan = parse_plan(*(_specs(v) for v in given))
    except FaultSpecError as err:
        pytest.fail(f"jsreplay: bad fault spec in the marker: {err}", pytrace=False)
    base = _command_line_faults(config)
    return FaultPlan(base.faults + plan.faults, base.delays + plan.delays, base.cuts + plan.cuts)


def _plan(request: pytest.FixtureRequest) -> _Plan:
    marker = request.node.get_closest_marker(MARKER)
    if marker is None or not marker.args:
        pytest.fail(
            "jsreplay: the jsreplay_server fixture needs @pytest.mark.jsreplay('path/to/cassette.msgpack')",
            pytrace=False,
        )
    unknown = set(marker.kwargs) - _MARKER_OPTIONS
    if unknown:
        pytest.fail(
            f"jsreplay: unknown marker option(s) {sorted(unknown)}; known: {sorted(_MARKER_OPTIONS)}", pytrace=False
        )
    base = request.path.parent
    cassettes = tuple(base / Path(os.fspath(c)) for c in marker.args)
    ignores = marker.kwargs.get("ignores", ())
    if isinstance(ignores, str):
        ignores = (ignores,)
    mode = RecordMode(request.config.getoption("--jsreplay-record-mode"))
    missing = [c for c in cassettes if not c.exists()]
    record = mode.records(missing=bool(missing))
    if record and len(cassettes) != 1:
        pytest.fail(
            f"jsreplay: can record only a test that names one cassette ({len(cassettes)} named)",
            pytrace=False,
        )
    if not record and missing:
        pytest.fail(
            f"jsreplay: cassette {missing[0]} does not exist; record it with "
            "--jsreplay-record-mode once --jsreplay-upstream HOST:PORT [--jsreplay-upstream-ca FILE]",
            pytrace=False,
        )
    match = str(marker.kwargs.get("match", "default"))
    if match not in MATCH_MODES:
        pytest.fail(f"jsreplay: match={match!r}; expected one of {', '.join(MATCH_MODES)}", pytrace=False)
    return _Plan(
        cassettes=cassettes,
        record=record,
        match=match,
        ignores=tuple(str(i) for i in ignores),
        allow_repeats=bool(marker.kwargs.get("allow_repeats", False)),
        fail_unused=bool(marker.kwargs.get("fail_unused", request.config.getoption("--jsreplay-fail-unused"))),
        faults=_faults(request.config, marker),
    )


def _format_misses(misses: Sequence[Miss], cassettes: Sequence[str]) -> str:
    lines = [f"jsreplay: {len(misses)} call(s) found no recording in {', '.join(cassettes)}:"]
    for miss in misses:
        lines.append(f"- {miss.method} (at {miss.at_s:.2f}s):")
        lines.extend(f"    {line}" for line in miss.reason.splitlines())
    return "\n".join(lines)


def _record_into_place(
    portal: BlockingPortal, request: pytest.FixtureRequest, cassette: Path
) -> Iterator[JsreplayEndpoint]:
    """Record to a side file; move it over `cassette` only if the test passed (so `once` never replays a
    failed session). A failed recording stays next to it as `<name>.failed` for inspection."""
    from jsreplay import recording

    config = request.config
    upstream: str | None = config.getoption("--jsreplay-upstream")
    if not upstream:
        pytest.fail(f"jsreplay: recording {cassette} needs --jsreplay-upstream HOST:PORT", pytrace=False)
    ca_path: str | None = config.getoption("--jsreplay-upstream-ca")
    upstream_ca = Path(ca_path).read_bytes() if ca_path else None
    cassette.parent.mkdir(parents=True, exist_ok=True)
    partial = cassette.with_name(cassette.name + ".partial")
    context = recording(upstream=upstream, cassette=partial, upstream_ca=upstream_ca, overwrite=True)
    with portal.wrap_async_context_manager(context) as proxy:
        yield proxy
    if proxy.error:
        pytest.fail(f"jsreplay: recording {cassette} failed: {proxy.error}", pytrace=False)
    reports: dict[str, pytest.TestReport] = request.node.stash.get(_PHASES, {})
    if all(reports.get(phase) is not None and reports[phase].passed for phase in ("setup", "call")):
        os.replace(partial, cassette)
    else:
        failed = cassette.with_name(cassette.name + ".failed")
        os.replace(partial, failed)
        warnings.warn(
            pytest.PytestWarning(f"jsreplay: the test failed while recording; {cassette} was not written ({failed})"),
            stacklevel=1,
        )


@pytest.fixture
def jsreplay_server(request: pytest.FixtureRequest) -> Iterator[JsreplayEndpoint]:
    """A started replay server (or recording proxy) for the test's `@pytest.mark.jsreplay` cassettes."""
    from anyio.from_thread import start_blocking_portal

    from jsreplay import replaying

    plan = _plan(request)
    with start_blocking_portal(backend="asyncio") as portal:
        if plan.record:
            yield from _record_into_place(portal, request, plan.cassettes[0])
            return
        context: AbstractContextManager[ReplayServer] = portal.wrap_async_context_manager(
            replaying(
                *plan.cassettes,
                match=plan.match,
                ignores=plan.ignores,
                allow_repeats=plan.allow_repeats,
                faults=plan.faults,
            )
        )
        cassettes = [str(c) for c in plan.cassettes]
        with context as server:
            request.node.stash[_CASSETTES] = cassettes
            # The report belongs to the server's event loop: read it there.
            request.node.stash[_MISSES] = lambda: portal.call(lambda: list(server.report.missed))
            yield server
            # Misses after the call phase (in other fixtures' teardown) fail the teardown.
            misses = request.node.stash[_MISSES]()[request.node.stash.get(_REPORTED, 0) :]
            del request.node.stash[_MISSES]
        report = server.report  # final: the server has stopped, every tunnel has closed
        if not request.config.stash.get(_OBSERVING, False):
            request.config.stash[_COVERAGE].append(report.coverage())
        if misses:
            pytest.fail(_format_misses(misses, cassettes), pytrace=False)
        if plan.fail_unused and report.left:
            from jsreplay.replay.coverage import describe_left

            pytest.fail(
                f"jsreplay: {len(report.left)} recording(s) never used (fail_unused):\n{describe_left(report.left)}",
                pytrace=False,
            )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    item.stash.setdefault(_PHASES, {})[report.when] = report
    get_misses = item.stash.get(_MISSES, None)
    if get_misses is None or report.when != "call":
        return report
    misses = get_misses()
    item.stash[_REPORTED] = len(misses)
    if misses:
        cassettes: list[str] = item.stash[_CASSETTES]
        text = _format_misses(misses, cassettes)
        if report.passed:
            report.outcome = "failed"
            report.longrepr = text
        else:
            report.sections.append(("jsreplay misses", text))
    return report


def _session_coverage(config: pytest.Config) -> Coverage | None:
    collected = config.stash.get(_COVERAGE, [])
    if not collected:
        return None
    from jsreplay.replay.coverage import combine

    return combine(collected)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """An xdist worker hands its coverage to the controller, which combines every worker's."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is None:
        return
    coverage = _session_coverage(session.config)
    if coverage is not None:
        workeroutput[_WORKER_KEY] = json.dumps(coverage.to_json())


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist, on the controller: a worker finished; keep its coverage."""
    data = getattr(node, "workeroutput", {}).get(_WORKER_KEY)
    if data:
        from jsreplay.replay.coverage import Coverage

        node.config.stash.setdefault(_COVERAGE, []).append(Coverage.from_json(json.loads(data)))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if getattr(config, "workerinput", None) is not None:
        return
    coverage = _session_coverage(config)
    if coverage is None:
        return
    terminalreporter.section("jsreplay coverage")
    terminalreporter.write_line(f"{coverage.runs} replay(s) combined")
    for line in coverage.table().splitlines():
        terminalreporter.write_line(line)
    target = config.getoption("--jsreplay-coverage")
    if target:
        coverage.write(Path(target))
        terminalreporter.write_line(f"jsreplay: coverage written to {target}")
