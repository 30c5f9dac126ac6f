"""What forwarding and recording cost: unary latency and stream throughput direct vs through proxies (issue 3).

One upstream (a grpc.aio TLS server on 127.0.0.1 with identity serializers: a unary echo on
`/jumpstarter.v1.ControllerService/GetLease`, a schema-known unary method, and a bidi echo on
`/bench.v1.Echo/Stream`, a path the schema does not know, which the proxy forwards as a generic stream)
is measured three ways:

- direct: the client talks to the upstream;
- forward: through jsreplay's own `ForwardingHandler`, with a recorder that records nothing (the cost of
  forwarding alone);
- record: through `jsreplay.recording(...)`, the real recording proxy (TLS both hops, default redaction),
  writing a cassette to a temp dir (the cost of forwarding plus recording).

Opt-in with `--modes`: `minimal`, a bare grpc.aio forwarder written here (the floor for any Python grpc.aio
proxy: how much of the forwarding cost is grpc's own), and `record-noredact` (`record(..., redact=False)`).

The upstream and each proxy run in their own process (as in real use; in one process they would share one
GIL); the client runs in this one. The machine's cores are shared by all of them. Figures:

- unary p50/p99: latency of one GetLease call, sequential and with 32 concurrent callers on one channel;
- stream MB/s: one bidi stream, the client writes N frames while reading the echoes; bytes one way divided by
  the time from the first write to the last echo;
- 1 KiB ping-pong: round-trip time of one frame written and its echo read, one at a time;
- proxy CPU: CPU time the proxy process used per call or per MB streamed (from /proc; 10 ms ticks);
- upstream CPU per unary call: the same upstream work in every mode, so it shows how much CPU figures
  drift between modes (other load on the machine, steal time), not a cost of the proxy.

Each figure is measured once per round, with the modes interleaved in every round. The table shows the
median over rounds, and the ratio to direct as the median of the per-round ratios (each proxy figure over
the direct one of the same round) with their range: on a shared machine that range is the honest error bar.

    python bench/bench_record_proxy.py
    python bench/bench_record_proxy.py --rounds 1 --cprofile bench/out   # pstats of each proxy process
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import grpc

import jsreplay
from jsreplay.cassette.model import CancelSource, Metadata, Role
from jsreplay.grpc_options import CHANNEL_OPTIONS, SERVER_OPTIONS
from jsreplay.protocol.registry import Registry
from jsreplay.record.forward import ForwardingHandler
from jsreplay.record.recorder import Recorder, RecorderStats
from jsreplay.record.routing import RouterTable
from jsreplay.record.upstream import UpstreamChannels, UpstreamTrust
from jsreplay.serving import ListenTLS, bind
from jsreplay.tls import CertificateAuthority, server_credentials

UNARY = "/jumpstarter.v1.ControllerService/GetLease"
STREAM = "/bench.v1.Echo/Stream"
MODES = ("direct", "forward", "record")
PROXY_MODES = ("minimal", "forward", "record", "record-noredact")
CALL_TIMEOUT_S = 30.0
MEASURE_TIMEOUT_S = 120.0
MB = 1_000_000
KIB = 1024
GOAL_UNARY_P50_RATIO = 2.0
GOAL_STREAM_64K_RATIO = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------- upstream


async def _unary_echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _stream_echo(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
    while True:
        message = await context.read()
        if message is grpc.aio.EOF:
            return
        await context.write(message)


async def serve_upstream() -> None:
    """The upstream server; prints {"endpoint", "ca_pem"} and serves until stdin closes."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "jumpstarter.v1.ControllerService", {"GetLease": grpc.unary_unary_rpc_method_handler(_unary_echo)}
            ),
            grpc.method_handlers_generic_handler(
                "bench.v1.Echo", {"Stream": grpc.stream_stream_rpc_method_handler(_stream_echo)}
            ),
        )
    )
    certificate = CertificateAuthority.generate().issue(["127.0.0.1"])
    port = server.add_secure_port("127.0.0.1:0", server_credentials(certificate))
    await server.start()
    _announce({"endpoint": f"127.0.0.1:{port}", "ca_pem": certificate.ca_pem.decode()})
    await _stdin_closed()
    await server.stop(1.0)


# ---------------------------------------------------------------------------------------------------- proxies


