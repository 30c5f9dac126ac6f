"""The on-disk cassette format: a magic, a msgpack header map, then one msgpack array per event.

Writing is append-only and each event is handed to the kernel as it happens (one `write` per event), so a
recorder killed with SIGKILL leaves a file that reads back up to its last complete event. Reading streams
with bounded memory; a cut-off tail is dropped with a `TruncatedCassetteWarning`.

See README.md, "Cassette format", for the layout in full.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import msgpack

from jsreplay.cassette import migrations
from jsreplay.cassette.errors import (
    CassetteError,
    CassetteExistsError,
    CorruptCassetteError,
    NotACassetteError,
    TruncatedCassetteWarning,
    UnsupportedVersionError,
)
from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    Cancel,
    CancelSource,
    Cassette,
    ClientHalfClose,
    ClientMessage,
    EventKind,
    Header,
    Metadata,
    Redaction,
    Role,
    ServerHeaders,
    ServerMessage,
    Status,
)
from jsreplay.cassette.redaction import Redactor
from jsreplay.files import create_replacing
from jsreplay.protocol.registry import ProtocolError, Registry

MAGIC = b"\x89JSR\r\n\x1a\n"  # PNG-style: a high byte and line endings catch text-mode mangling
HEADER_MAGIC = "jsreplay-cassette"
READ_CHUNK = 1 << 20
# The largest single record a reader accepts: a 64 MiB message plus its envelope. Bounds reader memory.
MAX_RECORD_BYTES = 80 << 20
# The most array slots (elements, plus one per array) and map entries a record may have. A few bytes make a
# Python object of 30-60 bytes (an empty array is one byte, an empty list 56), so bytes alone do not bound
# memory. An event has ten elements; this leaves room for about 5,000 metadata pairs. Bounds a record's objects
# to a few MB.
MAX_RECORD_OBJECTS = 16_384

_STRING_TO_ROLE = {r.value: r for r in Role}
_STRING_TO_CANCEL = {c.value: c for c in CancelSource}


# ---------------------------------------------------------------------------------------------------- encoding


def _pack_metadata(metadata: Metadata) -> list[list[str | bytes]]:
    return [[k, v] for k, v in metadata]


def header_to_record(header: Header) -> dict[str, Any]:
    record: dict[str, Any] = dict(header.extra)
    record.update(
        magic=HEADER_MAGIC,
        format_version=header.format_version,
        jsreplay_version=header.jsreplay_version,
        created_unix_ns=header.created_unix_ns,
        upstreams=list(header.upstreams),
        descriptor_set=header.descriptor_set,
        redaction={
            "enabled": header.redaction.enabled,
            "metadata_keys": list(header.redaction.metadata_keys),
            "fields": list(header.redaction.fields),
            "field_names": list(header.redaction.field_names),
        },
    )
    return record


def event_to_record(event: AnyEvent) -> list[Any]:
    head: list[Any] = [int(event.kind), event.call_id, event.seq, event.t_ns]
    match event:
        case CallStart():
            return [
                *head,
                event.method,
                event.role.value,
                _pack_metadata(event.metadata),
                event.peer,
                event.target,
                event.timeout_ns,
            ]
        case ClientMessage():
            return [*head, event.data]
        case ServerHeaders():
            return [*head, _pack_metadata(event.metadata)]
        case ServerMessage():
            return [*head, event.data, event.forwarded]
        case ClientHalfClose():
            return head
        case Status():
            return [*head, event.code, event.details, _pack_metadata(event.trailing_metadata)]
        case Cancel():
            return [*head, event.by.value, event.reason]
    raise TypeError(f"not an event: {event!r}")


# ---------------------------------------------------------------------------------------------------- decoding


class _Bad(Exception):
    """A record of the wrong shape; turned into CorruptCassetteError with the location attached."""


class _Reference(_Bad):
    """A message record whose data is a reference to an earlier record (format 2): `record_to_event` cannot
    build it alone, the reader resolves it (`CassetteReader._dereferenced`). Raised, not returned, so that the
    hot path pays nothing for it (and raised as the class, with no message to build: references are common)."""

    def __str__(self) -> str:
        return "a message refers to another record's data, which needs the reader"


def _type_problem(value: Any, what: str) -> str:
    return f"{what} must be an integer, not {type(value).__name__}"


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise _Bad(_type_problem(value, what))
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"{what} must be a string, not {type(value).__name__}")
    return value


def _bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise _Bad(f"{what} must be binary, not {type(value).__name__}")
    return value


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"{what} must be a boolean, not {type(value).__name__}")
    return value


def _str_list(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(f"{what} must be an array")
    return tuple(_str(v, what) for v in value)


def _metadata(value: Any, what: str) -> Metadata:
    if not isinstance(value, list):
        raise _Bad(f"{what} must be an array of [key, value] pairs")
    out: list[tuple[str, str | bytes]] = []
    for pair in value:
        if type(pair) is list and len(pair) == 2:  # the common case, checked without building messages
            key, item = pair
            if type(key) is str and (type(item) is str or type(item) is bytes):
                out.append((key, item))
                continue
        if not isinstance(pair, list) or len(pair) != 2:
            raise _Bad(f"{what} must be an array of [key, value] pairs")
        key = _str(pair[0], f"{what} key")
        if not isinstance(pair[1], str | bytes):
            raise _Bad(f"{what} value for {key!r} must be a string or binary")
        out.append((key, pair[1]))
    return tuple(out)


def record_to_header(record: Any) -> Header:
    if not isinstance(record, dict) or record.get("magic") != HEADER_MAGIC:
        raise _Bad("the header is not a jsreplay cassette header")
    known = {
        "magic",
        "format_version",
        "jsreplay_version",
        "created_unix_ns",
        "upstreams",
        "descriptor_set",
        "redaction",
    }
    redaction = record.get("redaction", {})
    if not isinstance(redaction, dict):
        raise _Bad("header redaction must be a map")
    return Header(
        format_version=_int(record.get("format_version"), "format_version"),
        jsreplay_version=_str(record.get("jsreplay_version", ""), "jsreplay_version"),
        created_unix_ns=_int(record.get("created_unix_ns", 0), "created_unix_ns"),
        upstreams=_str_list(record.get("upstreams", []), "upstreams"),
        descriptor_set=_bytes(record.get("descriptor_set", b""), "descriptor_set"),
        redaction=Redaction(
            enabled=_bool(redaction.get("enabled", True), "redaction.enabled"),
            metadata_keys=_str_list(redaction.get("metadata_keys", []), "redaction.metadata_keys"),
            fields=_str_list(redaction.get("fields", []), "redaction.fields"),
            field_names=_str_list(redaction.get("field_names", []), "redaction.field_names"),
        ),
        extra={k: v for k, v in record.items() if k not in known},
    )


# Minimum record length per kind; readers ignore elements past what they know (later additions).
_RECORD_LENGTH = {
    EventKind.CALL_START: 10,
    EventKind.CLIENT_MESSAGE: 5,
    EventKind.SERVER_HEADERS: 5,
    EventKind.SERVER_MESSAGE: 6,
    EventKind.CLIENT_HALF_CLOSE: 4,
    EventKind.STATUS: 7,
    EventKind.CANCEL: 6,
}


_KINDS = {int(kind): kind for kind in EventKind}


def _message_builders() -> tuple[Callable[..., ClientMessage], Callable[..., ServerMessage]]:
    """Positional constructors for the two message events, most of every cassette.

    They fill the slots as the frozen dataclass's __init__ does, minus its per-field `object.__setattr__` calls
    (a third of the time). Should the model's fields change, they are the dataclasses, called by keyword.
    """
    client_fields = ("call_id", "seq", "t_ns", "data")
    server_fields = (*client_fields, "forwarded")
    new = object.__new__
    classes = (ClientMessage, ServerMessage)
    if (
        tuple(f.name for f in dataclasses.fields(ClientMessage)) != client_fields
        or tuple(f.name for f in dataclasses.fields(ServerMessage)) != server_fields
        or not all(hasattr(cls, "__slots__") and not hasattr(cls, "__post_init__") for cls in classes)
    ):
        return (
            lambda *values: ClientMessage(**dict(zip(client_fields, values, strict=True))),
            lambda *values: ServerMessage(**dict(zip(server_fields, values, strict=True))),
        )
    call_id, seq, t_ns, c_data = (getattr(ClientMessage, name).__set__ for name in client_fields)
    s_data, forwarded = (getattr(ServerMessage, name).__set__ for name in server_fields[3:])

    def client_message(a: int, b: int, c: int, d: bytes) -> ClientMessage:
        event: ClientMessage = new(ClientMessage)
        call_id(event, a)
        seq(event, b)
        t_ns(event, c)
        c_data(event, d)
        return event

    def server_message(a: int, b: int, c: int, d: bytes, e: bytes | None) -> ServerMessage:
        event: ServerMessage = new(ServerMessage)
        call_id(event, a)
        seq(event, b)
        t_ns(event, c)
        s_data(event, d)
        forwarded(event, e)
        return event

    return client_message, server_message


_client_message, _server_message = _message_builders()


_CALL_START = int(EventKind.CALL_START)
_CLIENT_MESSAGE = int(EventKind.CLIENT_MESSAGE)
_SERVER_HEADERS = int(EventKind.SERVER_HEADERS)
_SERVER_MESSAGE = int(EventKind.SERVER_MESSAGE)
_CLIENT_HALF_CLOSE = int(EventKind.CLIENT_HALF_CLOSE)
_STATUS = int(EventKind.STATUS)
_CANCEL = int(EventKind.CANCEL)
_MIN_LENGTH = {int(kind): n for kind, n in _RECORD_LENGTH.items()}  # by number: an Enum hashes in Python


def record_to_event(record: Any) -> AnyEvent:
    # The hot path of every reader (show and diff decode whole cassettes). Well-formed message records, most of a
    # cassette, are built here with the fewest steps; everything else, errors included, takes the general path.
    if type(record) is list and len(record) >= 5:
        head = record[0]
        if (head == _CLIENT_MESSAGE or head == _SERVER_MESSAGE) and type(head) is int:
            call_id, seq, t_ns, data = record[1], record[2], record[3], record[4]
            if type(call_id) is int and type(seq) is int and type(t_ns) is int and type(data) is bytes:
                if head == _CLIENT_MESSAGE:
                    return _client_message(call_id, seq, t_ns, data)
                if len(record) >= 6:
                    forwarded = record[5]
                    if forwarded is None or type(forwarded) is bytes:
                        return _server_message(call_id, seq, t_ns, data, forwarded)
    return _record_to_event(record)


def _record_to_event(record: Any) -> AnyEvent:
    """Any record, with every check: the common fields inline, the two message kinds first."""
    if type(record) is not list or not record:
        raise _Bad("an event record must be a non-empty array")
    head = record[0]
    kind = _KINDS.get(head) if type(head) is int else None
    if kind is None:
        raise _Bad(f"unknown event kind {head!r}" if type(head) is int else _type_problem(head, "event kind"))
    if len(record) < _MIN_LENGTH[head]:
        raise _Bad(f"{kind.name} record has {len(record)} elements, needs {_RECORD_LENGTH[kind]}")
    call_id, seq, t_ns = record[1], record[2], record[3]
    if type(call_id) is not int:
        raise _Bad(_type_problem(call_id, "call id"))
    if type(seq) is not int:
        raise _Bad(_type_problem(seq, "sequence number"))
    if type(t_ns) is not int:
        raise _Bad(_type_problem(t_ns, "time offset"))
    if head == _CLIENT_MESSAGE:
        data = record[4]
        if type(data) is list:
            raise _Reference
        return _client_message(call_id, seq, t_ns, data if type(data) is bytes else _bytes(data, "message"))
    if head == _SERVER_MESSAGE:
        data, forwarded = record[4], record[5]
        if type(data) is list:
            raise _Reference
        return _server_message(
            call_id,
            seq,
            t_ns,
            data if type(data) is bytes else _bytes(data, "message"),
            None if forwarded is None else _bytes(forwarded, "forwarded message"),
        )
    # Kinds by their number: comparing Enum members costs a class lookup each.
    if head == _CALL_START:
        role = _STRING_TO_ROLE.get(_str(record[5], "role"))
        if role is None:
            raise _Bad(f"unknown role {record[5]!r}")
        timeout = record[9]
        return CallStart(
            call_id=call_id,
            seq=seq,
            t_ns=t_ns,
            method=_str(record[4], "method"),
            role=role,
            metadata=_metadata(record[6], "request metadata"),
            peer=_str(record[7], "peer"),
            target=_str(record[8], "target"),
            timeout_ns=None if timeout is None else _int(timeout, "timeout"),
        )
    if head == _SERVER_HEADERS:
        return ServerHeaders(call_id=call_id, seq=seq, t_ns=t_ns, metadata=_metadata(record[4], "initial metadata"))
    if head == _CLIENT_HALF_CLOSE:
        return ClientHalfClose(call_id=call_id, seq=seq, t_ns=t_ns)
    if head == _STATUS:
        return Status(
            call_id=call_id,
            seq=seq,
            t_ns=t_ns,
            code=_int(record[4], "status code"),
            details=_str(record[5], "status details"),
            trailing_metadata=_metadata(record[6], "trailing metadata"),
        )
    if head == _CANCEL:
        by = _STRING_TO_CANCEL.get(_str(record[4], "cancel source"))
        if by is None:
            raise _Bad(f"unknown cancel source {record[4]!r}")
        return Cancel(call_id=call_id, seq=seq, t_ns=t_ns, by=by, reason=_str(record[5], "cancel reason"))
    raise _Bad(f"unknown event kind {kind}")  # pragma: no cover - every kind is handled above


# ---------------------------------------------------------------------------------------------------- writer


# The first format whose message records may refer to another record's data instead of holding it.
REFERENCES_VERSION = 2


@dataclass(frozen=True, slots=True)
class WrittenRecord:
    """Where the writer put a record, and whether it is a message that refers to another record's data."""

    offset: int
    length: int
    reference: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message record in the file, written with its data: what a later record may refer to instead of
    holding the same bytes (`CassetteWriter.write(event, same_as=...)`)."""

    offset: int
    length: int
    data: bytes  # as stored: redacted


@dataclass(frozen=True)
class Resume:
    """Where a writer's numbering continues: the next call id and sequence number, and the last time offset."""

    next_call_id: int = 1
    next_seq: int = 0
    last_t_ns: int = 0


