"""Replay against the live fake cluster, and the replay server's start-up on a big cassette (issue 4).

Part 1, replay vs live. Two cassettes are recorded from the real 0.9.0 client and exporter:

- `default`: `record_scenario` as the tests use it (64 KiB echoed in 4 KiB chunks, the scenario's own);
- `big`: the same scenario with `--big-payload-mib` (default 4) echoed in `--big-chunk-kib` (default 64) KiB
  chunks, so the router tunnel carries ~64 KiB frames (`run_client_scenario(payload=...)`, with
  `jsreplay.testing.peers.ECHO_CHUNK` set for the run, recording and timing alike).

Then, for `--rounds` rounds, the real client scenario (`run_client_scenario`) runs once against the live
`FakeCluster` (client and exporter connected directly, no proxy) and once against `jsreplay.replaying(cassette)`
(a fresh server per run, started outside the timed part), for each cassette. Reported: the scenario's own
per-step times (`ScenarioResult.steps`), median over rounds, and replay / live as the median of per-round
ratios with their range; echo throughput is payload bytes / echo step time (the client sends one chunk and
waits for its echo, so this is a ping-pong rate, both ways through the tunnel). Everything runs in this one
process (the client in a worker thread with its own event loop, as `run_client_scenario` does; cluster,
exporter and replay server on the main loop), so live and replay share the GIL alike.

Raw unary latency: `ClientService/GetLease` through a grpc.aio TLS channel with identity serializers, sending
the recorded request bytes and metadata, `--unary-calls` sequential calls per round, against the live cluster
(which holds a lease of the recorded name, created with a selector no exporter matches) and against the replay
server (default matching serves a used-up unary recording again).

Part 2, start-up. A cassette of `--sizes-mb` MB (default 64, 256 and 1024) is synthesized with
`CassetteWriter` by repeating a real recorded session (payload `--seed-payload-kib` KiB in 64 KiB chunks:
many calls, big router frames) with fresh call ids, sequence numbers and times, and a distinct router token
per copy so every tunnel counts. For each cassette, `--startup-runs` fresh interpreters (default 3) import
jsreplay, then build `ReplayServer(...)` (which loads the cassettes: `load_library`) and await `start()`
(matcher, causal index, bind). Each child reads its peak RSS (VmHWM; not `ru_maxrss`, which Linux carries over
exec from the forking parent) right after `start()` returns, before anything else runs, and reports it above
its RSS before loading. The goal: start in under 2 s, and a peak under 2x the memory of the cassette's index,
not of the file. Both sides of that are measured:

- the peak attributable to the cassette is the peak minus the same measurement for the seed session alone (the
  fixed part every cassette pays: the grpc server's start, the registry, the reader's buffers, one event in
  flight);
- the index is what the loaded library holds, counted by `Library.index_bytes()` (object by object, each once:
  scripts, requests, response rows, tunnels, offsets, containers); the first child of each cassette also loads
  it a second time under tracemalloc (minus the seed's) as a cross-check. A library without `index_bytes()` (an
  older commit) is measured against the traced figure.

After the peak is read, the child decodes every tunnel's inner calls (which replay only does for a tunnel a
client uses) and reports their bytes and the peak after that, separately.

    python bench/bench_replay.py                       # ~40 s, ~1.4 GB in a temp dir, deleted afterwards
    python bench/bench_replay.py --rounds 3 --sizes-mb 64,256 --dir /var/tmp

Prints figures; the only checks are that every scenario ran to the end with its echo intact, the unary calls
succeeded and the synthesized cassettes hold what was written.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

import jsreplay
from jsreplay.cassette.format import CassetteReader, CassetteWriter, read_cassette
from jsreplay.cassette.model import CallStart, ClientMessage, Metadata, ServerMessage, metadata_get
from jsreplay.protocol.registry import Registry

MB = 1_000_000
MiB = 1 << 20
KiB = 1 << 10
ROUTER = "/jumpstarter.v1.RouterService/Stream"
GET_LEASE = "/jumpstarter.client.v1.ClientService/GetLease"
CREATE_LEASE = "/jumpstarter.client.v1.ClientService/CreateLease"
STEPS = ("lease", "connect", "power on/off", "power read", "echo", "status", "release")
GOAL_START_S = 2.0
GOAL_INDEX_FACTOR = 2.0
# The index estimate of earlier runs of this script, printed for comparison (not the goal's measure).
INDEX_BYTES_PER_EVENT = 16
INDEX_BYTES_PER_CALL = 256
SCENARIO_TIMEOUT_S = 60.0
_OMIT_METADATA = {"user-agent", "authorization"}

# ------------------------------------------------------------------------------------------ helpers


def median_range(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


@contextmanager
def echo_chunk(size: int) -> Iterator[None]:
    """The scenario echoes its payload `ECHO_CHUNK` bytes at a time; set it for one recording or run."""
    from jsreplay.testing import peers

    saved = peers.ECHO_CHUNK
    peers.ECHO_CHUNK = size
    try:
        yield
    finally:
        peers.ECHO_CHUNK = saved


# ------------------------------------------------------------------------------------------ part 1: live vs replay


@dataclass(frozen=True)
class Workload:
    name: str
    cassette: Path
    payload: bytes
    chunk: int


async def record_with_payload(cassette: Path, payload: bytes, chunk: int) -> None:
    """`record_scenario`, with the echo payload and chunk size chosen (it takes neither)."""
    from jsreplay.testing import FakeCluster, run_client_scenario, run_exporter
    from jsreplay.testing.recording import LABELS, SELECTOR

    with echo_chunk(chunk):
        async with FakeCluster() as cluster:
            async with jsreplay.recording(
                upstream=cluster.controller_endpoint, upstream_ca=cluster.ca_pem, cassette=cassette
            ) as proxy:
                exporter = cluster.new_exporter("exporter-1", LABELS)
                client = cluster.new_client("alice")
                async with run_exporter(proxy.endpoint, exporter.token, proxy.ca_pem, exporter.name):
                    await cluster.wait_exporter_available(exporter.name)
                    result = await run_client_scenario(
                        proxy.endpoint, client.token, proxy.ca_pem, name=client.name, selector=SELECTOR, payload=payload
                    )
                    await cluster.wait_exporter_available(exporter.name)
    assert result.echoed == result.sent, "the echo came back changed while recording"


@asynccontextmanager
async def live_cluster() -> AsyncIterator[tuple[Any, Any]]:
    from jsreplay.testing import FakeCluster, run_exporter
    from jsreplay.testing.recording import LABELS

    async with FakeCluster() as cluster:
        exporter = cluster.new_exporter("exporter-1", LABELS)
        client = cluster.new_client("alice")
        async with run_exporter(exporter.endpoint, exporter.token, exporter.ca_pem, exporter.name):
            await cluster.wait_exporter_available(exporter.name)
            yield cluster, client


async def scenario_live(cluster: Any, client: Any, work: Workload) -> dict[str, float]:
    from jsreplay.testing import run_client_scenario
    from jsreplay.testing.recording import SELECTOR

    with echo_chunk(work.chunk):
        result = await run_client_scenario(
            client.endpoint,
            client.token,
            client.ca_pem,
            name=client.name,
            selector=SELECTOR,
            payload=work.payload,
            timeout=SCENARIO_TIMEOUT_S,
        )
    await cluster.wait_exporter_available("exporter-1")
    assert result.echoed == result.sent, "live: the echo came back changed"
    return dict(result.steps, total=result.elapsed)


async def scenario_replay(work: Workload) -> dict[str, float]:
    from jsreplay.testing import run_client_scenario
    from jsreplay.testing.recording import SELECTOR

    async with jsreplay.replaying(work.cassette) as server:
        with echo_chunk(work.chunk):
            result = await run_client_scenario(
                server.endpoint,
                "replay-ignores-credentials",
                server.ca_pem,
                name="alice",
                selector=SELECTOR,
                payload=work.payload,
                timeout=SCENARIO_TIMEOUT_S,
            )
        missed = server.report.missed
    assert result.echoed == result.sent, "replay: the echo came back changed"
    assert not missed, f"replay missed: {[m.reason for m in missed]}"
    return dict(result.steps, total=result.elapsed)


@dataclass(frozen=True)
class RecordedUnary:
    request: bytes
    metadata: Metadata
    lease_name: str  # "namespaces/<ns>/leases/<uuid>"


def recorded_get_lease(cassette: Path, registry: Registry) -> RecordedUnary:
    for call in read_cassette(cassette).calls():
        if call.method == GET_LEASE and call.requests:
            metadata = tuple((k, v) for k, v in call.start.metadata if k.lower() not in _OMIT_METADATA)
            name = str(registry.decode("jumpstarter.client.v1.GetLeaseRequest", call.requests[0])["name"])
            return RecordedUnary(request=call.requests[0], metadata=metadata, lease_name=name)
    raise SystemExit(f"{cassette} has no {GET_LEASE} call")


async def unary_latencies(
    endpoint: str, ca_pem: bytes, unary: RecordedUnary, token: str, calls: int, warmup: int = 30
) -> list[float]:
    """Sequential GetLease calls with the recorded request bytes; seconds per call."""
    metadata = (*unary.metadata, ("authorization", f"Bearer {token}"))
    async with grpc.aio.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates=ca_pem)) as channel:
        get_lease = channel.unary_unary(GET_LEASE)  # no (de)serializers: raw bytes both ways
        times: list[float] = []
        for i in range(warmup + calls):
            start = time.perf_counter()
            response = await get_lease(unary.request, metadata=metadata, timeout=10)
            elapsed = time.perf_counter() - start
            assert isinstance(response, bytes) and response, "GetLease answered nothing"
            if i >= warmup:
                times.append(elapsed)
    return times


async def create_live_lease(cluster: Any, client: Any, unary: RecordedUnary, registry: Registry) -> None:
    """A lease of the recorded name in the live cluster, pending forever (its selector matches no exporter)."""
    namespace, _, lease_id = unary.lease_name.removeprefix("namespaces/").partition("/leases/")
    request_type = registry.message_class("jumpstarter.client.v1.CreateLeaseRequest")
    request = request_type(parent=f"namespaces/{namespace}", lease_id=lease_id)
    request.lease.selector = "jsreplay.dev/bench=no-such-exporter"
    request.lease.duration.FromSeconds(600)
    metadata = (*unary.metadata, ("authorization", f"Bearer {client.token}"))
    async with grpc.aio.secure_channel(
        cluster.controller_endpoint, grpc.ssl_channel_credentials(root_certificates=cluster.ca_pem)
    ) as channel:
        await channel.unary_unary(CREATE_LEASE)(request.SerializeToString(), metadata=metadata, timeout=10)


async def part1(args: argparse.Namespace, workdir: Path) -> None:
    from jsreplay.testing import ECHO_PAYLOAD
    from jsreplay.testing.peers import ECHO_CHUNK
    from jsreplay.testing.recording import record_scenario

    registry = Registry.default()
    big_payload = os.urandom(args.big_payload_mib * MiB)
    works = [
        Workload("default", workdir / "default.msgpack", ECHO_PAYLOAD, ECHO_CHUNK),
        Workload("big", workdir / "big.msgpack", big_payload, args.big_chunk_kib * KiB),
    ]
    started = time.perf_counter()
    await record_scenario(works[0].cassette)
    await record_with_payload(works[1].cassette, works[1].payload, works[1].chunk)
    print(
        f"recorded: {', '.join(f'{w.name} {w.cassette.stat().st_size / MB:.1f} MB' for w in works)} "
        f"in {time.perf_counter() - started:.1f} s"
    )
    unary = recorded_get_lease(works[0].cassette, registry)

    live: dict[str, list[dict[str, float]]] = {w.name: [] for w in works}
    replayed: dict[str, list[dict[str, float]]] = {w.name: [] for w in works}
    unary_live: list[list[float]] = []
    unary_replay: list[list[float]] = []
    async with live_cluster() as (cluster, client):
        await create_live_lease(cluster, client, unary, registry)
        async with jsreplay.replaying(works[0].cassette) as unary_server:
            for round_ in range(args.rounds):
                for work in works:
                    live[work.name].append(await scenario_live(cluster, client, work))
                    replayed[work.name].append(await scenario_replay(work))
                unary_live.append(
                    await unary_latencies(
                        cluster.controller_endpoint, cluster.ca_pem, unary, client.token, args.unary_calls
                    )
                )
                assert unary_server.ca_pem is not None
                unary_replay.append(
                    await unary_latencies(unary_server.endpoint, unary_server.ca_pem, unary, "any", args.unary_calls)
                )
                print(
                    f"round {round_ + 1}/{args.rounds}: "
                    + ", ".join(
                        f"{w.name} live {live[w.name][-1]['total']:.2f} s, replay {replayed[w.name][-1]['total']:.2f} s"
                        for w in works
                    ),
                    flush=True,
                )
            unary_missed = unary_server.report.missed
    assert not unary_missed, f"GetLease replay missed: {unary_missed[0].reason}"

    for work in works:
        print(
            f"\n[{work.name}] real client scenario, {len(work.payload) // KiB} KiB echoed in "
            f"{work.chunk // KiB} KiB chunks; median of {args.rounds} rounds (ms); replay/live per round"
        )
        rows = []
        for step in (*STEPS, "total"):
            lv = [r[step] for r in live[work.name]]
            rp = [r[step] for r in replayed[work.name]]
            ratio, lo, hi = median_range([b / a for a, b in zip(lv, rp, strict=True)])
            rows.append(
                [
                    step,
                    f"{statistics.median(lv) * 1e3:.1f}",
                    f"{statistics.median(rp) * 1e3:.1f}",
                    f"{ratio:.2f}x",
                    f"{lo:.2f}-{hi:.2f}",
                ]
            )
        mb = len(work.payload) / MB
        lv_tp = [mb / r["echo"] for r in live[work.name]]
        rp_tp = [mb / r["echo"] for r in replayed[work.name]]
        ratio, lo, hi = median_range([b / a for a, b in zip(lv_tp, rp_tp, strict=True)])
        rows.append(
            [
                "echo MB/s (ping-pong)",
                f"{statistics.median(lv_tp):.2f}",
                f"{statistics.median(rp_tp):.2f}",
                f"{ratio:.2f}x",
                f"{lo:.2f}-{hi:.2f}",
            ]
        )
        print_table(["step", "live", "replay", "replay/live", "range"], rows)

    print(
        f"\n[unary] GetLease, recorded bytes, identity serializers, TLS, {args.unary_calls} sequential calls per round"
    )
    rows = []
    for label, pick in (("p50 (ms)", 0.5), ("p99 (ms)", 0.99)):
        lv = [percentile(r, pick) for r in unary_live]
        rp = [percentile(r, pick) for r in unary_replay]
        ratio, lo, hi = median_range([b / a for a, b in zip(lv, rp, strict=True)])
        rows.append(
            [
                label,
                f"{statistics.median(lv) * 1e3:.2f}",
                f"{statistics.median(rp) * 1e3:.2f}",
                f"{ratio:.2f}x",
                f"{lo:.2f}-{hi:.2f}",
            ]
        )
    print_table(["GetLease", "live", "replay", "replay/live", "range"], rows)


# ------------------------------------------------------------------------------------------ part 2: start-up


@dataclass
class Synthesized:
    path: Path
    copies: int
    events: int
    calls: int
    router_calls: int
    file_bytes: int
    message_bytes: int
    non_router_message_bytes: int

    @property
    def index_estimate(self) -> int:
        return self.events * INDEX_BYTES_PER_EVENT + self.calls * INDEX_BYTES_PER_CALL + self.non_router_message_bytes


def synthesize(seed: Path, path: Path, size_bytes: int) -> Synthesized:
    """Repeat `seed`'s events until the file reaches `size_bytes`; fresh ids, seqs, times and router tokens."""
    cassette = read_cassette(seed)
    events = list(cassette.events)
    seed_bytes = seed.stat().st_size
    copies = max(1, math.ceil(size_bytes / seed_bytes))
    id_stride = max(e.call_id for e in events) + 1
    seq_stride = max(e.seq for e in events) + 1
    t_stride = max(e.t_ns for e in events) + 1_000_000
    router_ids = {e.call_id for e in events if isinstance(e, CallStart) and e.method == ROUTER}
    out = Synthesized(path, copies, 0, 0, 0, 0, 0, 0)
    with CassetteWriter(path, cassette.header, redactor=None) as writer:
        for copy in range(copies):
            for event in events:
                changes: dict[str, Any] = {
                    "call_id": event.call_id + copy * id_stride,
                    "seq": event.seq + copy * seq_stride,
                    "t_ns": event.t_ns + copy * t_stride,
                }
                if isinstance(event, CallStart):
                    out.calls += 1
                    if event.method == ROUTER:
                        out.router_calls += 1
                        changes["metadata"] = _fresh_token(event.metadata, copy)
                elif isinstance(event, ClientMessage | ServerMessage):
                    size = len(event.data) + len(getattr(event, "forwarded", None) or b"")
                    out.message_bytes += size
                    if event.call_id not in router_ids:
                        out.non_router_message_bytes += size
                writer.write(dataclasses.replace(event, **changes))
                out.events += 1
    out.file_bytes = path.stat().st_size
    return out