class NullRecorder(Recorder):
    """A recorder that records nothing: the forwarding handler with recording taken out."""

    def __init__(self) -> None:  # no writer, deliberately no super().__init__()
        self._next_call_id = 1
        self.stats = RecorderStats()
        self.error = None

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
        return call_id

    def client_message(self, call_id: int, data: bytes) -> None:
        pass

    def client_half_close(self, call_id: int) -> None:
        pass

    def server_headers(self, call_id: int, metadata: Metadata) -> None:
        pass

    def server_message(self, call_id: int, data: bytes, forwarded: bytes | None = None) -> None:
        pass

    def status(self, call_id: int, code: int, details: str, trailing_metadata: Metadata) -> None:
        pass

    def cancel(self, call_id: int, by: CancelSource, reason: str) -> None:
        pass

    def close(self) -> None:
        pass


async def serve_forward(upstream: str, upstream_ca: bytes) -> None:
    """jsreplay's ForwardingHandler, served the way RecordingProxy serves it, with a NullRecorder."""
    registry = Registry.default()
    server = grpc.aio.server(options=SERVER_OPTIONS)
    bound = bind(server, "127.0.0.1:0", ListenTLS())
    channels = UpstreamChannels(UpstreamTrust(ca_pem=upstream_ca))
    handler = ForwardingHandler(
        recorder=NullRecorder(),
        registry=registry,
        channels=channels,
        upstream=upstream,
        routes=RouterTable(registry, bound.endpoint),
    )
    server.add_generic_rpc_handlers((handler,))
    await server.start()
    try:
        _announce({"endpoint": bound.endpoint, "ca_pem": (bound.ca_pem or b"").decode()})
        await _stdin_closed()
        await server.stop(1.0)
        await channels.close()
    finally:
        bound.cleanup()
    _announce({"events": 0, "bytes_written": 0, "error": None})


class MinimalHandler(grpc.GenericRpcHandler):
    """The least a grpc.aio forwarder can do: no metadata, deadlines, status mapping or recording.

    A yardstick for how much of the forwarding cost is grpc.aio's own (two extra TLS hops in Python) and
    how much is jsreplay's handler. Unary for the bench's unary method, a bidi pump for anything else.
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            handler = self._make(method)
            self._handlers[method] = handler
        return handler

    def _make(self, method: str) -> grpc.RpcMethodHandler:
        if method == UNARY:
            unary = self._channel.unary_unary(method)

            async def forward_unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
                response: bytes = await unary(request)
                return response

            return grpc.unary_unary_rpc_method_handler(forward_unary)
        stream = self._channel.stream_stream(method)

        async def forward_stream(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
            call = stream()

            async def pump() -> None:
                while (message := await context.read()) is not grpc.aio.EOF:
                    await call.write(message)
                await call.done_writing()

            task = asyncio.create_task(pump())
            try:
                while (message := await call.read()) is not grpc.aio.EOF:
                    await context.write(message)
            finally:
                task.cancel()

        return grpc.stream_stream_rpc_method_handler(forward_stream)


async def serve_minimal(upstream: str, upstream_ca: bytes) -> None:
    server = grpc.aio.server(options=SERVER_OPTIONS)
    bound = bind(server, "127.0.0.1:0", ListenTLS())
    credentials = grpc.ssl_channel_credentials(root_certificates=upstream_ca)
    async with grpc.aio.secure_channel(upstream, credentials, options=CHANNEL_OPTIONS) as channel:
        server.add_generic_rpc_handlers((MinimalHandler(channel),))
        await server.start()
        try:
            _announce({"endpoint": bound.endpoint, "ca_pem": (bound.ca_pem or b"").decode()})
            await _stdin_closed()
            await server.stop(1.0)
        finally:
            bound.cleanup()
    _announce({"events": 0, "bytes_written": 0, "error": None})


async def serve_record(upstream: str, upstream_ca: bytes, cassette: Path, redact: bool) -> None:
    async with jsreplay.recording(
        upstream=upstream, cassette=cassette, upstream_ca=upstream_ca, redact=redact
    ) as proxy:
        _announce({"endpoint": proxy.endpoint, "ca_pem": (proxy.ca_pem or b"").decode()})
        await _stdin_closed()
    _announce({"events": proxy.stats.events, "bytes_written": proxy.bytes_written, "error": proxy.error})


def _announce(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def _stdin_closed() -> None:
    """Serve until the parent closes our stdin (or dies)."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def child_main(args: argparse.Namespace) -> None:
    role: str = args.child
    main: Coroutine[Any, Any, None]
    if role == "upstream":
        main = serve_upstream()
    elif role == "minimal":
        main = serve_minimal(args.upstream, Path(args.upstream_ca).read_bytes())
    elif role == "forward":
        main = serve_forward(args.upstream, Path(args.upstream_ca).read_bytes())
    else:
        main = serve_record(
            args.upstream, Path(args.upstream_ca).read_bytes(), Path(args.cassette), redact=role == "record"
        )

    profiler = cProfile.Profile() if args.cprofile else None
    if profiler is not None:
        profiler.enable()
    try:
        asyncio.run(main)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(Path(args.cprofile) / f"{role}.pstats")


