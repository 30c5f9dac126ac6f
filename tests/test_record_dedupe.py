"""The recorder stores each tunnel's bytes once when both of its ends go through the proxy (format 2 references):
the pairing rules, the memory bound, and a real recording that reads, shows, diffs, edits and replays as the same
cassette written whole."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import jsreplay
from jsreplay.cassette.format import CassetteWriter, WrittenRecord, read_cassette, write_cassette
from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    Cancel,
    CancelSource,
    ClientMessage,
    Role,
    ServerMessage,
    Status,
)
from jsreplay.record.dedupe import MAX_PENDING, MAX_PENDING_BYTES, TunnelDedupe
from jsreplay.record.recorder import Recorder
from jsreplay.testing.drivers import SCENARIOS, run_steps
from jsreplay.testing.recording import SELECTOR, RecordedRun, record_scenario
from tests.test_cassette_references import SAMPLE, header, raw_records

STREAM = "/jumpstarter.v1.RouterService/Stream"


def frame(n: int, size: int = 64) -> bytes:
    return n.to_bytes(4, "big") * (size // 4)


class Feed:
    """Events through a TunnelDedupe as the recorder feeds it, a fake file position per record."""

    def __init__(self, dedupe: TunnelDedupe) -> None:
        self.dedupe = dedupe
        self.end = 100
        self.seq = 0

    def __call__(self, event: AnyEvent) -> int | None:
        """Write `event`; the offset of the record it refers to, if it does."""
        same_as = self.dedupe.before_write(event)
        length = 10 if same_as is not None else 10 + len(getattr(event, "data", b""))
        self.dedupe.after_write(event, WrittenRecord(offset=self.end, length=length, reference=same_as is not None))
        self.end += length
        self.seq += 1
        return None if same_as is None else same_as.offset

    def start(self, call_id: int, token: str, role: Role = Role.ROUTER) -> None:
        meta = (("authorization", f"Bearer {token}"),)
        self(CallStart(call_id=call_id, seq=self.seq, t_ns=0, method=STREAM, role=role, metadata=meta))

    def client(self, call_id: int, data: bytes) -> int | None:
        return self(ClientMessage(call_id=call_id, seq=self.seq, t_ns=0, data=data))

    def server(self, call_id: int, data: bytes) -> int | None:
        return self(ServerMessage(call_id=call_id, seq=self.seq, t_ns=0, data=data))


# ---------------------------------------------------------------------------------------------------- pairing


def test_a_frame_is_shared_between_the_two_ends_of_one_token_either_way_round() -> None:
    feed = Feed(TunnelDedupe())
    feed.start(1, "t")
    feed.start(2, "t")
    sent_at = feed.end
    assert feed.client(1, frame(1)) is None
    assert feed.server(2, frame(1)) == sent_at  # what 1 sent is what 2 received
    got_at = feed.end
    assert feed.server(1, frame(2)) is None  # received first (events held back elsewhere)...
    assert feed.client(2, frame(2)) == got_at  # ...the sender's copy refers to it
    assert feed.server(2, frame(1)) is None  # each record is referred to once
    assert feed.client(1, frame(2)) is None  # a reference is never referred to
    assert feed.dedupe.pending_bytes() == 2 * len(frame(1))


def test_no_sharing_across_tokens_kinds_roles_or_for_short_frames() -> None:
    feed = Feed(TunnelDedupe())
    feed.start(1, "t")
    feed.start(2, "u")
    feed.start(3, "t", role=Role.CONTROLLER)
    feed.start(4, "t")
    feed.client(1, frame(1))
    assert feed.server(2, frame(1)) is None  # another token
    assert feed.server(3, frame(1)) is None  # not a router call
    assert feed.client(4, frame(1)) is None  # the same kind: 4 did not receive what 1 sent
    feed.client(1, b"short frame")
    assert feed.server(4, b"short frame") is None  # a reference would save nothing
    assert feed.server(4, frame(1)) is not None
    assert feed.server(1, frame(1)) is not None  # 4's own copy of what it sent, for 1
    unauthenticated = Feed(TunnelDedupe())
    unauthenticated(CallStart(call_id=1, seq=0, t_ns=0, method=STREAM, role=Role.ROUTER))
    unauthenticated(CallStart(call_id=2, seq=1, t_ns=0, method=STREAM, role=Role.ROUTER))
    unauthenticated.client(1, frame(1))
    assert unauthenticated.server(2, frame(1)) is None


def test_a_frame_the_other_end_never_got_is_skipped_within_the_window() -> None:
    feed = Feed(TunnelDedupe(peek=8))
    feed.start(1, "t")
    feed.start(2, "t")
    offsets = []
    for n in range(20):
        offsets.append(feed.end)
        feed.client(1, frame(n))
    assert feed.server(2, frame(7)) == offsets[7]  # 0-6 were lost: dropped
    assert feed.server(2, frame(3)) is None
    assert feed.server(2, frame(8)) == offsets[8]
    assert feed.server(2, frame(17)) is None  # 9 frames on: past the window
    assert feed.server(2, frame(16)) == offsets[16]


def test_one_ended_tunnels_keep_memory_bounded_and_an_ended_call_is_forgotten() -> None:
    dedupe = TunnelDedupe()
    feed = Feed(dedupe)
    feed.start(1, "t")
    for n in range(2 * MAX_PENDING):
        feed.client(1, frame(n))
        feed.server(1, frame(n))
    assert dedupe.pending_bytes() == 2 * MAX_PENDING * len(frame(0))  # the last 256 of each kind
    big = 1 << 20
    for n in range(3 * MAX_PENDING_BYTES // big):
        feed.client(1, frame(n, big))
    assert dedupe.pending_bytes() <= 2 * MAX_PENDING_BYTES
    feed.client(1, frame(0, MAX_PENDING_BYTES + 4))  # larger than the whole bound: not kept at all
    assert dedupe.pending_bytes() <= 2 * MAX_PENDING_BYTES
    feed(Cancel(call_id=1, seq=feed.seq, t_ns=0, by=CancelSource.CLIENT))
    assert dedupe.pending_bytes() == 0
    feed.start(2, "t")  # the token's first call has ended: nothing of it is left to refer to
    assert feed.server(2, frame(2 * MAX_PENDING - 1)) is None
    feed(Status(call_id=2, seq=feed.seq, t_ns=0, code=0))
    assert dedupe.pending_bytes() == 0


def test_the_recorder_shares_as_it_writes(tmp_path: Path) -> None:
    def record(path: Path, *, dedupe: bool) -> Recorder:
        recorder = Recorder(CassetteWriter(path, header(), redactor=None), dedupe=dedupe)
        meta = (("authorization", "Bearer t"),)
        calls = [
            recorder.start_call(
                method=STREAM, role=Role.ROUTER, metadata=meta, peer="p", target="t", timeout_ns=None, streaming=True
            )
            for _ in range(2)
        ]
        for n in range(50):
            sender, receiver = calls if n % 3 else calls[::-1]
            recorder.client_message(sender, frame(n, 1000))
            recorder.server_message(receiver, frame(n, 1000))
        for call_id in calls:
            recorder.status(call_id, 0, "", ())
        recorder.close()
        return recorder

    shared = record(tmp_path / "shared.msgpack", dedupe=True)
    whole = record(tmp_path / "whole.msgpack", dedupe=False)
    assert shared.stats.shared_messages == 50 and shared.stats.shared_bytes == 50_000
    assert whole.stats.shared_messages == 0
    assert shared.bytes_written < whole.bytes_written - 49_000
    untimed = [
        [dataclasses.replace(e, t_ns=0) for e in read_cassette(tmp_path / n).events]
        for n in ("shared.msgpack", "whole.msgpack")
    ]
    assert untimed[0] == untimed[1]


# ---------------------------------------------------------------------------------------------------- end to end

OPENDAL = SCENARIOS["opendal"]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RecordedRun, Path]]:
    """The opendal scenario (an upload and a download through a resource stream), both peers through one
    proxy; and the same cassette written again with every message whole, under the same name elsewhere."""
    where = tmp_path_factory.mktemp("dedupe")
    (where / "shared").mkdir()
    (where / "whole").mkdir()
    run = asyncio.run(
        record_scenario(where / "shared" / "c.msgpack", drivers=OPENDAL.drivers, client_side=OPENDAL.client())
    )
    write_cassette(where / "whole" / "c.msgpack", read_cassette(run.cassette), redactor=None)
    yield run, where / "whole" / "c.msgpack"


def jsreplay_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jsreplay", *map(str, args)], capture_output=True, text=True, timeout=120, cwd=cwd
    )


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_real_recording_stores_each_tunnel_frame_once(recorded: tuple[RecordedRun, Path]) -> None:
    run, whole = recorded
    events = read_cassette(run.cassette).events
    assert read_cassette(whole).events == events
    by_seq = {e.seq: e for e in events}
    records = raw_records(run.cassette)
    roles = {r[1]: r[5] for _, r in records if r[0] == 1}
    router = [r for _, r in records if r[0] in (2, 4) and roles[r[1]] == "router"]
    shared = [r for r in router if isinstance(r[4], list)]
    received = [by_seq[r[2]].data for r in router if r[0] == 4]  # type: ignore[union-attr]
    # Nearly every frame an end received is stored once, for both ends (only a handful of bytes are not):
    # what the exporter sent (the download) and what the client sent (the upload).
    shared_bytes = sum(len(by_seq[r[2]].data) for r in shared)  # type: ignore[union-attr]
    assert len(shared) >= 0.9 * sum(len(data) >= 16 for data in received) and len(shared) >= 20
    assert 0.99 * sum(map(len, received)) - 200 <= shared_bytes <= sum(map(len, received))
    assert {roles[r[1]] for r in shared} == {"router"}
    # The file is smaller by about those bytes (a reference is up to ~12 bytes; a binary's header 2-5).
    saved = whole.stat().st_size - run.cassette.stat().st_size
    assert shared_bytes - 12 * len(shared) <= saved <= shared_bytes + 5 * len(shared)


@pytest.mark.e2e
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "command",
    [["show"], ["show", "--format", "json"], ["show", "--format", "mermaid"], ["show", "--raw"], ["textconv"]],
)
def test_show_and_textconv_see_the_same_cassette(command: list[str], recorded: tuple[RecordedRun, Path]) -> None:
    run, whole = recorded
    shared = jsreplay_cli(command[0], "c.msgpack", *command[1:], cwd=run.cassette.parent)
    written_whole = jsreplay_cli(command[0], "c.msgpack", *command[1:], cwd=whole.parent)
    assert shared.returncode == written_whole.returncode == 0, shared.stderr
    assert shared.stdout == written_whole.stdout and len(shared.stdout) > 1000


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_diff_finds_no_difference_and_says_the_same_about_both(recorded: tuple[RecordedRun, Path]) -> None:
    run, whole = recorded
    same = jsreplay_cli("diff", run.cassette, whole)
    assert same.returncode == 0, same.stdout + same.stderr
    for kind in ("text", "json"):
        a = jsreplay_cli("diff", "c.msgpack", "c.msgpack", "--format", kind, cwd=run.cassette.parent)
        b = jsreplay_cli("diff", "c.msgpack", "c.msgpack", "--format", kind, cwd=whole.parent)
        assert a.returncode == b.returncode == 0 and a.stdout == b.stdout


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_edit_tools_read_references_and_write_whole_messages(
    recorded: tuple[RecordedRun, Path], tmp_path: Path
) -> None:
    run, whole = recorded

    def messages(path: Path) -> list[bytes]:
        """Every tunnel frame (cat moves times in other messages)."""
        cassette = read_cassette(path)
        router = {c.call_id for c in cassette.calls() if c.role is Role.ROUTER}
        return sorted(
            e.data for e in cassette.events if isinstance(e, ClientMessage | ServerMessage) and e.call_id in router
        )

    ours, sample = messages(run.cassette), messages(SAMPLE)
    outputs = {
        "trim": (["trim", run.cassette, tmp_path / "trim.msgpack", "--method", "*"], ours),
        "cat": (["cat", run.cassette, SAMPLE, tmp_path / "cat.msgpack"], sorted(ours + sample)),
        "redact": (["redact", run.cassette, tmp_path / "redact.msgpack", "--scrub", "no such value here"], ours),
    }
    for name, (args, expected) in outputs.items():
        done = jsreplay_cli(*args)
        assert done.returncode == 0, done.stderr
        out = tmp_path / f"{name}.msgpack"
        assert messages(out) == expected, name
        # Whole messages: correct, as large as a format 1 recording.
        assert not any(isinstance(r[4], list) for _, r in raw_records(out) if r[0] in (2, 4)), name
        assert out.stat().st_size >= 0.95 * whole.stat().st_size, name


@pytest.mark.e2e
@pytest.mark.anyio
@pytest.mark.timeout(180)
async def test_a_shared_cassette_replays(recorded: tuple[RecordedRun, Path]) -> None:
    run, _ = recorded
    for _ in range(3):
        async with jsreplay.replaying(run.cassette) as server:
            with anyio.fail_after(60):
                replayed: dict[str, Any] = await run_steps(
                    server.endpoint, "any-token", server.ca_pem, name="alice", selector=SELECTOR,
                    steps=OPENDAL.steps, timeout=45,
                )  # fmt: skip
            report = server.report
        assert replayed["result"] == run.result["result"] == {"read_back": True, "exists": True}
        assert report.missed == [] and report.causal_timeouts == []


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
