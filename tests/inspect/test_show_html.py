"""`jsreplay show --format html`: its data (no browser), and in a real headless Chromium tunnels expanded, calls
decoded, escaping, a replay report's marks, 10k calls."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from jsreplay.cassette.format import read_cassette, write_cassette
from jsreplay.cassette.model import CallStart, ClientMessage, Header, Role, Status
from jsreplay.inspect.html import render_html
from jsreplay.inspect.show import call_to_json
from jsreplay.testing.browser import dump_dom, find_browser, screenshot
from jsreplay.testing.recording import RecordedRun, record_scenario
from tests.inspect.inspect_support import load

BROWSER = find_browser()
needs_browser = pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium found (install Debian's `chromium` package, or set JSREPLAY_BROWSER); .ci/run installs it",
)
ROOT = Path(__file__).resolve().parents[2]


def show_html(cassette: Path, out: Path, *extra: str) -> Path:
    with out.open("w") as f:
        done = subprocess.run(
            [sys.executable, "-m", "jsreplay", "show", "--format", "html", str(cassette), *extra],
            stdout=f,
            stderr=subprocess.PIPE,
            text=True,
            timeout=240,
        )
    assert done.returncode == 0, done.stderr
    return out


def test_each_call_is_laid_out_once_as_show_json_lays_it_out() -> None:
    """No browser: the page's data. Rows and details agree; a tunnel's inner calls are in its details (once),
    decoded as `call_to_json` decodes them; a byte stream carries its bytes' summary instead of its frames."""
    view = load(ROOT / "cassettes" / "power-echo.msgpack")
    page = "".join(render_html(view, "power-echo.msgpack"))
    scripts = dict(re.findall(r'<script type="application/json" id="jsreplay-(\w+)">(.*?)</script>', page, re.S))
    assert not any(c in text for text in scripts.values() for c in "<>&")
    rows, details = json.loads(scripts["rows"]), json.loads(scripts["details"])
    assert len(rows) == len(details) == len(view.calls)
    byte_streams = 0
    for row, doc, call in zip(rows, details, view.calls, strict=True):
        assert row[0] == doc["id"] == call.id and row[5] == doc["short_method"] and row[6] == doc["status"]
        assert row[8] == (len(doc["tunnel"]) if doc["tunnel"] is not None else None)
        for inner_doc, inner in zip(doc["tunnel"] or [], call.inner or [], strict=True):
            expected = call_to_json(inner)
            assert inner_doc["id"] == inner.id and inner_doc["tunnel"] is None
            if inner_doc["byte_stream"] is not None:  # the echo: bytes summarised, frames not laid out
                byte_streams += 1
                assert inner_doc["requests"] == inner_doc["responses"] == []
                assert inner_doc["byte_stream"]["out"]["bytes"] == 65536
            else:
                assert [m["value"] for m in inner_doc["requests"]] == [m["value"] for m in expected["requests"]]
                assert [m["value"] for m in inner_doc["responses"]] == [m["value"] for m in expected["responses"]]
    assert byte_streams == 1


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecordedRun]:
    yield asyncio.run(record_scenario(tmp_path_factory.mktemp("html") / "session.msgpack"))


@needs_browser
@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_the_page_shows_the_tunnels_inner_calls_and_decoded_driver_calls(recorded: RecordedRun, tmp_path: Path) -> None:
    assert BROWSER is not None
    page = show_html(recorded.cassette, tmp_path / "session.html")
    text = page.read_text()
    assert "http://" not in text.replace("http://www.w3.org", "") and "https://" not in text  # nothing to fetch
    url = page.as_uri() + "#expand=all"
    dom = dump_dom(BROWSER, url)
    assert 'data-ready="1"' in dom
    for inner in ("ExporterService/GetReport", "ExporterService/DriverCall", "ExporterService/StreamingDriverCall"):
        assert inner in dom
    assert "jumpstarter.v1.DriverCallRequest" in dom and 'method: "on"' in dom  # a decoded DriverCall
    assert re.search(r"bytes sent: 65536 in \d+ frames", dom)  # the echo byte stream, summarised
    shot = screenshot(BROWSER, url, tmp_path / "session.png")
    assert shot.stat().st_size > 10_000