class CassetteWriter:
    """Appends events to a cassette file, redacting every event before it reaches the disk.

    A new file is created 0600 (cassettes can hold request data even when redacted). Each event is one
    `os.write`, so what the kernel has is always whole events up to the one in flight. `append_to` continues an
    existing cassette (replay's `new_episodes` mode).

    A message may be written as a reference to an earlier message record with the same stored data (`same_as`;
    `last_record` says where each record went): the two ends of a tunnel then store its bytes once.
    """

    def __init__(
        self,
        path: str | Path,
        header: Header,
        *,
        redactor: Redactor | None,
        overwrite: bool = False,
    ) -> None:
        self._fd: int | None = None
        self._setup(path, redactor)
        try:
            if overwrite:  # a new file renamed over the old: a symlink there is replaced, not written through
                self._fd = create_replacing(self.path, 0o600)
            else:  # O_EXCL never follows a symlink, not even a dangling one
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise CassetteExistsError(self.path, "already exists; choose another path or allow overwriting") from None
        except OSError as err:
            raise CassetteError(self.path, f"cannot create: {err.strerror}") from None
        self._write(MAGIC + self._packer.pack(header_to_record(header)))
        self._events_start = self._end
        self._references = header.format_version >= REFERENCES_VERSION

    @property
    def format_2(self) -> bool:
        """The file's format has references and elided uploads (2 and later); an older one is appended to as is."""
        return self._references

    def _setup(self, path: str | Path, redactor: Redactor | None) -> None:
        self.path = Path(path)
        self._redactor = redactor
        self._methods: dict[int, str] = {}
        self._packer = msgpack.Packer(use_bin_type=True)
        self._fd = None
        self.events_written = 0
        self.bytes_written = 0
        self.references_written = 0
        self.resume = Resume()
        self._end = 0  # the file's size: where the next record goes
        self._events_start = 0  # where the first event record is: no reference points before it
        self._references = False  # whether the file's format has references (an older one is appended to as is)
        self._last = (0, 0, False)

    @classmethod
    def append_to(cls, path: str | Path, *, redactor: Redactor | None) -> CassetteWriter:
        """Continue an existing cassette: call ids and sequence numbers go on from its last event.

        A cut-off tail (a recording that was killed) is dropped first, so the new events follow whole ones.
        """
        next_call_id, next_seq, last_t_ns = 1, 0, 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncatedCassetteWarning)
            with CassetteReader(path) as reader:
                for event in reader:
                    next_call_id = max(next_call_id, event.call_id + 1)
                    next_seq = max(next_seq, event.seq + 1)
                    last_t_ns = max(last_t_ns, event.t_ns)
                truncated_at = reader.truncated_at
                events_start = reader.events_start
                version = reader.header.format_version
        writer = cls.__new__(cls)
        writer._setup(path, redactor)
        try:
            writer._fd = os.open(writer.path, os.O_WRONLY | os.O_APPEND)
            if truncated_at is not None:
                os.ftruncate(writer._fd, truncated_at)
            writer._end = os.fstat(writer._fd).st_size
        except OSError as err:
            raise CassetteError(writer.path, f"cannot append: {err.strerror}") from None
        writer._events_start = events_start
        writer._references = version >= REFERENCES_VERSION
        writer.resume = Resume(next_call_id=next_call_id, next_seq=next_seq, last_t_ns=last_t_ns)
        return writer

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            raise CassetteError(self.path, "writer is closed")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.bytes_written += len(data)
        self._end += len(data)

    def write(self, event: AnyEvent, *, same_as: StoredMessage | None = None) -> AnyEvent:
        """Redact and append one event; returns the event as stored (with its data, even when the record refers
        to `same_as` for it). `same_as`: a message record of this file, as `last_record` and the stored event
        told it, whose data a message event may repeat: when the event's data as stored is the same bytes, the
        record holds a reference to it instead (only in a format that has references). Refer to a record at most
        once: a reader refuses references that resolve to more bytes than the file holds before them."""
        if isinstance(event, CallStart):
            self._methods[event.call_id] = event.method
        if self._redactor is not None:
            event = self._redactor.redact(event, self._methods.get(event.call_id, ""))
        record = event_to_record(event)
        reference = False
        if same_as is not None and self._may_refer(event, same_as):
            record[4] = [same_as.offset, same_as.length]
            reference = True
        packed = self._packer.pack(record)
        self._last = (self._end, len(packed), reference)
        self._write(packed)
        self.events_written += 1
        self.references_written += int(reference)
        return event

    def _may_refer(self, event: AnyEvent, target: StoredMessage) -> bool:
        """The event is a message whose stored data is the target's, and the target is an event record that
        ends before this one starts (what the reader checks, so a bad `same_as` cannot make a bad file)."""
        return (
            self._references
            and isinstance(event, ClientMessage | ServerMessage)
            and self._events_start <= target.offset
            and 0 < target.length <= MAX_RECORD_BYTES
            and target.offset + target.length <= self._end
            and event.data == target.data
        )

    @property
    def last_record(self) -> WrittenRecord:
        """Where the last `write` put its record (before any write: offset 0, length 0)."""
        offset, length, reference = self._last
        return WrittenRecord(offset=offset, length=length, reference=reference)

    def close(self, *, sync: bool = True) -> None:
        if self._fd is None:
            return
        try:
            if sync:
                os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CassetteWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- reader