def _fresh_token(metadata: Metadata, copy: int) -> Metadata:
    """Both ends of one recorded tunnel present the same token: map it to one per copy, keeping the pairs."""
    value = metadata_get(metadata, "authorization")
    if not isinstance(value, str):
        return metadata
    token = value.partition(" ")[2]
    fresh = "redacted:" + hashlib.sha256(f"{token}/{copy}".encode()).hexdigest()[:12]
    return tuple((k, f"Bearer {fresh}" if k.lower() == "authorization" else v) for k, v in metadata)


CHILD = r"""
import time
t_begin = time.perf_counter()
import asyncio, gc, importlib, json, os, sys, tracemalloc
from pathlib import Path

# `jsreplay.replay` is also the name of a function (jsreplay/__init__.py), so no `import jsreplay.replay.library`.
library = importlib.import_module("jsreplay.replay.library")
from jsreplay.replay.server import ReplayConfig, ReplayHandler, ReplayServer

def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0

def rss_kib():
    return status_kib("VmRSS")

timings = {"decode_router_call": 0.0, "causal_dependencies": 0.0}
def timed(name, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timings[name] += time.perf_counter() - start
    return wrapper
library.decode_router_call = timed("decode_router_call", library.decode_router_call)
server_module = importlib.import_module("jsreplay.replay.server")
if hasattr(server_module, "CausalIndex"):  # built by ReplayHandler from its module's globals
    server_module.CausalIndex = timed("causal_dependencies", server_module.CausalIndex)
else:  # before the causal index: a table of every response's causes
    ReplayHandler._causal_dependencies = staticmethod(
        timed("causal_dependencies", ReplayHandler._causal_dependencies)
    )

path = Path(sys.argv[1])
trace = sys.argv[2] == "trace"
import_s = time.perf_counter() - t_begin
before = rss_kib()
t0 = time.perf_counter()
server = ReplayServer(ReplayConfig(cassettes=(path,)))
t1 = time.perf_counter()
loaded_rss = rss_kib()

async def start_stop():
    await server.start()
    t2 = time.perf_counter()
    # The peak of start-up, read before anything else runs (serving a tunnel would load its frames).
    peak = status_kib("VmHWM"), rss_kib()
    await server.stop(0)
    return t2, peak

t2, (hwm_start, rss_start) = asyncio.run(start_stop())
lib = server._library
measure = getattr(lib, "index_bytes", None)  # the library's own count of what its index holds
index_bytes = measure() if measure is not None else None
traced = None
if trace:
    # What a loaded library holds, as the allocator saw it: a second load under tracemalloc (the registry is
    # cached by the first, so the fixed part stays out of it), counted after a collection.
    gc.collect()
    tracemalloc.start()
    again = library.load_library([path])
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    close = getattr(again, "close", None)
    if close is not None:
        close()
    del again
# Separately, after the peak was read: every tunnel's inner calls decoded (new bytes objects, copies of the
# tunnel payloads), which replay itself only builds for a tunnel a client uses.
inner_bytes = sum(
    sum(map(len, s.requests)) + sum(len(r.data) for r in s.responses) for t in lib.tunnels.values() for s in t.inner
)
print(json.dumps({
    "import_s": import_s, "construct_s": t1 - t0, "start_s": t2 - t1, "total_s": t2 - t0, **timings,
    "rss_before_kib": before, "rss_loaded_kib": loaded_rss, "rss_started_kib": rss_start,
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so it would include the parent's RSS at fork.
    "hwm_kib": hwm_start, "hwm_after_inner_kib": status_kib("VmHWM"),
    "index_bytes": index_bytes, "traced_bytes": traced,
    "scripts": len(lib.scripts), "tunnels": len(lib.tunnels),
    "inner_calls": sum(len(t.inner) for t in lib.tunnels.values()), "inner_bytes": inner_bytes,
}))
"""


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _execed(pid: int, path: Path) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.fsencode(path) in f.read().split(b"\0")
    except OSError:
        return False