@needs_browser
def test_cassette_text_cannot_inject_markup(tmp_path: Path) -> None:
    assert BROWSER is not None
    evil = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">"
    cassette = tmp_path / "evil.msgpack"
    header = Header(format_version=1, jsreplay_version="test", created_unix_ns=0, upstreams=(evil,))
    events = (
        CallStart(
            call_id=1, seq=0, t_ns=0, method=f"/evil.Service/{evil}", role=Role.CONTROLLER, metadata=(("x", evil),)
        ),
        ClientMessage(call_id=1, seq=1, t_ns=1, data=evil.encode()),
        Status(call_id=1, seq=2, t_ns=2, code=13, details="</script>" + evil),
    )
    from jsreplay.cassette.model import Cassette

    write_cassette(cassette, Cassette(header=header, events=events), redactor=None)
    page = show_html(cassette, tmp_path / "evil.html")
    assert "</script><img" not in page.read_text().split('id="jsreplay-header">', 1)[1].rsplit("<script>", 1)[0]
    dom = dump_dom(BROWSER, page.as_uri() + "#expand=1", budget_ms=1000)
    assert "<title>jsreplay: " in dom and "pwned" not in dom.split("</title>", 1)[0]
    assert "<img" not in dom and "&lt;script&gt;document.title" in dom


needs_client = pytest.mark.skipif(
    importlib.util.find_spec("jumpstarter") is None,
    reason="the Jumpstarter client is not installed (pip install -e '.[demo]')",
)


@needs_browser
@needs_client
@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_replay_report_marks_the_miss_and_the_unused_recordings(tmp_path: Path) -> None:
    """A real `jsreplay replay --report` of the shipped cassette, with a client that asks for another board."""
    assert BROWSER is not None
    cassette = tmp_path / "power-echo.msgpack"
    cassette.write_bytes((ROOT / "cassettes" / "power-echo.msgpack").read_bytes())
    client = tmp_path / "client.py"
    source = (ROOT / "examples" / "client.py").read_text()
    assert 'selector="example.com/board=demo"' in source
    client.write_text(source.replace('selector="example.com/board=demo"', 'selector="example.com/board=other"'))
    report = tmp_path / "report.json"
    command = f"{shlex.quote(sys.executable)} {shlex.quote(str(client))}"
    replay = subprocess.run(
        [sys.executable, "-m", "jsreplay", "replay", str(cassette), "--report", str(report), "--exec", command],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert replay.returncode == 1, replay.stderr  # the miss fails the client
    doc = json.loads(report.read_text())
    (miss,) = doc["missed"]
    assert "nearest is power-echo.msgpack#4" in miss["reason"]  # CreateLease, recorded with board=demo
    unused = {int(u["recording"].rsplit("#", 1)[1]) for u in doc["unused"]}
    unused |= {int(t.rsplit("#", 1)[1]) for t in doc["tunnels"]["unused"]}
    assert 4 in unused

    page = show_html(cassette, tmp_path / "report.html", "--report", str(report))
    dom = dump_dom(BROWSER, page.as_uri() + "#expand=4")
    assert 'data-ready="1"' in dom
    banner = re.search(r'<div class="banner"><strong>replay report: (.*?)</strong>(.*?)</div>', dom)
    assert banner is not None
    assert banner.group(1) == f"1 missed, 0 errors, 0 causal timeouts, {len(doc['unused'])} recordings unused"
    assert "miss at +" in banner.group(2) and "ClientService/CreateLease" in banner.group(2)
    rows = {int(m.group(2)): m.group(1).split() for m in re.finditer(r'<div class="(row[^"]*)" data-path="(\d+)"', dom)}
    assert len(rows) == len(read_cassette(cassette).calls())
    assert "miss" in rows[4] and "unused" in rows[4]  # the miss's nearest recording, itself never served
    for call_id, classes in rows.items():
        assert ("unused" in classes) == (call_id in unused), (call_id, classes)
        assert ("miss" in classes) == (call_id == 4), (call_id, classes)
    assert any(not classes[1:] for classes in rows.values())  # the probe's tunnel ends are not named: not marked
    assert "miss: nearest recording of a miss: " in dom and "unused: not used by the replay" in dom  # #4 expanded


def _bench_module() -> object:
    spec = importlib.util.spec_from_file_location("bench_show_diff", ROOT / "bench" / "bench_show_diff.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_browser
@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_10000_call_cassette_paints_its_first_rows_quickly(recorded: RecordedRun, tmp_path: Path) -> None:
    assert BROWSER is not None
    bench = _bench_module()
    big = tmp_path / "big.msgpack"
    write_cassette(big, bench.synthesize(read_cassette(recorded.cassette), 10_000), redactor=None)  # type: ignore[attr-defined]
    page = show_html(big, tmp_path / "big.html")
    dom = dump_dom(BROWSER, page.as_uri() + "#expand=12", timeout=240)
    assert 'data-ready="1"' in dom and "10000 calls" in dom
    first_rows = int(re.search(r'data-first-rows-ms="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    print(f"10,000 calls: {page.stat().st_size / 2**20:.1f} MiB of HTML, first rows after {first_rows} ms")
    assert "ExporterService/DriverCall" in dom  # call 12's tunnel expanded
    assert dom.count('class="row') < 1000  # rows are rendered in batches, not all 10,000
    screenshot(BROWSER, page.as_uri() + "#expand=12", tmp_path / "big.png")
    assert first_rows < 3000
