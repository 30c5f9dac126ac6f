"""Cassette write/read throughput and the streaming reader's peak memory (issue 2).

Writes a cassette of `--size-mb` MB (default 1024) whose events resemble a real recording: per "session" a
Dial and two GetLease unary calls (CallStart with an authorization header, request, half-close, headers,
response, status) and one RouterService.Stream with 64 KiB frames and many ~1 KiB frames both ways. Writes
it with `CassetteWriter(redactor=None)`, then reads it back with `CassetteReader` in a fresh interpreter and
reports that interpreter's peak RSS above the baseline of an interpreter that imported the same modules (and,
in another fresh interpreter, the tracemalloc peak). A smaller run (`--redact-size-mb`) is written twice,
without and with a real `Redactor`, to show what redaction costs; a per-event micro-benchmark shows where.

    python bench/bench_cassette_io.py                 # 1 GB in a temp dir, deleted afterwards
    python bench/bench_cassette_io.py --size-mb 256 --dir /var/tmp

Prints figures only; the only checks are that everything written was read back.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsreplay import __version__
from jsreplay.cassette.format import CassetteReader, CassetteWriter
from jsreplay.cassette.migrations import FORMAT_VERSION
from jsreplay.cassette.model import (
    AnyEvent,
    CallStart,
    ClientHalfClose,
    ClientMessage,
    Header,
    Redaction,
    Role,
    ServerHeaders,
    ServerMessage,
    Status,
)
from jsreplay.cassette.redaction import Redactor
from jsreplay.protocol.registry import Registry

MB = 1_000_000
DIAL = "/jumpstarter.v1.ControllerService/Dial"
GET_LEASE = "/jumpstarter.v1.ControllerService/GetLease"
ROUTER = "/jumpstarter.v1.RouterService/Stream"
FRAMES_64K_PER_DIRECTION = 16  # per router stream
FRAMES_1K = 400  # per router stream, both directions together
GOAL_READER_PEAK_MB = 100.0
REPEATS = 3

# ------------------------------------------------------------------------------------------ synthetic session

Factory = Callable[..., AnyEvent]
# (event class, which call of the session it belongs to (0..3), the event's own fields)
Step = tuple[Factory, int, dict[str, Any]]


def _jwt_like(rng: random.Random) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return ".".join("".join(rng.choice(alphabet) for _ in range(n)) for n in (36, 120, 43))


def session_plan(registry: Registry, *, with_router: bool = True, seed: int = 1) -> list[Step]:
    """The events of one session, with real Jumpstarter message encodings; call ids are session-local.

    Without the router stream, a session is only its three controller calls (the redaction worst case:
    every event has metadata or a message the redactor looks at).
    """
    rng = random.Random(seed)
    token = _jwt_like(rng)
    auth = (("authorization", f"Bearer {_jwt_like(rng)}"), ("x-jumpstarter-client", "bench"))
    router_auth = (("authorization", f"Bearer {token}"),)
    headers = (("x-envoy-upstream-service-time", "3"),)

    def message(type_name: str, **fields: Any) -> bytes:
        return bytes(registry.message_class(type_name)(**fields).SerializeToString())

    lease = "0b5e2c1e-5a7a-4f44-9f1e-6b1d2f1a9c3e"
    dial_request = message("jumpstarter.v1.DialRequest", lease_name=lease)
    dial_response = message("jumpstarter.v1.DialResponse", router_endpoint="router.example:443", router_token=token)
    dial_forwarded = message("jumpstarter.v1.DialResponse", router_endpoint="127.0.0.1:40111", router_token=token)
    lease_request = message("jumpstarter.v1.GetLeaseRequest", name=lease)
    lease_response = message("jumpstarter.v1.GetLeaseResponse", exporter_uuid="9d8f6a2e-0000-4000-8000-000000000001")
    big = [message("jumpstarter.v1.StreamRequest", payload=rng.randbytes(64 * 1024), frame_type=0) for _ in range(4)]
    small = [
        message("jumpstarter.v1.StreamRequest", payload=rng.randbytes(rng.randint(512, 1536)), frame_type=0)
        for _ in range(32)
    ]

    def unary(call: int, method: str, request: bytes, response: bytes, forwarded: bytes | None) -> list[Step]:
        return [
            (
                CallStart,
                call,
                dict(
                    method=method,
                    role=Role.CONTROLLER,
                    metadata=auth,
                    peer="ipv4:127.0.0.1:51234",
                    target="controller.example:443",
                    timeout_ns=None,
                ),
            ),
            (ClientMessage, call, dict(data=request)),
            (ClientHalfClose, call, {}),
            (ServerHeaders, call, dict(metadata=headers)),
            (ServerMessage, call, dict(data=response, forwarded=forwarded)),
            (Status, call, dict(code=0, details="", trailing_metadata=())),
        ]

    frames: list[Step] = []
    for i in range(FRAMES_64K_PER_DIRECTION):
        frames.append((ClientMessage, 3, dict(data=big[i % len(big)])))
        frames.append((ServerMessage, 3, dict(data=big[(i + 1) % len(big)], forwarded=None)))
    for i in range(FRAMES_1K):
        cls: Factory = ClientMessage if i % 2 else ServerMessage
        fields: dict[str, Any] = dict(data=small[i % len(small)])
        if cls is ServerMessage:
            fields["forwarded"] = None
        frames.append((cls, 3, fields))
    rng.shuffle(frames)
    stream_start: Step = (
        CallStart,
        3,
        dict(
            method=ROUTER,
            role=Role.ROUTER,
            metadata=router_auth,
            peer="ipv4:127.0.0.1:51240",
            target="router.example:443",
            timeout_ns=None,
        ),
    )
    controller = [
        *unary(0, GET_LEASE, lease_request, lease_response, None),
        *unary(1, GET_LEASE, lease_request, lease_response, None),
        *unary(2, DIAL, dial_request, dial_response, dial_forwarded),
    ]
    if not with_router:
        return controller
    return [
        *controller,
        stream_start,
        (ServerHeaders, 3, dict(metadata=())),
        *frames,
        (ClientHalfClose, 3, {}),
        (Status, 3, dict(code=0, details="", trailing_metadata=())),
    ]


def plan_bytes(plan: list[Step]) -> int:
    return sum(len(f.get("data", b"")) for _, _, f in plan)


def events(plan: list[Step], sessions: int) -> Iterator[AnyEvent]:
    seq = 0
    for s in range(sessions):
        base = 4 * s + 1
        for cls, call, fields in plan:
            yield cls(call_id=base + call, seq=seq, t_ns=seq * 1000, **fields)
            seq += 1


def header(redactor: Redactor | None, registry: Registry) -> Header:
    return Header(
        format_version=FORMAT_VERSION,
        jsreplay_version=__version__,
        created_unix_ns=time.time_ns(),
        upstreams=("controller.example:443",),
        descriptor_set=registry.descriptor_set,
        redaction=redactor.description if redactor else Redaction(enabled=False),
    )


# ------------------------------------------------------------------------------------------ write


@dataclass
class WriteResult:
    events: int
    file_bytes: int
    seconds: float  # the write loop, without the final fsync
    fsync_seconds: float

    def line(self, label: str) -> str:
        return (
            f"{label:<28} {self.events:>9,} ev {self.file_bytes / MB:>8.1f} MB  {self.seconds:>6.2f} s  "
            f"{self.events / self.seconds:>9,.0f} ev/s  {self.file_bytes / MB / self.seconds:>7.1f} MB/s"
            f"  (+ fsync {self.fsync_seconds:.2f} s)"
        )


def write(path: Path, plan: list[Step], sessions: int, redactor: Redactor | None, registry: Registry) -> WriteResult:
    writer = CassetteWriter(path, header(redactor, registry), redactor=redactor)
    start = time.perf_counter()
    for event in events(plan, sessions):
        writer.write(event)
    elapsed = time.perf_counter() - start
    t = time.perf_counter()
    writer.close(sync=True)
    fsync = time.perf_counter() - t
    return WriteResult(writer.events_written, writer.bytes_written, elapsed, fsync)


# ------------------------------------------------------------------------------------------ read (child process)


def _peak_rss_kib() -> int:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child would report at least its parent's
    # RSS at fork (the parent holds the write plan).
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (this benchmark needs Linux)")


def child_baseline() -> dict[str, Any]:
    """What an interpreter that imported the same modules (and nothing else) peaks at."""
    return {"peak_rss_kib": _peak_rss_kib()}


def child_read(path: Path, use_tracemalloc: bool) -> dict[str, Any]:
    """Stream the cassette, dropping each event, like `jsreplay show` or a replay index pass would."""
    import tracemalloc

    before = _peak_rss_kib()
    if use_tracemalloc:
        tracemalloc.start()
    n = 0
    data_bytes = 0
    start = time.perf_counter()
    with CassetteReader(path) as reader:
        for event in reader:
            n += 1
            if isinstance(event, ClientMessage | ServerMessage):
                data_bytes += len(event.data)
        truncated = reader.truncated_at
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if use_tracemalloc else None
    return {
        "events": n,
        "data_bytes": data_bytes,
        "seconds": elapsed,
        "truncated_at": truncated,
        "peak_rss_before_read_kib": before,
        "peak_rss_kib": _peak_rss_kib(),
        "tracemalloc_peak": peak,
    }


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True, timeout=600
    ).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# ------------------------------------------------------------------------------------------ redaction per event


def redaction_micro(plan: list[Step], redactor: Redactor, repeat: int = 2000) -> list[tuple[str, float]]:
    """Microseconds per `Redactor.redact` call for representative events."""
    methods = {0: GET_LEASE, 1: GET_LEASE, 2: DIAL, 3: ROUTER}
    picks: dict[str, tuple[AnyEvent, str]] = {}
    for cls, call, fields in plan:
        event = cls(call_id=call + 1, seq=0, t_ns=0, **fields)
        data = fields.get("data", b"")
        if isinstance(event, CallStart):
            name = f"CallStart ({'router' if call == 3 else 'controller'}, with authorization)"
        elif call == 2 and isinstance(event, ServerMessage):
            name = "Dial response (token: decode + re-encode)"
        elif call == 0 and isinstance(event, ServerMessage):
            name = "GetLease response (no secret field)"
        elif call == 3 and len(data) > 60_000:
            name = "router frame 64 KiB"
        elif call == 3 and data:
            name = "router frame ~1 KiB"
        elif isinstance(event, Status):
            name = "Status (no trailers)"
        else:
            continue
        picks.setdefault(name, (event, methods[call]))
    out = []
    for name, (event, method) in picks.items():
        start = time.perf_counter()
        for _ in range(repeat):
            redactor.redact(event, method)
        out.append((name, (time.perf_counter() - start) / repeat * 1e6))
    return out


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024, help="cassette size for the write/read run (MB)")
    parser.add_argument(
        "--redact-size-mb", type=int, default=128, help="cassette size for the with/without redaction run (MB)"
    )
    parser.add_argument(
        "--redact-events", type=int, default=100_000, help="events for the controller-calls-only redaction run"
    )
    parser.add_argument("--dir", type=Path, default=None, help="where the cassettes go (default: a temp dir)")
    parser.add_argument("--no-tracemalloc", action="store_true", help="skip the (slower) tracemalloc read pass")
    parser.add_argument("--child", choices=["baseline", "read", "read-tracemalloc"], help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "baseline":
        print(json.dumps(child_baseline()))
        return
    if args.child is not None:
        print(json.dumps(child_read(args.path, args.child == "read-tracemalloc")))
        return

    registry = Registry.default()
    plan = session_plan(registry)
    per_session = plan_bytes(plan)
    sessions = max(1, args.size_mb * MB // per_session)
    redact_sessions = max(1, args.redact_size_mb * MB // per_session)
    print(
        f"jsreplay {__version__}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; "
        f"session = {len(plan)} events, {per_session / MB:.2f} MB of messages "
        f"({2 * FRAMES_64K_PER_DIRECTION} x 64 KiB frames, {FRAMES_1K} x ~1 KiB frames, 3 unary calls)"
    )

    made_dir = args.dir is None
    directory = Path(tempfile.mkdtemp(prefix="jsreplay-bench-")) if made_dir else args.dir
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench-{os.getpid()}.cassette"
    try:
        print(f"\n== write ({sessions} sessions, {directory})")
        w = write(path, plan, sessions, None, registry)
        print(w.line("write, redactor=None"))

        print("\n== read (CassetteReader, fresh interpreter; the file is in the page cache, so this is CPU-bound)")
        base = run_child("--child", "baseline")
        r = run_child("--child", "read", "--path", str(path))
        expected_events = sessions * len(plan)
        if r["events"] != expected_events or r["data_bytes"] != sessions * per_session or r["truncated_at"]:
            raise SystemExit(f"sanity check failed: wrote {expected_events} events, read back {r}")
        print(
            f"{'read':<28} {r['events']:>9,} ev {w.file_bytes / MB:>8.1f} MB  {r['seconds']:>6.2f} s  "
            f"{r['events'] / r['seconds']:>9,.0f} ev/s  {w.file_bytes / MB / r['seconds']:>7.1f} MB/s"
        )
        base_mb = base["peak_rss_kib"] * 1024 / MB
        peak_mb = r["peak_rss_kib"] * 1024 / MB
        before_mb = r["peak_rss_before_read_kib"] * 1024 / MB
        delta = peak_mb - base_mb
        print(
            f"reader peak RSS {peak_mb:.1f} MB; import-only interpreter {base_mb:.1f} MB; "
            f"same interpreter before reading {before_mb:.1f} MB"
        )
        print(
            f"reader peak memory above baseline: {delta:.1f} MB (goal < {GOAL_READER_PEAK_MB:.0f} MB: "
            f"{'met' if delta < GOAL_READER_PEAK_MB else 'MISSED'})"
        )
        if not args.no_tracemalloc:
            t = run_child("--child", "read-tracemalloc", "--path", str(path))
            print(
                f"tracemalloc peak while reading: {t['tracemalloc_peak'] / MB:.1f} MB "
                f"(Python allocations only; that pass took {t['seconds']:.1f} s)"
            )
        path.unlink()

        redactor = Redactor(registry=registry)
        controller_plan = session_plan(registry, with_router=False)
        mixes = [
            (f"session mix, about {args.redact_size_mb} MB", plan, redact_sessions),
            (
                f"controller calls only, {args.redact_events:,} events",
                controller_plan,
                max(1, args.redact_events // len(controller_plan)),
            ),
        ]
        for title, mix, n in mixes:
            print(f"\n== redaction cost: {title} (median of {REPEATS} alternating runs each)")
            runs: dict[str, list[WriteResult]] = {"write, redactor=None": [], "write, Redactor(default)": []}
            for _ in range(REPEATS):
                for label, r_ in (("write, redactor=None", None), ("write, Redactor(default)", redactor)):
                    runs[label].append(write(path, mix, n, r_, registry))
                    path.unlink()
            medians = {label: sorted(rs, key=lambda x: x.seconds)[REPEATS // 2] for label, rs in runs.items()}
            for label, m in medians.items():
                print(m.line(label))
            plain, redacted = medians.values()
            print(f"writing with the redactor takes {redacted.seconds / plain.seconds:.2f}x the time")
        print("\nper event, Redactor.redact alone:")
        for name, us in redaction_micro(plan, redactor):
            print(f"  {name:<52} {us:>8.2f} us")
    finally:
        path.unlink(missing_ok=True)
        if made_dir:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
