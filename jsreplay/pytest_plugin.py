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

    from jsreplay.replay.report import Miss
    from jsreplay.replay.server import ReplayServer

__all__ = ["JsreplayEndpoint"]

MATCH_MODES = ("default", "strict", "order")  # jsreplay.replay.MatchMode's values, without importing it here
MARKER = "jsreplay"
_MARKER_OPTIONS = {"match", "ignores", "allow_repeats"}


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


_MISSES = pytest.StashKey[Callable[[], "list[Miss]"]]()  # the running replay's misses so far
_CASSETTES = pytest.StashKey[list[str]]()
_REPORTED = pytest.StashKey[int]()  # how many misses were already reported on the call phase
_PHASES = pytest.StashKey[dict[str, pytest.TestReport]]()  # the test's reports so far, by phase


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "jsreplay(*cassettes, match='default', ignores=(), allow_repeats=False): cassettes the jsreplay_server "
        "fixture serves (paths relative to the test file's directory)",
    )


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
            replaying(*plan.cassettes, match=plan.match, ignores=plan.ignores, allow_repeats=plan.allow_repeats)
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
        if misses:
            pytest.fail(_format_misses(misses, cassettes), pytrace=False)


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
