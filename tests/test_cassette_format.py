"""The cassette format: round trips, crash safety, and clear errors for bad input."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jsreplay.cassette import format as fmt
from jsreplay.cassette import migrations
from jsreplay.cassette.errors import (
    CassetteError,
    CassetteExistsError,
    CorruptCassetteError,
    NotACassetteError,
    TruncatedCassetteWarning,
    UnsupportedVersionError,
)
from jsreplay.cassette.format import MAGIC, CassetteReader, CassetteWriter, read_cassette, write_cassette
from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    Cancel,
    CancelSource,
    Cassette,
    ClientHalfClose,
    ClientMessage,
    Header,
    Redaction,
    Role,
    ServerHeaders,
    ServerMessage,
    Status,
)


def make_header() -> Header:
    return Header(
        format_version=migrations.FORMAT_VERSION,
        jsreplay_version="0.1.0",
        created_unix_ns=1_700_000_000_000_000_000,
        upstreams=("127.0.0.1:1234",),
        descriptor_set=b"\x0a\x00",
        redaction=Redaction(enabled=False),
    )


def every_kind() -> list[AnyEvent]:
    return [
        CallStart(
            call_id=1,
            seq=0,
            t_ns=10,
            method="/jumpstarter.v1.RouterService/Stream",
            role=Role.ROUTER,
            metadata=(("x-text", "v"), ("x-bin", b"\x00\xff")),
            peer="ipv4:127.0.0.1:5555",
            target="127.0.0.1:9",
            timeout_ns=5_000_000_000,
        ),
        ClientMessage(call_id=1, seq=1, t_ns=11, data=b"\x0a\x03abc\x10\x00"),
        ServerHeaders(call_id=1, seq=2, t_ns=12, metadata=(("h", "1"),)),
        ServerMessage(call_id=1, seq=3, t_ns=13, data=b"\x0a\x01x", forwarded=b"\x0a\x01y"),
        ServerMessage(call_id=1, seq=4, t_ns=14, data=b""),
        ClientHalfClose(call_id=1, seq=5, t_ns=15),
        Status(call_id=1, seq=6, t_ns=16, code=5, details="not found: ünïcode", trailing_metadata=(("t", b"\x01"),)),
        CallStart(call_id=2, seq=7, t_ns=17, method="/a.B/C", role=Role.CONTROLLER),
        Cancel(call_id=2, seq=8, t_ns=18, by=CancelSource.CLIENT, reason="deadline"),
    ]


def write(path: Path, events: list[AnyEvent], header: Header | None = None) -> None:
    with CassetteWriter(path, header or make_header(), redactor=None) as writer:
        for event in events:
            writer.write(event)


def test_round_trip_every_event_kind(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    write(path, every_kind())
    cassette = read_cassette(path)
    assert cassette.header == make_header()
    assert list(cassette.events) == every_kind()
    # Message events are built without their __init__ (format._message_builders): the same in every way.
    assert [(repr(e), hash(e)) for e in cassette.events] == [(repr(e), hash(e)) for e in every_kind()]
    assert cassette.truncated_at is None
    calls = cassette.calls()
    assert [c.call_id for c in calls] == [1, 2]
    assert calls[0].requests == [b"\x0a\x03abc\x10\x00"]
    assert calls[0].responses == [b"\x0a\x01x", b""]
    assert calls[0].status is not None and calls[0].status.code == 5
    assert calls[1].cancel is not None and calls[1].cancel.by is CancelSource.CLIENT


def test_file_is_private_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    write(path, [])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(CassetteExistsError, match="already exists"):
        write(path, [])
    os.chmod(path, 0o644)
    with CassetteWriter(path, make_header(), redactor=None, overwrite=True):
        pass
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_each_event_reaches_the_file_as_it_is_written(tmp_path: Path) -> None:
    # A killed recorder leaves what the kernel has: every event must be handed over at once, not buffered.
    path = tmp_path / "c.msgpack"
    writer = CassetteWriter(path, make_header(), redactor=None)
    for n, event in enumerate(every_kind(), start=1):
        writer.write(event)
        with CassetteReader(path) as reader:
            assert len(list(reader)) == n
    writer.close()


def test_streaming_reader_reads_across_chunk_boundaries(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    events: list[AnyEvent] = [CallStart(call_id=1, seq=0, t_ns=0, method="/a.B/C", role=Role.CONTROLLER)]
    events += [ClientMessage(call_id=1, seq=i, t_ns=i, data=os.urandom(i % 700)) for i in range(1, 400)]
    write(path, events)
    with CassetteReader(path, chunk_size=97) as reader:
        assert list(reader) == events


def test_cut_at_every_offset_is_a_warning_or_a_cassette_error(tmp_path: Path) -> None:
    full = tmp_path / "full.msgpack"
    write(full, every_kind())
    data = full.read_bytes()
    header_end = len(MAGIC) + len(msgpack.packb(fmt.header_to_record(make_header()), use_bin_type=True))
    cut = tmp_path / "cut.msgpack"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        if size < header_end:
            with pytest.raises(CassetteError):
                read_cassette(cut)
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cassette = read_cassette(cut)
        # Whatever survived is a prefix of what was written.
        assert list(cassette.events) == every_kind()[: len(cassette.events)]
        boundary = size in _event_boundaries(data, header_end)
        if boundary:
            assert not caught and cassette.truncated_at is None
        else:
            assert len(caught) == 1 and issubclass(caught[0].category, TruncatedCassetteWarning)
            assert f"kept the {len(cassette.events)} complete events" in str(caught[0].message)
            assert cassette.truncated_at is not None and cassette.truncated_at <= size


def _event_boundaries(data: bytes, header_end: int) -> set[int]:
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data[header_end:])
    ends = {header_end}
    for _ in unpacker:
        ends.add(header_end + unpacker.tell())
    return ends


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_cassette_error(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("r") / "c.msgpack"
    for candidate in (data, MAGIC + data):
        path.write_bytes(candidate)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read_cassette(path)
        except CassetteError:
            pass


_SCALAR = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5) | st.binary(max_size=5)
_ANY_VALUE = st.recursive(_SCALAR, lambda inner: st.lists(inner, max_size=4), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            _ANY_VALUE,
            # Records that start like real ones, so the per-kind checks are reached too.
            st.tuples(st.integers(1, 7), st.lists(_ANY_VALUE, max_size=10)).map(lambda t: [t[0], *t[1]]),
        ),
        max_size=4,
    )
)
def test_records_of_wrong_types_raise_corrupt_cassette_error(
    tmp_path_factory: pytest.TempPathFactory, records: list[object]
) -> None:
    path = tmp_path_factory.mktemp("w") / "c.msgpack"
    body = b"".join(msgpack.packb(r, use_bin_type=True) for r in records)
    path.write_bytes(MAGIC + msgpack.packb(fmt.header_to_record(make_header()), use_bin_type=True) + body)
    try:
        read_cassette(path)
    except CorruptCassetteError as err:
        assert err.event is not None and err.offset is not None


def test_errors_name_the_file_and_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.msgpack"
    path.write_bytes(b"hello world")
    with pytest.raises(NotACassetteError, match=r"bad\.msgpack \(byte 0\): not a jsreplay cassette"):
        read_cassette(path)

    write(path.with_name("ok.msgpack"), every_kind()[:2])
    good = path.with_name("ok.msgpack").read_bytes()
    path.write_bytes(good + msgpack.packb([2, 1, "two", 3, b""]))
    with pytest.raises(CorruptCassetteError, match=r"event 2, byte \d+\): sequence number must be an integer"):
        read_cassette(path)

    path.write_bytes(good + b"\xc1")  # 0xc1 is never valid msgpack
    with pytest.raises(CorruptCassetteError, match="malformed msgpack"):
        read_cassette(path)

    with pytest.raises(CassetteError, match="cannot open"):
        read_cassette(tmp_path / "missing.msgpack")


def test_newer_format_version_asks_for_an_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "new.msgpack"
    record = fmt.header_to_record(make_header())
    record["format_version"] = migrations.FORMAT_VERSION + 1
    path.write_bytes(MAGIC + msgpack.packb(record, use_bin_type=True))
    with pytest.raises(UnsupportedVersionError, match="upgrade jsreplay"):
        read_cassette(path)


def test_migration_chain_upgrades_header_and_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend the next format is current and this one stored client messages as hex text.
    now = migrations.FORMAT_VERSION

    def header(h: dict[str, object]) -> dict[str, object]:
        return {**h, "format_version": now + 1, "migrated": True}

    def record(r: list[object]) -> list[object]:
        if r[0] == 2 and isinstance(r[4], str):
            return [*r[:4], bytes.fromhex(r[4])]
        return r

    path = tmp_path / "old.msgpack"
    head = fmt.header_to_record(make_header())
    old = [1, 1, 0, 0, "/a.B/C", "controller", [], "", "", None], [2, 1, 1, 5, "cafe"]
    path.write_bytes(MAGIC + b"".join(msgpack.packb(x, use_bin_type=True) for x in (head, *old)))
    monkeypatch.setattr(migrations, "FORMAT_VERSION", now + 1)
    steps = {**migrations.MIGRATIONS, now: migrations.Migration(header=header, record=record)}
    monkeypatch.setattr(migrations, "MIGRATIONS", steps)
    cassette = read_cassette(path)
    assert cassette.header.format_version == now + 1
    assert cassette.header.extra == {"migrated": True}
    assert cassette.events[1] == ClientMessage(call_id=1, seq=1, t_ns=5, data=b"\xca\xfe")

    monkeypatch.setattr(migrations, "MIGRATIONS", {})
    with pytest.raises(UnsupportedVersionError, match="too old"):
        read_cassette(path)


def test_unknown_header_keys_and_trailing_record_elements_are_kept_or_ignored(tmp_path: Path) -> None:
    path = tmp_path / "c.msgpack"
    head = fmt.header_to_record(make_header())
    head["future_key"] = [1, 2]
    records = [[1, 1, 0, 0, "/a.B/C", "controller", [], "", "", None, "future"], [5, 1, 1, 2, "future"]]
    path.write_bytes(MAGIC + b"".join(msgpack.packb(x, use_bin_type=True) for x in (head, *records)))
    cassette = read_cassette(path)
    assert cassette.header.extra == {"future_key": [1, 2]}
    assert isinstance(cassette.events[1], ClientHalfClose)


def test_write_cassette_round_trip(tmp_path: Path) -> None:
    original = Cassette(header=make_header(), events=tuple(every_kind()))
    write_cassette(tmp_path / "c.msgpack", original, redactor=None)
    assert read_cassette(tmp_path / "c.msgpack") == original


def _header_bytes() -> bytes:
    return MAGIC + msgpack.packb(fmt.header_to_record(make_header()), use_bin_type=True)


def _peak_bytes_reading(path: Path) -> tuple[int, BaseException | None]:
    import tracemalloc

    tracemalloc.start()
    try:
        read_cassette(path)
        error = None
    except CassetteError as err:
        error = err
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, error


def test_records_of_many_small_objects_are_refused_with_bounded_memory(tmp_path: Path) -> None:
    """Few bytes can make many Python objects (an empty array is 1 byte, a list 56+): objects are counted."""
    path = tmp_path / "arrays.msgpack"
    inner = b"\xdc" + (10_000).to_bytes(2, "big") + b"\x90" * 10_000  # an array of 10,000 empty arrays
    record = b"\xdc" + (240).to_bytes(2, "big") + inner * 240  # 2.4 MB, 2.4 million lists
    path.write_bytes(_header_bytes() + record)
    peak, error = _peak_bytes_reading(path)
    assert isinstance(error, CorruptCassetteError) and error.offset == len(_header_bytes()), error
    assert "objects" in str(error)
    assert peak < 10 * path.stat().st_size, peak


def test_a_record_over_the_cap_is_refused_even_in_small_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three binaries of 40 MiB made a 120 MiB record that each fit the 80 MiB buffer (here scaled down)."""
    monkeypatch.setattr(fmt, "MAX_RECORD_BYTES", 1 << 20)
    path = tmp_path / "big.msgpack"
    pieces = [b"x" * (400 << 10)] * 3
    path.write_bytes(_header_bytes() + msgpack.packb([2, 1, 0, 0, *pieces], use_bin_type=True))
    for chunk_size in (64 << 10, 256 << 10, 1 << 20):
        with CassetteReader(path, chunk_size=chunk_size) as reader:
            with pytest.raises(CorruptCassetteError, match=r"big\.msgpack \(event 0, byte \d+\): .*larger than 1 MiB"):
                list(reader)
    with pytest.raises(CorruptCassetteError, match="larger than 1 MiB"):
        fmt.read_events_at(path, [len(_header_bytes())])
    # Just under the cap is still a record.
    path.write_bytes(_header_bytes() + msgpack.packb([2, 1, 0, 0, b"x" * ((1 << 20) - 64)], use_bin_type=True))
    assert len(read_cassette(path).events) == 1