def measure_startup(path: Path, timeout: float, trace: bool) -> dict[str, Any]:
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), "trace" if trace else "no-trace"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    hwm = 0
    while process.poll() is None:
        # Until it execs, the child is a fork of this process and its VmHWM is ours: poll only after.
        if _execed(process.pid, path):
            hwm = max(hwm, _vm_hwm_kib(process.pid))
        if time.monotonic() - started > timeout:
            if _execed(process.pid, path):
                hwm = max(hwm, _vm_hwm_kib(process.pid))
            process.kill()
            process.wait()
            return {"timed_out": True, "elapsed_s": time.monotonic() - started, "hwm_kib": hwm}
        time.sleep(0.2)
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"start-up child failed ({process.returncode}):\n{err[-3000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    result["timed_out"] = False
    # The child's own VmHWM, read right after start(), stands; the polls above only serve a killed child.
    return result


@dataclass
class StartupRuns:
    """One cassette's start-up children: peaks in MB above each child's RSS before loading."""

    runs: list[dict[str, Any]]

    def values(self, key: str) -> list[float]:
        return [r[key] for r in self.runs]

    def peaks_mb(self) -> list[float]:
        return [(r["hwm_kib"] - r["rss_before_kib"]) * KiB / MB for r in self.runs]

    def peak_mb(self) -> float:
        return statistics.median(self.peaks_mb())

    def traced(self) -> float | None:
        traced = [r["traced_bytes"] for r in self.runs if r.get("traced_bytes") is not None]
        return statistics.median(traced) if traced else None