class CassetteReader:
    """Streams a cassette's events with bounded memory.

    The header is read on open. Iterating yields events in file order; when the file ends inside a record,
    iteration stops, `truncated_at` is set to that record's byte offset and a `TruncatedCassetteWarning` says
    how many events survived.

    A message record that refers to an earlier record's data (format 2) is resolved as it is read (one `pread`
    of that record), so every reader sees whole messages.
    """

    def __init__(self, path: str | Path, *, chunk_size: int = READ_CHUNK) -> None:
        self.path = Path(path)
        self._chunk_size = chunk_size
        self.truncated_at: int | None = None
        self.events_read = 0
        try:
            self._file: BinaryIO = open(self.path, "rb")  # closed by close()/__exit__
        except OSError as err:
            raise CassetteError(self.path, f"cannot open: {err.strerror}") from None
        self._consumed = 0
        self._fed = 0
        self._events_started = False
        try:
            self._unpacker = self._new_unpacker()
            self.header = self._read_header()
        except BaseException:
            self._file.close()
            raise
        # Upgrades of records; steps that leave records as they are cost the hot loop nothing.
        self._upgrades: list[Callable[[list[Any]], list[Any]]] = [
            m.record
            for m in (migrations.chain(self._version) if self._version < migrations.FORMAT_VERSION else [])
            if m.record is not None
        ]
        self._references = self._version >= REFERENCES_VERSION
        # Data that references resolved to while streaming. Each record is referred to at most once, so this
        # never passes the file's size before the record being read: a file cannot make a whole-cassette read
        # (read_cassette) hold more than about twice its size.
        self._resolved_bytes = 0

    def _new_unpacker(self) -> msgpack.Unpacker:
        self._limits = _Limits()
        self._objects_left = self._limits.left
        return self._limits.unpacker(self._chunk_size)

    def _fill(self, record_start: int | None = None) -> bool:
        """Feed the next chunk; False at the end of the file. `record_start` (a file offset): the record being
        read, refused once more than MAX_RECORD_BYTES of it were fed (its pieces may each fit the buffer)."""
        if record_start is not None and len(MAGIC) + self._fed - record_start > MAX_RECORD_BYTES:
            raise _record_too_large(self.path, record_start, self.events_read if self._events_started else None)
        chunk = self._file.read(self._chunk_size)
        if not chunk:
            return False
        self._fed += len(chunk)
        try:
            self._unpacker.feed(chunk)
        except msgpack.BufferFull:
            raise CorruptCassetteError(
                self.path,
                f"a record is larger than {MAX_RECORD_BYTES >> 20} MiB",
                offset=self._offset(),
            ) from None
        return True

    def _offset(self) -> int:
        """File offset just past the last whole object (the unpacker's own tell() counts partial reads)."""
        return len(MAGIC) + self._consumed

    def _next_object(self) -> tuple[bool, Any]:
        """(True, object) for the next whole object, (False, None) at the end of the file."""
        while True:
            try:
                self._objects_left[0] = MAX_RECORD_OBJECTS
                obj = self._unpacker.unpack()
                self._consumed = self._unpacker.tell()
                return True, obj
            except msgpack.OutOfData:
                if not self._fill(self._offset()):
                    return False, None
            except _TooManyObjects:
                raise _too_many_objects(self.path, self._offset(), None) from None
            except Exception as err:  # msgpack raises ValueError, TypeError, UnicodeDecodeError, StackError...
                raise CorruptCassetteError(self.path, f"malformed msgpack: {err}", offset=self._offset()) from None

    def _read_header(self) -> Header:
        magic = self._file.read(len(MAGIC))
        if magic != MAGIC:
            raise NotACassetteError(self.path, "not a jsreplay cassette (bad magic)", offset=0)
        ok, record = self._next_object()
        if not ok:
            raise CorruptCassetteError(self.path, "the header is cut off", offset=len(MAGIC))
        version = record.get("format_version") if isinstance(record, dict) else None
        if type(version) is int and version > migrations.FORMAT_VERSION:
            raise UnsupportedVersionError(
                self.path,
                f"format version {version} is newer than this jsreplay reads "
                f"({migrations.FORMAT_VERSION}); upgrade jsreplay",
            )
        if type(version) is int and version < migrations.FORMAT_VERSION:
            try:
                for migration in migrations.chain(version):
                    record = migration.header(record)
            except KeyError:
                raise UnsupportedVersionError(
                    self.path, f"format version {version} is too old for this jsreplay to read"
                ) from None
            except Exception as err:
                raise CorruptCassetteError(self.path, f"cannot upgrade the header: {err}", offset=len(MAGIC)) from None
        self._version = version if type(version) is int else migrations.FORMAT_VERSION
        self.events_start = self._offset()  # where the first event record is
        try:
            header = record_to_header(record)
        except _Bad as err:
            raise CorruptCassetteError(self.path, str(err), offset=len(MAGIC)) from None
        try:
            # Checked here, once (registries are cached by schema): no later use meets a broken schema.
            self.registry = Registry.for_descriptor_set(header.descriptor_set)
        except ProtocolError as err:
            raise CorruptCassetteError(
                self.path, f"the embedded schema (descriptor_set): {err}", offset=len(MAGIC)
            ) from None
        return header

    def __iter__(self) -> Iterator[AnyEvent]:
        return map(itemgetter(1), self.iter_with_offsets())  # no generator of its own: show reads 100k+ events

    def iter_with_offsets(self) -> Iterator[tuple[int, AnyEvent]]:
        """Like iterating the reader, with each event's record offset in the file (for `read_events_at`)."""
        # The hot loop of show and diff: _next_object and _decode inlined.
        unpacker = self._unpacker
        chain = self._upgrades
        objects_left = self._objects_left
        self._events_started = True
        while True:
            offset = len(MAGIC) + self._consumed
            objects_left[0] = MAX_RECORD_OBJECTS
            try:
                record = unpacker.unpack()
            except msgpack.OutOfData:
                if self._fill(offset):
                    continue
                break
            except _TooManyObjects:
                raise _too_many_objects(self.path, offset, self.events_read) from None
            except Exception as err:  # msgpack raises ValueError, TypeError, UnicodeDecodeError, StackError...
                raise CorruptCassetteError(self.path, f"malformed msgpack: {err}", offset=offset) from None
            consumed = unpacker.tell()
            if consumed - self._consumed > MAX_RECORD_BYTES:
                raise _record_too_large(self.path, offset, self.events_read)
            self._consumed = consumed
            try:
                for upgrade in chain:
                    record = upgrade(record)
                event = record_to_event(record)
            except _Reference:
                event = self._dereferenced(record, offset, self.events_read, stream=True)
            except _Bad as err:
                raise CorruptCassetteError(self.path, str(err), offset=offset, event=self.events_read) from None
            except Exception as err:
                raise CorruptCassetteError(
                    self.path, f"cannot upgrade record: {err}", offset=offset, event=self.events_read
                ) from None
            self.events_read += 1
            yield offset, event
        leftover = self._offset()
        size = os.fstat(self._file.fileno()).st_size
        if leftover < size:
            self.truncated_at = leftover
            warnings.warn(
                TruncatedCassetteWarning(
                    f"{self.path}: ends inside a record at byte {leftover} of {size}; "
                    f"kept the {self.events_read} complete events before it"
                ),
                stacklevel=2,  # the loop that iterates (plain iteration adds no frame: see __iter__)
            )

    # ------------------------------------------------------------------------------------------ random access

    def event_at(self, offset: int, length: int | None = None) -> AnyEvent:
        """The event whose record starts at `offset` (as `iter_with_offsets` gave it), decoded as the stream is
        (the caps, this file's migrations). With `length` (the record's size, known from a scan) it is one
        `pread`; without, the record is read in chunks until it is whole. An offset that is not the start of a
        whole record raises a CorruptCassetteError."""
        if length is None:
            return self._event_at_unknown_length(offset)
        if not 0 < length <= MAX_RECORD_BYTES:
            raise _record_too_large(self.path, offset, None)
        data = os.pread(self._file.fileno(), length, offset)
        if len(data) != length:
            raise CorruptCassetteError(self.path, "the record is cut off (the file changed?)", offset=offset)
        self._objects_left[0] = MAX_RECORD_OBJECTS
        try:
            record = msgpack.unpackb(data, **self._limits.options)
        except _TooManyObjects:
            raise _too_many_objects(self.path, offset, None) from None
        except Exception as err:  # ExtraData, malformed msgpack
            raise CorruptCassetteError(
                self.path, f"no whole record here (the file changed?): {err}", offset=offset
            ) from None
        return self._decode(record, offset, None)

    def _event_at_unknown_length(self, offset: int) -> AnyEvent:
        size = os.fstat(self._file.fileno()).st_size
        if not len(MAGIC) <= offset < size:
            raise CorruptCassetteError(self.path, "no record at this offset", offset=offset)
        unpacker = self._limits.unpacker()
        self._objects_left[0] = MAX_RECORD_OBJECTS
        want = 64 << 10  # most records are small: read a little first, then in full chunks
        fed = 0
        while True:
            try:
                record = unpacker.unpack()
                break
            except msgpack.OutOfData:
                if fed > MAX_RECORD_BYTES:
                    raise _record_too_large(self.path, offset, None) from None
                chunk = os.pread(self._file.fileno(), want, offset + fed)
                want = READ_CHUNK
                if not chunk:
                    raise CorruptCassetteError(self.path, "the record is cut off", offset=offset) from None
                fed += len(chunk)
                try:
                    unpacker.feed(chunk)
                except msgpack.BufferFull:
                    raise _record_too_large(self.path, offset, None) from None
            except _TooManyObjects:
                raise _too_many_objects(self.path, offset, None) from None
            except Exception as err:
                raise CorruptCassetteError(self.path, f"malformed msgpack: {err}", offset=offset) from None
        return self._decode(record, offset, None)

    def _decode(self, record: Any, offset: int, index: int | None) -> AnyEvent:
        """A record as an event: this file's migrations, then the event's shape (the stream's loop inlines this)."""
        try:
            for upgrade in self._upgrades:
                record = upgrade(record)
            return record_to_event(record)
        except _Reference:
            pass  # resolved below, outside this handler (its errors are not "cannot upgrade")
        except _Bad as err:
            raise CorruptCassetteError(self.path, str(err), offset=offset, event=index) from None
        except Exception as err:
            raise CorruptCassetteError(self.path, f"cannot upgrade record: {err}", offset=offset, event=index) from None
        return self._dereferenced(record, offset, index, stream=False)

    def _dereferenced(self, record: list[Any], offset: int, index: int | None, *, stream: bool) -> AnyEvent:
        """A message record (upgraded, shape checked up to its data) whose data is `[offset, length]` of an
        earlier message record: the event, with that record's data. One `pread`; no chains, so no loops."""
        ref = record[4]
        if not (len(ref) == 2 and type(ref[0]) is int and type(ref[1]) is int) or not self._references:
            raise self._bad_reference(ref, offset, index) from None  # (called while handling _Reference)
        target, length = ref
        if not (self.events_start <= target and 0 < length <= MAX_RECORD_BYTES and target + length <= offset):
            raise self._bad_reference(ref, offset, index) from None
        raw = os.pread(self._file.fileno(), length, target)
        self._objects_left[0] = MAX_RECORD_OBJECTS  # the referring record's objects were counted as it was read
        try:
            if len(raw) != length:
                raise _Bad("cut off (the file changed?)")
            shared = msgpack.unpackb(raw, **self._limits.options)
            for upgrade in self._upgrades:
                shared = upgrade(shared)
            referred = record_to_event(shared)
        except _Reference:
            raise self._bad_reference(ref, offset, index, "itself a reference") from None
        except _TooManyObjects:
            raise self._bad_reference(ref, offset, index, "too many objects for a record") from None
        except Exception as err:  # not one whole record, malformed, of the wrong shape
            raise self._bad_reference(ref, offset, index, f"not one whole event record: {err}") from None
        if type(referred) is not ClientMessage and type(referred) is not ServerMessage:
            raise self._bad_reference(ref, offset, index, f"a {referred.kind.name}, not a message") from None
        data = referred.data
        if stream:
            self._resolved_bytes += len(data)
            if self._resolved_bytes > offset:
                raise CorruptCassetteError(
                    self.path,
                    "message references resolve to more bytes than the file holds before them "
                    "(a record referred to more than once)",
                    offset=offset,
                    event=index,
                ) from None
        try:
            return record_to_event([*record[:4], data, *record[5:]])
        except _Bad as err:
            raise CorruptCassetteError(self.path, str(err), offset=offset, event=index) from None

    def _bad_reference(self, ref: Any, offset: int, index: int | None, what: str = "") -> CorruptCassetteError:
        """What is wrong with the message reference `ref` of the record at `offset` (`what`: about its target)."""
        if not self._references:
            problem = f"a message refers to another record, which format {self._version} does not have"
        elif not (len(ref) == 2 and type(ref[0]) is int and type(ref[1]) is int):
            problem = "a message reference must be [offset, length], two integers"
        elif ref[0] >= offset:
            problem = f"a message refers forward, to byte {ref[0]}: only earlier records can be referred to"
        elif ref[0] < self.events_start:
            problem = f"a message refers to byte {ref[0]}, which is not in the file's events"
        elif what:
            problem = f"a message refers to the {ref[1]} bytes at byte {ref[0]}: {what}"
        else:
            problem = f"a message refers to the {ref[1]} bytes at byte {ref[0]}, which are not a record before this one"
        return CorruptCassetteError(self.path, problem, offset=offset, event=index)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CassetteReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _TooManyObjects(Exception):
    """Raised inside msgpack's hooks: the record being read has more than MAX_RECORD_OBJECTS objects."""


