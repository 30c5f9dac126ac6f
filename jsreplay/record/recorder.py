"""The recorder: turns what the proxy sees into numbered, timed cassette events.

It runs on the proxy's event loop and writes synchronously: one `os.write` per event is cheaper than handing
events to a thread, and it keeps the file in event order. A write failure (disk full) is reported once and
recording stops, but forwarding goes on: the user's session is never broken by the recorder.

It knows which calls are open: a call's end (status or cancel) is its last event, and `close()` is final. An
event for a call that has already ended, or one that comes after `close()`, is not written (the proxy's stop
ends every open call before it closes the recorder, so neither should happen; if one does, it is logged).

A tunnel recorded from both ends stores its bytes once: as each event is written, `TunnelDedupe` finds the
other end's copy of a router message, and the record refers to it (`dedupe=False` writes every copy).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from jsreplay.cassette.errors import CassetteError
from jsreplay.cassette.format import CassetteWriter
from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    Cancel,
    CancelSource,
    ClientHalfClose,
    ClientMessage,
    Metadata,
    Role,
    ServerHeaders,
    ServerMessage,
    Status,
)
from jsreplay.record.dedupe import TunnelDedupe
from jsreplay.record.elision import Elision

log = logging.getLogger("jsreplay.record")


@dataclass
class RecorderStats:
    calls: int = 0
    open_calls: int = 0
    open_streams: int = 0
    events: int = 0
    message_bytes: int = 0
    failed_calls: int = 0
    shared_messages: int = 0  # router messages written as a reference to their other end's copy
    shared_bytes: int = 0  # the data those references stand for


class Recorder:
    def __init__(self, writer: CassetteWriter, elision: Elision | None = None, *, dedupe: bool = True) -> None:
        self._writer = writer
        self._elision = elision  # holds events back and rewrites them (big uploads); written in order after
        self._hold_timer: asyncio.TimerHandle | None = None
        self._dedupe = TunnelDedupe() if dedupe else None
        # Numbering goes on from where the cassette stops (0 and 1 for a new one; more when appending).
        self._t0 = time.monotonic_ns() - writer.resume.last_t_ns
        self._seq = writer.resume.next_seq
        self._next_call_id = writer.resume.next_call_id
        self._open: set[int] = set()
        self._streaming: set[int] = set()
        self._closed = False
        self.stats = RecorderStats()
        self.error: str | None = None

    @property
    def path(self) -> str:
        return str(self._writer.path)

    @property
    def bytes_written(self) -> int:
        return self._writer.bytes_written

    @property
    def elision(self) -> Elision | None:
        return self._elision

    @property
    def closed(self) -> bool:
        return self._closed

    def is_open(self, call_id: int) -> bool:
        """The call has started and not ended (no status or cancel recorded yet)."""
        return call_id in self._open

    def open_calls(self) -> list[int]:
        return sorted(self._open)

    def _accepts(self, call_id: int, what: str) -> bool:
        if call_id in self._open and not self._closed:
            return True
        state = "after the recording was closed" if self._closed else "after the call ended"
        log.warning("%s of call %d %s: not recorded", what, call_id, state)
        return False

    def _emit(self, event: AnyEvent) -> None:
        elision = self._elision
        if elision is None:
            self._write(event)
            return
        for ready in elision.submit(event):
            self._write(ready)
        if elision.holding and self._hold_timer is None:
            self._arm_hold_timer()

    def _arm_hold_timer(self) -> None:
        """Held events are written within the hold's time limit even if nothing else happens meanwhile."""
        assert self._elision is not None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop (a test driving the recorder directly): the next event releases them
            return
        self._hold_timer = loop.call_later(self._elision.config.hold_seconds + 0.05, self._hold_expired)

    def _hold_expired(self) -> None:
        self._hold_timer = None
        if self._elision is None or self._closed:
            return
        for ready in self._elision.expire():
            self._write(ready)
        if self._elision.holding:
            self._arm_hold_timer()

    def _write(self, event: AnyEvent) -> None:
        if self.error is not None:
            return
        dedupe = self._dedupe
        try:
            if dedupe is None:
                self._writer.write(event)
            else:  # paired at write time, on the event written: events held back before this pair as they land
                same_as = dedupe.before_write(event)
                stored = self._writer.write(event, same_as=same_as)
                record = self._writer.last_record
                dedupe.after_write(stored, record)
                if record.reference and same_as is not None:
                    self.stats.shared_messages += 1
                    self.stats.shared_bytes += len(same_as.data)
        except (OSError, CassetteError) as err:
            self.error = f"writing {self._writer.path} failed at event {self._seq}: {err}"
            log.error("%s; forwarding continues but nothing more is recorded", self.error)
            return
        self.stats.events += 1

    def _head(self, call_id: int) -> dict[str, int]:
        seq = self._seq
        self._seq += 1
        return {"call_id": call_id, "seq": seq, "t_ns": time.monotonic_ns() - self._t0}

    def start_call(
        self,
        *,
        method: str,
        role: Role,
        metadata: Metadata,
        peer: str,
        target: str,
        timeout_ns: int | None,
        streaming: bool,
    ) -> int:
        call_id = self._next_call_id
        self._next_call_id += 1
        if self._closed:
            log.warning("call %d (%s) started after the recording was closed: not recorded", call_id, method)
            return call_id
        self._open.add(call_id)
        self.stats.calls += 1
        self.stats.open_calls += 1
        if streaming:
            self._streaming.add(call_id)
            self.stats.open_streams += 1
        self._emit(
            CallStart(
                **self._head(call_id),
                method=method,
                role=role,
                metadata=metadata,
                peer=peer,
                target=target,
                timeout_ns=timeout_ns,
            )
        )
        return call_id

    def client_message(self, call_id: int, data: bytes) -> None:
        if not self._accepts(call_id, "a client message"):
            return
        self.stats.message_bytes += len(data)
        self._emit(ClientMessage(**self._head(call_id), data=data))

    def client_half_close(self, call_id: int) -> None:
        if not self._accepts(call_id, "a half-close"):
            return
        self._emit(ClientHalfClose(**self._head(call_id)))

    def server_headers(self, call_id: int, metadata: Metadata) -> None:
        if not self._accepts(call_id, "server headers"):
            return
        self._emit(ServerHeaders(**self._head(call_id), metadata=metadata))

    def server_message(self, call_id: int, data: bytes, forwarded: bytes | None = None) -> None:
        if not self._accepts(call_id, "a server message"):
            return
        self.stats.message_bytes += len(data)
        self._emit(ServerMessage(**self._head(call_id), data=data, forwarded=forwarded))

    def _end(self, call_id: int) -> None:
        self._open.discard(call_id)
        self.stats.open_calls -= 1
        if call_id in self._streaming:
            self._streaming.discard(call_id)
            self.stats.open_streams -= 1

    def status(self, call_id: int, code: int, details: str, trailing_metadata: Metadata) -> None:
        if not self._accepts(call_id, "a status"):
            return
        if code != 0:
            self.stats.failed_calls += 1
        self._end(call_id)
        self._emit(Status(**self._head(call_id), code=code, details=details, trailing_metadata=trailing_metadata))

    def cancel(self, call_id: int, by: CancelSource, reason: str) -> None:
        if not self._accepts(call_id, "a cancel"):
            return
        self._end(call_id)
        self._emit(Cancel(**self._head(call_id), by=by, reason=reason))

    def close(self) -> None:
        """Close the cassette. Calls still open stay without an end: end them first (the proxy's stop does)."""
        if self._closed:
            return
        if self._elision is not None:
            for ready in self._elision.flush():
                self._write(ready)
        if self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None
        self._closed = True
        if self._open:
            log.warning("closing the recording with %d calls still open: %s", len(self._open), self.open_calls())
        try:
            self._writer.close()
        except OSError as err:
            self.error = self.error or f"closing {self._writer.path} failed: {err}"