# ---------------------------------------------------------------------------------------------------- children


@dataclass
class Child:
    role: str
    process: subprocess.Popen[str]
    info: dict[str, Any]
    stdout: IO[str]

    @classmethod
    def start(cls, role: str, *args: str) -> Child:
        process = subprocess.Popen(
            [sys.executable, __file__, "--child", role, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            process.kill()
            raise SystemExit(f"{role} process failed to start (exit code {process.wait()})")
        return cls(role, process, json.loads(line), process.stdout)

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime

    def stop(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            out = self.stdout.read()
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return {}
        lines = out.strip().splitlines()
        return json.loads(lines[-1]) if lines else {}


# ---------------------------------------------------------------------------------------------------- client


# key, label, unit; each is measured once per round and mode
FIGURES: list[tuple[str, str, str]] = [
    ("seq_p50", "unary p50, sequential", "ms"),
    ("seq_p99", "unary p99, sequential", "ms"),
    ("conc_p50", "unary p50, {callers} callers", "ms"),
    ("conc_p99", "unary p99, {callers} callers", "ms"),
    ("conc_rate", "unary rate, {callers} callers", "calls/s"),
    ("stream_64k", "stream 64 KiB frames", "MB/s"),
    ("stream_1k", "stream 1 KiB frames", "MB/s"),
    ("pingpong_p50", "1 KiB ping-pong p50", "ms"),
    ("cpu_call", "proxy CPU per unary call", "us"),
    ("cpu_mb_64k", "proxy CPU per MB, 64 KiB", "ms"),
    ("cpu_mb_1k", "proxy CPU per MB, 1 KiB", "ms"),
    ("upstream_cpu_call", "upstream CPU per unary call", "us"),
]
Round = dict[str, float]


async def _bounded(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, MEASURE_TIMEOUT_S)


async def unary_latencies(channel: grpc.aio.Channel, calls: int, callers: int) -> tuple[list[float], float]:
    """Per-call latencies (s) of `calls` GetLease calls spread over `callers` concurrent callers; and calls/s."""
    stub = channel.unary_unary(UNARY)
    request = b"\x0a\x24" + b"0b5e2c1e-5a7a-4f44-9f1e-6b1d2f1a9c3e"  # GetLeaseRequest(name=<uuid>)
    latencies: list[float] = []

    async def caller(n: int) -> None:
        for _ in range(n):
            start = time.perf_counter()
            response = await stub(request, timeout=CALL_TIMEOUT_S)
            latencies.append(time.perf_counter() - start)
            if response != request:
                raise SystemExit("sanity check failed: the unary echo came back different")

    share = [calls // callers + (1 if i < calls % callers else 0) for i in range(callers)]
    start = time.perf_counter()
    await _bounded(asyncio.gather(*(caller(n) for n in share)))
    return latencies, calls / (time.perf_counter() - start)


async def stream_throughput(channel: grpc.aio.Channel, frame_size: int, total_bytes: int) -> float:
    """MB/s one way through one bidi echo stream, writing and reading concurrently."""
    frame = os.urandom(frame_size)
    frames = max(1, total_bytes // frame_size)
    call = channel.stream_stream(STREAM)(timeout=MEASURE_TIMEOUT_S)

    async def writer() -> None:
        for _ in range(frames):
            await call.write(frame)
        await call.done_writing()

    async def reader() -> int:
        received = 0
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                return received
            received += len(message)

    start = time.perf_counter()
    _, received = await _bounded(asyncio.gather(writer(), reader()))
    elapsed = time.perf_counter() - start
    if received != frames * frame_size or await call.code() != grpc.StatusCode.OK:
        raise SystemExit(f"sanity check failed: sent {frames * frame_size} bytes, got {received} back")
    return frames * frame_size / MB / elapsed


async def pingpong(channel: grpc.aio.Channel, frame_size: int, count: int) -> list[float]:
    """Round-trip times (s) of one frame and its echo, one at a time, on one stream."""
    frame = os.urandom(frame_size)
    call = channel.stream_stream(STREAM)(timeout=MEASURE_TIMEOUT_S)

    async def exchange() -> list[float]:
        rtts = []
        for _ in range(count):
            start = time.perf_counter()
            await call.write(frame)
            echo = await call.read()
            rtts.append(time.perf_counter() - start)
            if echo != frame:
                raise SystemExit("sanity check failed: the ping-pong echo came back different")
        await call.done_writing()
        await call.read()
        return rtts

    return await _bounded(exchange())


@dataclass
class Target:
    mode: str
    endpoint: str
    ca_pem: bytes
    proxy: Child | None  # None for direct
    upstream: Child


async def measure_round(target: Target, args: argparse.Namespace) -> Round:
    out: Round = {}
    credentials = grpc.ssl_channel_credentials(root_certificates=target.ca_pem)
    async with grpc.aio.secure_channel(target.endpoint, credentials, options=CHANNEL_OPTIONS) as channel:
        # Warm up: connect both hops, and let the proxy open its upstream channel.
        await unary_latencies(channel, 50, 4)
        await stream_throughput(channel, 64 * KIB, 4 * 64 * KIB)

        def cpu() -> float:
            return target.proxy.cpu_seconds() if target.proxy is not None else math.nan

        c0, u0 = cpu(), target.upstream.cpu_seconds()
        latencies, _ = await unary_latencies(channel, args.unary_calls, 1)
        out["cpu_call"] = (cpu() - c0) / args.unary_calls * 1e6
        out["upstream_cpu_call"] = (target.upstream.cpu_seconds() - u0) / args.unary_calls * 1e6
        out["seq_p50"] = percentile(latencies, 0.50) * 1e3
        out["seq_p99"] = percentile(latencies, 0.99) * 1e3

        latencies, out["conc_rate"] = await unary_latencies(channel, args.concurrent_calls, args.callers)
        out["conc_p50"] = percentile(latencies, 0.50) * 1e3
        out["conc_p99"] = percentile(latencies, 0.99) * 1e3

        for key, size, mib in (("64k", 64 * KIB, args.stream_64k_mib), ("1k", KIB, args.stream_1k_mib)):
            c0 = cpu()
            out[f"stream_{key}"] = await stream_throughput(channel, size, mib << 20)
            out[f"cpu_mb_{key}"] = (cpu() - c0) / ((mib << 20) / MB) * 1e3

        out["pingpong_p50"] = percentile(await pingpong(channel, KIB, args.pingpong), 0.50) * 1e3
    return out


# ---------------------------------------------------------------------------------------------------- report


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def _num(value: float) -> str:
    if math.isnan(value):
        return ""
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _ratio(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return ""
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def report(modes: list[str], rounds: dict[str, list[Round]], callers: int) -> dict[str, float]:
    """Print the table; return the record mode's median per-round ratio to direct for each figure."""
    width = len(_ratio([1.0, 1.0]))
    header = f"{'figure':<30} {'unit':<8}" + "".join(
        f" {m:>10}" + (f" {'x direct':>{width}}" if m != "direct" else "") for m in modes
    )
    print(header)
    print("-" * len(header))
    record_ratios: dict[str, float] = {}
    for key, label, unit in FIGURES:
        line = f"{label.format(callers=callers):<30} {unit:<8}"
        for mode in modes:
            line += f" {_num(median([r[key] for r in rounds[mode]])):>10}"
            if mode == "direct":
                continue
            ratios = [
                r[key] / d[key]
                for r, d in zip(rounds[mode], rounds.get("direct", []), strict=False)
                if d[key] > 0 and not math.isnan(r[key])
            ]
            line += f" {_ratio(ratios):>{width}}"
            if mode == "record" and ratios:
                record_ratios[key] = median(ratios)
        print(line)
    return record_ratios


# ---------------------------------------------------------------------------------------------------- main


async def run(args: argparse.Namespace, modes: list[str], proxies: dict[str, Child], upstream: Child) -> None:
    targets = {"direct": Target("direct", upstream.info["endpoint"], upstream.info["ca_pem"].encode(), None, upstream)}
    for mode, child in proxies.items():
        targets[mode] = Target(mode, child.info["endpoint"], child.info["ca_pem"].encode(), child, upstream)
    rounds: dict[str, list[Round]] = {mode: [] for mode in modes}
    for i in range(args.rounds):
        for mode in modes:
            t = time.perf_counter()
            rounds[mode].append(await measure_round(targets[mode], args))
            print(f"  round {i + 1}/{args.rounds} {mode:<16} {time.perf_counter() - t:5.1f} s", flush=True)
    print()
    ratios = report(modes, rounds, args.callers)
    if "forward" in rounds and "record" in rounds:
        print()
        print("recording's own cost: record / forward, median of per-round ratios (range)")
        for key, label, _ in FIGURES:
            if key in ("upstream_cpu_call", "seq_p99", "conc_p99"):
                continue
            pairs = [r[key] / f[key] for r, f in zip(rounds["record"], rounds["forward"], strict=True) if f[key] > 0]
            print(f"  {label.format(callers=args.callers):<30} {_ratio(pairs)}")
    if "seq_p50" in ratios and "stream_64k" in ratios:
        p50, s64 = ratios["seq_p50"], ratios["stream_64k"]
        print()
        print(
            f"goal: record unary p50 <= {GOAL_UNARY_P50_RATIO:.1f}x direct: {p50:.2f}x "
            f"({'met' if p50 <= GOAL_UNARY_P50_RATIO else 'MISSED'})"
        )
        print(
            f"goal: record 64 KiB stream >= {GOAL_STREAM_64K_RATIO:.0%} of direct: {s64:.0%} "
            f"({'met' if s64 >= GOAL_STREAM_64K_RATIO else 'MISSED'})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, from direct,{','.join(PROXY_MODES)} (default: %(default)s)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds, modes interleaved (default: %(default)s)")
    parser.add_argument("--unary-calls", type=int, default=1000, help="sequential unary calls per round")
    parser.add_argument("--concurrent-calls", type=int, default=1600, help="unary calls per round, concurrent")
    parser.add_argument("--callers", type=int, default=32, help="concurrent unary callers")
    parser.add_argument("--stream-64k-mib", type=int, default=64, help="MiB sent in 64 KiB frames per round")
    parser.add_argument("--stream-1k-mib", type=int, default=4, help="MiB sent in 1 KiB frames per round")
    parser.add_argument("--pingpong", type=int, default=500, help="1 KiB round trips per round")
    parser.add_argument("--cprofile", type=Path, default=None, help="write <mode>.pstats of each proxy here")
    parser.add_argument("--child", choices=["upstream", *PROXY_MODES], help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    parser.add_argument("--upstream-ca", help=argparse.SUPPRESS)
    parser.add_argument("--cassette", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in ("direct", *PROXY_MODES)]
    if unknown or not modes:
        parser.error(f"unknown mode(s): {', '.join(unknown) or '(none)'}")
    if args.cprofile:
        args.cprofile.mkdir(parents=True, exist_ok=True)
    print(
        f"jsreplay {jsreplay.__version__}, grpcio {grpc.__version__}, Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory(prefix="jsreplay-bench-") as tmp:
        upstream = Child.start("upstream")
        ca_file = Path(tmp) / "upstream-ca.pem"
        ca_file.write_text(upstream.info["ca_pem"])
        proxies: dict[str, Child] = {}
        failed = False
        try:
            for mode in modes:
                if mode == "direct":
                    continue
                extra = ["--upstream", upstream.info["endpoint"], "--upstream-ca", str(ca_file)]
                extra += ["--cassette", str(Path(tmp) / f"{mode}.cassette")]
                if args.cprofile:
                    extra += ["--cprofile", str(args.cprofile)]
                proxies[mode] = Child.start(mode, *extra)
            asyncio.run(run(args, modes, proxies, upstream))
        finally:
            for mode, child in proxies.items():
                stats = child.stop()
                if mode.startswith("record"):
                    cassette = Path(tmp) / f"{mode}.cassette"
                    size = cassette.stat().st_size if cassette.exists() else 0
                    print(
                        f"{mode}: {stats.get('events', 0):,} events, {size / MB:.1f} MB cassette"
                        f"{', error: ' + stats['error'] if stats.get('error') else ''}"
                    )
                    if not stats.get("events") or size < args.rounds * 2 * (args.stream_64k_mib << 20):
                        print(f"sanity check failed: the {mode} proxy recorded less than was sent", file=sys.stderr)
                        failed = True
            upstream.stop()
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