class _Limits:
    """The caps of one reader, as msgpack options: lengths are checked before anything is allocated; arrays and
    maps are counted as msgpack finishes each (one call per array: a message record has one). Set `left[0]` to
    MAX_RECORD_OBJECTS before each record."""

    def __init__(self) -> None:
        left = self.left = [MAX_RECORD_OBJECTS]

        def count_list(items: list[Any], _len: Callable[[Any], int] = len) -> list[Any]:
            n = left[0] - _len(items) - 1
            if n < 0:
                raise _TooManyObjects
            left[0] = n
            return items

        def count_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
            n = left[0] - 2 * len(pairs) - 1
            if n < 0:
                raise _TooManyObjects
            left[0] = n
            return dict(pairs)

        self.options: dict[str, Any] = {
            "raw": False,
            "strict_map_key": True,
            "max_bin_len": MAX_RECORD_BYTES,
            "max_str_len": MAX_RECORD_BYTES,
            "max_array_len": MAX_RECORD_OBJECTS,
            "max_map_len": MAX_RECORD_OBJECTS // 2,
            "max_ext_len": 0,  # no extension types in the format
            "list_hook": count_list,
            "object_pairs_hook": count_map,
        }

    def unpacker(self, chunk_size: int = READ_CHUNK) -> msgpack.Unpacker:
        # A whole record, and the next chunk read behind it.
        return msgpack.Unpacker(max_buffer_size=MAX_RECORD_BYTES + chunk_size, **self.options)


