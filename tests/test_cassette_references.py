"""Format 2's message references: a message record may hold `[offset, length]` of an earlier message record
instead of the same bytes. Every reader resolves them; bad ones are clear errors naming the referring record."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from jsreplay.cassette import format as fmt
from jsreplay.cassette import migrations
from jsreplay.cassette.errors import CorruptCassetteError
from jsreplay.cassette.format import (
    MAGIC,
    CassetteReader,
    CassetteWriter,
    StoredMessage,
    read_cassette,
    read_events_at,
    write_cassette,
)
from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    Cassette,
    ClientMessage,
    Header,
    Redaction,
    Role,
    ServerMessage,
    Status,
)
from jsreplay.cassette.redaction import Redactor
from jsreplay.protocol.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "cassettes" / "power-echo.msgpack"
STREAM = "/jumpstarter.v1.RouterService/Stream"
DIAL = "/jumpstarter.v1.ControllerService/Dial"
A_TO_B = b"\x0a\x20" + bytes(range(32))  # a StreamRequest: payload of 32 bytes
B_TO_A = b"\x0a\x28" + bytes(range(100, 140))


def header(version: int = migrations.FORMAT_VERSION, *, schema: bool = True) -> Header:
    return Header(
        format_version=version,
        jsreplay_version="test",
        created_unix_ns=1_700_000_000_000_000_000,
        descriptor_set=Registry.default().descriptor_set if schema else b"",
        redaction=Redaction(enabled=False),
    )


def tunnel_events() -> list[AnyEvent]:
    """Both ends of one tunnel (calls 1 and 2, one token): each frame once sent, once received."""
    meta = (("authorization", "Bearer t"),)
    return [
        CallStart(call_id=1, seq=0, t_ns=1, method=STREAM, role=Role.ROUTER, metadata=meta),
        CallStart(call_id=2, seq=1, t_ns=2, method=STREAM, role=Role.ROUTER, metadata=meta),
        ClientMessage(call_id=1, seq=2, t_ns=3, data=A_TO_B),
        ServerMessage(call_id=2, seq=3, t_ns=4, data=A_TO_B),
        ClientMessage(call_id=2, seq=4, t_ns=5, data=B_TO_A),
        ServerMessage(call_id=1, seq=5, t_ns=6, data=B_TO_A),
        Status(call_id=1, seq=6, t_ns=7, code=0),
        Status(call_id=2, seq=7, t_ns=8, code=0),
    ]


def write_shared(path: Path, events: list[AnyEvent], *, version: int = migrations.FORMAT_VERSION) -> list[bool]:
    """Write `events`, each server message as a reference to the client message with its data; which records
    are references."""
    sent: dict[bytes, StoredMessage] = {}
    references = []
    with CassetteWriter(path, header(version), redactor=None) as writer:
        for event in events:
            same_as = sent.get(event.data) if isinstance(event, ServerMessage) else None
            stored = writer.write(event, same_as=same_as)
            record = writer.last_record
            references.append(record.reference)
            if isinstance(stored, ClientMessage):
                sent[stored.data] = StoredMessage(offset=record.offset, length=record.length, data=stored.data)
    return references


def raw_records(path: Path) -> list[tuple[int, Any]]:
    """Every event record as msgpack decoded it, with its offset: what is on disk, references unresolved."""
    data = path.read_bytes()
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data[len(MAGIC) :])
    unpacker.unpack()  # the header
    out = []
    while True:
        offset = len(MAGIC) + unpacker.tell()
        try:
            out.append((offset, unpacker.unpack()))
        except msgpack.OutOfData:
            return out


# ---------------------------------------------------------------------------------------------------- round trip


def test_references_round_trip_through_every_read_path(tmp_path: Path) -> None:
    shared, full = tmp_path / "shared.msgpack", tmp_path / "full.msgpack"
    events = tunnel_events()
    assert write_shared(shared, events) == [False, False, False, True, False, True, False, False]
    write_cassette(full, Cassette(header=header(), events=tuple(events)), redactor=None)

    # On disk: the two server messages are [offset, length] of the client messages that carried their bytes.
    records = raw_records(shared)
    by_offset = dict(records)
    lengths = {offset: following - offset for (offset, _), (following, _) in itertools.pairwise(records)}
    for index, other in ((3, 2), (5, 4)):
        target, length = records[index][1][4]
        assert target == records[other][0] and length == lengths[target]
        assert by_offset[target][4] == events[index].data  # type: ignore[union-attr]
    assert full.stat().st_size - shared.stat().st_size >= len(A_TO_B) + len(B_TO_A) - 2 * 8

    # Every read path gives whole messages.
    cassette = read_cassette(shared)
    assert list(cassette.events) == events and cassette.header.format_version == 2
    with CassetteReader(shared) as reader:
        scanned = list(reader.iter_with_offsets())
        assert [e for _, e in scanned] == events
        assert [offset for offset, _ in scanned] == [offset for offset, _ in records]
        for offset, event in scanned:
            assert reader.event_at(offset) == event
            length = lengths.get(offset, shared.stat().st_size - offset)
            assert reader.event_at(offset, length) == event
    offsets = [offset for offset, _ in scanned]
    assert read_events_at(shared, offsets[::-1]) == events[::-1]
    with CassetteReader(shared) as reader:
        assert list(reader) == events


def test_the_writer_refers_only_to_the_same_stored_bytes_in_a_file_that_can_hold_references(tmp_path: Path) -> None:
    events = tunnel_events()
    with CassetteWriter(tmp_path / "c.msgpack", header(), redactor=None) as writer:
        for event in events[:3]:
            writer.write(event)
        first = writer.last_record
        target = StoredMessage(offset=first.offset, length=first.length, data=A_TO_B)
        other = ServerMessage(call_id=2, seq=3, t_ns=4, data=A_TO_B[:-1] + b"?")
        assert writer.write(other, same_as=target) == other and not writer.last_record.reference
        for bad in (
            StoredMessage(offset=first.offset + 1000, length=first.length, data=A_TO_B),  # past the end
            StoredMessage(offset=3, length=first.length, data=A_TO_B),  # the header
            StoredMessage(offset=first.offset, length=0, data=A_TO_B),
        ):
            writer.write(events[3], same_as=bad)
            assert not writer.last_record.reference
        assert writer.write(events[3], same_as=target) == events[3] and writer.last_record.reference
        assert writer.references_written == 1
    assert read_cassette(tmp_path / "c.msgpack").events[3:] == (other, events[3], events[3], events[3], events[3])

    # A format 1 file (an older cassette appended to, or a header that says 1) never gets one.
    assert write_shared(tmp_path / "v1.msgpack", events, version=1) == [False] * len(events)
    assert read_cassette(tmp_path / "v1.msgpack").events == tuple(events)


def test_the_writer_compares_the_data_as_redacted(tmp_path: Path) -> None:
    registry = Registry.default()
    response = registry.encode("jumpstarter.v1.DialResponse", {"router_endpoint": "r:1", "router_token": "s" * 30})
    head = dataclasses.replace(header(), redaction=Redaction())
    with CassetteWriter(tmp_path / "c.msgpack", head, redactor=Redactor(registry=registry)) as writer:
        for call in (1, 2):
            writer.write(CallStart(call_id=call, seq=call, t_ns=0, method=DIAL, role=Role.CONTROLLER))
        stored = writer.write(ServerMessage(call_id=1, seq=3, t_ns=0, data=response))
        assert isinstance(stored, ServerMessage) and stored.data != response
        record = writer.last_record
        as_sent = StoredMessage(offset=record.offset, length=record.length, data=response)
        as_stored = StoredMessage(offset=record.offset, length=record.length, data=stored.data)
        # Equal to what the caller had, not to what was stored: written whole.
        again = writer.write(ServerMessage(call_id=2, seq=4, t_ns=0, data=response), same_as=as_sent)
        assert isinstance(again, ServerMessage) and again.data == stored.data and not writer.last_record.reference
        again = writer.write(ServerMessage(call_id=2, seq=5, t_ns=0, data=response), same_as=as_stored)
        assert isinstance(again, ServerMessage) and again.data == stored.data and writer.last_record.reference
    events = read_cassette(tmp_path / "c.msgpack").events
    assert [e.data for e in events[2:]] == [stored.data] * 3  # type: ignore[union-attr]
    assert b"s" * 30 not in (tmp_path / "c.msgpack").read_bytes()


def test_appending_keeps_references_valid(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    events = tunnel_events()
    write_shared(path, events[:4])
    with CassetteWriter.append_to(path, redactor=None) as writer:
        assert writer.resume.next_seq == 4
        writer.write(events[4])
        record = writer.last_record
        writer.write(events[5], same_as=StoredMessage(offset=record.offset, length=record.length, data=B_TO_A))
        assert writer.last_record.reference
        # Before what this writer wrote: fine too, it is an earlier message record of the file.
        first = raw_records(path)[2][0]
        length = raw_records(path)[3][0] - first
        writer.write(events[3], same_as=StoredMessage(offset=first, length=length, data=A_TO_B))
        assert writer.last_record.reference
    assert read_cassette(path).events == (*events[:6], events[3])

    # Appending to a format 1 file writes whole messages (its header stays 1: no reference may appear in it).
    old = tmp_path / "v1.msgpack"
    write_shared(old, events[:2], version=1)
    with CassetteWriter.append_to(old, redactor=None) as writer:
        writer.write(events[2])
        record = writer.last_record
        writer.write(events[3], same_as=StoredMessage(offset=record.offset, length=record.length, data=A_TO_B))
        assert not writer.last_record.reference
    cassette = read_cassette(old)
    assert cassette.header.format_version == 1 and cassette.events == tuple(events[:4])


def test_format_1_cassettes_read_as_before(tmp_path: Path) -> None:
    cassette = read_cassette(SAMPLE)
    assert cassette.header.format_version == 1 and cassette.truncated_at is None
    assert any(isinstance(e, ServerMessage) and e.data for e in cassette.events)
    done = subprocess.run(
        [sys.executable, "-m", "jsreplay", "show", str(SAMPLE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "format 1," in done.stdout


# ---------------------------------------------------------------------------------------------------- bad ones


def _with_reference(tmp_path: Path, reference: Any, *, version: int = 2, kind: int = 4) -> tuple[Path, int, int]:
    """A tunnel file whose 4th event (a server message) holds `reference` (a function of the records' offsets
    and lengths) for its data; (path, its offset, its index)."""
    good = tmp_path / "good.msgpack"
    write_cassette(good, Cassette(header=header(version), events=tuple(tunnel_events())), redactor=None)
    records = raw_records(good)
    size = good.stat().st_size
    spans = [(o, (records[i + 1][0] if i + 1 < len(records) else size) - o) for i, (o, _) in enumerate(records)]
    head = good.read_bytes()[: records[0][0]]
    packed = []
    for i, (_, record) in enumerate(records):
        if i == 3:
            record = [kind, *record[1:4], reference(spans), None][: 5 if kind == 2 else 6]
        packed.append(msgpack.packb(record, use_bin_type=True))
    path = tmp_path / "bad.msgpack"
    path.write_bytes(head + b"".join(packed))
    return path, records[3][0], 3


BAD_REFERENCES = {
    "forward": (lambda s: [s[5][0], s[5][1]], "refers forward, to byte"),
    "itself": (lambda s: [s[3][0], s[3][1]], "refers forward, to byte"),
    "out of the file": (lambda s: [-8, 10], "which is not in the file's events"),
    "into the header": (lambda s: [len(MAGIC), 20], "which is not in the file's events"),
    "into this record": (lambda s: [s[2][0], s[2][1] + 2], "which are not a record before this one"),
    "too long": (lambda s: [s[1][0], s[1][1] + 1], ": not one whole event record"),
    "too short": (lambda s: [s[2][0], s[2][1] - 1], ": not one whole event record"),
    "not at a record": (lambda s: [s[2][0] + 1, s[2][1] - 1], ": not one whole event record"),
    "a call start": (lambda s: [s[1][0], s[1][1]], "a CALL_START, not a message"),
    "three numbers": (lambda s: [s[2][0], s[2][1], 0], "must be \\[offset, length\\], two integers"),
    "a string": (lambda s: [s[2][0], "x"], "must be \\[offset, length\\], two integers"),
}


@pytest.mark.parametrize("case", sorted(BAD_REFERENCES))
def test_a_bad_reference_is_a_corrupt_cassette_naming_the_record(case: str, tmp_path: Path) -> None:
    reference, problem = BAD_REFERENCES[case]
    path, offset, index = _with_reference(tmp_path, reference)
    where = rf"\(event {index}, byte {offset}\): .*{problem}"
    with pytest.raises(CorruptCassetteError, match=where):
        read_cassette(path)
    with CassetteReader(path) as reader, pytest.raises(CorruptCassetteError, match=rf"byte {offset}\): .*{problem}"):
        reader.event_at(offset)
    with pytest.raises(CorruptCassetteError, match=rf"byte {offset}\): .*{problem}"):
        read_events_at(path, [offset])


def test_a_reference_to_a_reference_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "chain.msgpack"
    write_shared(path, tunnel_events())
    records = raw_records(path)
    first = records[3]  # a reference already: refer to it from the last server message
    data = bytearray(path.read_bytes())
    length = records[4][0] - first[0]
    replaced = msgpack.packb([4, 1, 5, 6, [first[0], length], None], use_bin_type=True)
    old = msgpack.packb(records[5][1], use_bin_type=True)
    start = records[5][0]
    data[start : start + len(old)] = replaced
    path.write_bytes(bytes(data))
    with pytest.raises(
        CorruptCassetteError, match=rf"event 5, byte {start}\): .*at byte {first[0]}: itself a reference"
    ):
        read_cassette(path)


def test_a_reference_in_a_format_1_file_is_refused(tmp_path: Path) -> None:
    path, offset, _ = _with_reference(tmp_path, lambda s: [s[2][0], s[2][1]], version=1)
    with pytest.raises(CorruptCassetteError, match=rf"event 3, byte {offset}\): .*which format 1 does not have"):
        read_cassette(path)


def test_a_record_referred_to_over_and_over_cannot_blow_up_a_whole_read(tmp_path: Path) -> None:
    path = tmp_path / "many.msgpack"
    big = b"\x0a" + b"x" * 4000
    events: list[AnyEvent] = [
        CallStart(call_id=1, seq=0, t_ns=0, method=STREAM, role=Role.ROUTER),
        ClientMessage(call_id=1, seq=1, t_ns=0, data=big),
    ]
    with CassetteWriter(path, header(schema=False), redactor=None) as writer:
        for event in events:
            writer.write(event)
        record = writer.last_record
        target = StoredMessage(offset=record.offset, length=record.length, data=big)
        for seq in range(2, 12):  # the writer does as asked; the recorder never refers to a record twice
            writer.write(ServerMessage(call_id=1, seq=seq, t_ns=0, data=big), same_as=target)
    with pytest.raises(CorruptCassetteError, match=r"event 3, byte .*more bytes than the file holds before them"):
        read_cassette(path)
    with CassetteReader(path) as reader:  # random access is not a whole read: each event on its own
        offsets = [offset for offset, _ in raw_records(path)]
        assert all(reader.event_at(o).data == big for o in offsets[1:])  # type: ignore[union-attr]


@pytest.mark.parametrize("command", [["show"], ["textconv"], ["diff", "{sample}"], ["show", "--format", "json"]])
def test_the_cli_says_which_record_in_one_line(command: list[str], tmp_path: Path) -> None:
    path, offset, index = _with_reference(tmp_path, BAD_REFERENCES["forward"][0])
    args = [part.format(sample=SAMPLE) for part in command]
    done = subprocess.run(
        [sys.executable, "-m", "jsreplay", *args[:1], str(path), *args[1:]], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jsreplay: error:"), done.stderr
    assert f"(event {index}, byte {offset}): a message refers forward" in lines[0]


def test_the_reader_fast_path_is_untouched_by_references() -> None:
    record = [2, 1, 2, 3, b"abc"]
    assert fmt.record_to_event(record) == ClientMessage(call_id=1, seq=2, t_ns=3, data=b"abc")
    with pytest.raises(fmt._Reference):
        fmt.record_to_event([4, 1, 2, 3, [10, 5], None])