def run_startup(path: Path, args: argparse.Namespace) -> StartupRuns | None:
    """`--startup-runs` children for one cassette (tracemalloc in the first only: it slows loading down ~5x)."""
    runs = []
    for i in range(args.startup_runs):
        result = measure_startup(path, args.startup_timeout, trace=i == 0 and not args.no_trace)
        if result["timed_out"]:
            print(f"  {path.name}: killed after {args.startup_timeout:.0f} s, VmHWM >= {result['hwm_kib'] // KiB} MiB")
            return None
        runs.append(result)
    return StartupRuns(runs)


def _span(values: list[float], fmt: str) -> str:
    median, low, high = median_range(values)
    return f"{median:{fmt}} ({low:{fmt}}-{high:{fmt}})" if len(values) > 1 else f"{median:{fmt}}"


async def part2(args: argparse.Namespace, workdir: Path) -> None:
    seed = workdir / "seed.msgpack"
    await record_with_payload(seed, os.urandom(args.seed_payload_kib * KiB), 64 * KiB)
    with CassetteReader(seed) as reader:
        seed_events = sum(1 for _ in reader)
    print(
        f"\nseed session: {seed.stat().st_size / MB:.2f} MB, {seed_events} events, "
        f"{len(read_cassette(seed).calls())} calls ({args.seed_payload_kib} KiB echoed in 64 KiB chunks)"
    )
    # The fixed part: the same start-up on the seed session alone (imports aside: grpc server, registry, reader
    # buffers, one event in flight), which a bigger cassette pays as well.
    fixed = run_startup(seed, args)
    if fixed is None:
        raise SystemExit("the seed session did not start in time")
    fixed_mb = fixed.peak_mb()
    fixed_traced = fixed.traced()
    print(f"fixed part (seed session): peak {_span(fixed.peaks_mb(), '.1f')} MB above the pre-load RSS")
    rows: list[list[str]] = []
    details: list[str] = []
    for size_mb in args.sizes_mb:
        path = workdir / f"synth-{size_mb}.msgpack"
        began = time.perf_counter()
        synth = synthesize(seed, path, size_mb * MB)
        written = time.perf_counter() - began
        with CassetteReader(path) as reader:
            assert sum(1 for _ in reader) == synth.events, "the synthesized cassette reads back short"
        print(
            f"synthesized {synth.file_bytes / MB:.0f} MB: {synth.copies} sessions, {synth.events:,} events, "
            f"{synth.calls:,} calls ({synth.router_calls:,} router streams) in {written:.1f} s; measuring start-up",
            flush=True,
        )
        measured = run_startup(path, args)
        path.unlink()
        if measured is None:
            rows.append([f"{synth.file_bytes / MB:.0f}", f"{synth.calls:,}", "killed", *[""] * 6, "missed"])
            continue
        attributable = [p - fixed_mb for p in measured.peaks_mb()]
        index_values = measured.values("index_bytes")
        index_mb = index_values[0] / MB if index_values[0] is not None else None
        traced = measured.traced()
        traced_mb = None if traced is None or fixed_traced is None else (traced - fixed_traced) / MB
        # The index the goal is measured against: the library's own count. An older library has none: its ratio
        # to the traced size of what it holds (Python objects per event) is shown, but no verdict.
        goal_index_mb = index_mb if index_mb is not None else traced_mb
        ratio = statistics.median(attributable) / goal_index_mb if goal_index_mb else math.inf
        start_s = measured.values("total_s")
        met = statistics.median(start_s) < GOAL_START_S and ratio < GOAL_INDEX_FACTOR
        verdict = ("met" if met else "missed") if index_mb is not None else "-"
        rows.append(
            [
                f"{synth.file_bytes / MB:.0f}",
                f"{synth.calls:,}",
                _span(start_s, ".2f"),
                _span(measured.peaks_mb(), ".1f"),
                f"{fixed_mb:.1f}",
                _span(attributable, ".1f"),
                "-" if index_mb is None else f"{index_mb:.2f}",
                "-" if traced_mb is None else f"{traced_mb:.2f}",
                f"{ratio:.2f}x" + ("" if index_mb is not None else " (traced)"),
                verdict,
            ]
        )
        first = measured.runs[0]
        details.append(
            f"{synth.file_bytes / MB:.0f} MB: imports {first['import_s']:.2f} s (not counted), "
            f"ReplayServer() {_span(measured.values('construct_s'), '.2f')} s + "
            f"start() {_span(measured.values('start_s'), '.2f')} s (causal index "
            f"{first['causal_dependencies']:.3f} s); RSS after loading "
            f"+{(first['rss_loaded_kib'] - first['rss_before_kib']) * KiB / MB:.1f} MB, after start() "
            f"+{(first['rss_started_kib'] - first['rss_before_kib']) * KiB / MB:.1f} MB; "
            f"{first['scripts']:,} scripts, {first['tunnels']:,} tunnels; index estimate (the old method: "
            f"16 B/event, 256 B/call, non-router messages) {synth.index_estimate / MB:.2f} MB; afterwards, every "
            f"tunnel decoded: {first['inner_calls']:,} inner calls, {first['inner_bytes'] / MB:.0f} MB of inner "
            f"messages, peak then +{(first['hwm_after_inner_kib'] - first['rss_before_kib']) * KiB / MB:.0f} MB"
        )
    print(
        f"\n[start-up] ReplayServer(cassette) + start() in a fresh interpreter, {args.startup_runs} runs (median "
        f"(range)); goal < {GOAL_START_S:g} s and peak attributable to the cassette < {GOAL_INDEX_FACTOR:g}x index"
    )
    print_table(
        [
            "file MB",
            "calls",
            "start s",
            "peak MB",
            "fixed MB",
            "attrib. MB",
            "index MB",
            "traced MB",
            "attrib./index",
            "goal",
        ],
        rows,
    )
    print(
        "  peak: VmHWM right after start() above the RSS before loading; fixed: the same for the seed session alone; "
        "attrib.: peak - fixed; index: the library's index_bytes(); traced: tracemalloc of a second load, minus "
        "the seed's"
    )
    for line in details:
        print("  " + line)