def _record_too_large(path: Path, offset: int, event: int | None) -> CorruptCassetteError:
    return CorruptCassetteError(
        path, f"a record is larger than {MAX_RECORD_BYTES >> 20} MiB", offset=offset, event=event
    )


def _too_many_objects(path: Path, offset: int, event: int | None) -> CorruptCassetteError:
    return CorruptCassetteError(
        path,
        f"a record of more than {MAX_RECORD_OBJECTS} objects (arrays, elements, map entries)",
        offset=offset,
        event=event,
    )


def read_header(path: str | Path) -> Header:
    with CassetteReader(path) as reader:
        return reader.header


def read_events_at(path: str | Path, offsets: Iterable[int]) -> list[AnyEvent]:
    """The events whose records start at `offsets` (from `CassetteReader.iter_with_offsets`), in that order."""
    with CassetteReader(path) as reader:
        return [reader.event_at(offset) for offset in offsets]


def read_cassette(path: str | Path) -> Cassette:
    """Load a whole cassette into memory."""
    with CassetteReader(path) as reader:
        events = tuple(reader)
        return Cassette(header=reader.header, events=events, truncated_at=reader.truncated_at)


def write_cassette(path: str | Path, cassette: Cassette, *, redactor: Redactor | None, overwrite: bool = False) -> None:
    """Write a whole cassette (tests, migrations, re-redaction)."""
    with CassetteWriter(path, cassette.header, redactor=redactor, overwrite=overwrite) as writer:
        for event in cassette.events:
            writer.write(event)