# ------------------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="live/replay rounds in part 1 (default 5)")
    parser.add_argument("--unary-calls", type=int, default=300, help="GetLease calls per round and side (default 300)")
    parser.add_argument("--big-payload-mib", type=int, default=4, help="echo payload of the big workload (default 4)")
    parser.add_argument("--big-chunk-kib", type=int, default=64, help="its echo chunk size (default 64)")
    parser.add_argument("--seed-payload-kib", type=int, default=1024, help="echo payload of part 2's session")
    parser.add_argument(
        "--sizes-mb",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[64, 256, 1024],
        help="synthesized cassette sizes for part 2 (default 64,256,1024)",
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=600.0, help="seconds before a start-up child is killed"
    )
    parser.add_argument("--startup-runs", type=int, default=3, help="start-up children per cassette (default 3)")
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc load in part 2 (slow at 1 GB)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write cassettes (default a new temp dir)")
    parser.add_argument("--skip-live", action="store_true", help="skip part 1")
    parser.add_argument("--skip-startup", action="store_true", help="skip part 2")
    args = parser.parse_args()
    if args.rounds < 1 or args.unary_calls < 1 or args.startup_runs < 1 or not args.sizes_mb or min(args.sizes_mb) < 1:
        parser.error("--rounds, --unary-calls, --startup-runs and --sizes-mb must be positive")
    return args


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-replay-", dir=args.dir))
    print(
        f"jsreplay {jsreplay.__version__}, Python {sys.version.split()[0]}, grpcio {grpc.__version__}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, work dir {workdir}"
    )
    try:
        if not args.skip_live:
            asyncio.run(part1(args, workdir))
        if not args.skip_startup:
            asyncio.run(part2(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\nload average at the end {os.getloadavg()[0]:.1f}; this process's peak RSS "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KiB / MB:.0f} MB"
    )


if __name__ == "__main__":
    main()
