"""Hostile cassettes (issue 10 points 4 and 5): the schema loader's time per file, and the reader's memory.

1. Loading an embedded schema that is an import chain of 1,000 / 4,000 / 12,000 files (listed last first, each
   using the previous file's message): linear loading keeps the time per file about constant.
2. Peak RSS of a fresh interpreter reading hostile records, next to the file's size (the goal: under 10x):
   one record of millions of empty arrays, one record of three binaries that each fit the buffer but together
   pass the record cap, and a record whose array header claims 80 M elements (msgpack allocates the list first).
3. Reader throughput on many small records (the hot path of show and diff), to compare before and after.

    python bench/bench_hostile.py
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import msgpack
from google.protobuf import descriptor_pb2 as dpb

from jsreplay.cassette import format as fmt
from jsreplay.cassette.errors import CassetteError
from jsreplay.cassette.format import MAGIC, CassetteReader
from jsreplay.cassette.migrations import FORMAT_VERSION
from jsreplay.cassette.model import Header, Redaction
from jsreplay.protocol import registry as reg
from jsreplay.protocol.registry import MAX_DESCRIPTOR_FILES, MAX_SCHEMA_TYPES, Registry

MIB = 1 << 20


def import_chain(n: int) -> bytes:
    files = []
    for i in range(n):
        f = dpb.FileDescriptorProto(name=f"f{i}.proto", package="p")
        m = f.message_type.add(name=f"M{i}")
        if i:
            f.dependency.append(f"f{i - 1}.proto")
            m.field.add(name="prev", number=1, type=dpb.FieldDescriptorProto.TYPE_MESSAGE, label=1,
                        type_name=f".p.M{i - 1}")  # fmt: skip
        files.append(f)
    return dpb.FileDescriptorSet(file=list(reversed(files))).SerializeToString()


def header_bytes(descriptor_set: bytes = b"") -> bytes:
    header = Header(
        format_version=FORMAT_VERSION,
        jsreplay_version="bench",
        created_unix_ns=0,
        upstreams=("127.0.0.1:1",),
        descriptor_set=descriptor_set,
        redaction=Redaction(enabled=False),
    )
    return MAGIC + msgpack.packb(fmt.header_to_record(header), use_bin_type=True)


def hostile_files(directory: Path) -> dict[str, Path]:
    out = {}
    inner = b"\xdc" + (8_000).to_bytes(2, "big") + b"\x90" * 8_000
    out["one record of 8 MB of empty arrays"] = directory / "arrays.msgpack"
    out["one record of 8 MB of empty arrays"].write_bytes(
        header_bytes() + b"\xdc" + (1000).to_bytes(2, "big") + inner * 1000
    )
    out["three 40 MiB binaries in one record"] = directory / "bins.msgpack"
    bins = msgpack.packb([2, 1, 0, 0, *([b"x" * (40 * MIB)] * 3)], use_bin_type=True)
    out["three 40 MiB binaries in one record"].write_bytes(header_bytes() + bins)
    out["an array header claiming 80 M elements"] = directory / "claim.msgpack"
    out["an array header claiming 80 M elements"].write_bytes(header_bytes() + b"\xdd" + (80 * MIB).to_bytes(4, "big"))
    # Hostile headers: a schema past the limits is refused before it is loaded; one at them costs what it costs.
    out["a schema of 12,000 chained files"] = directory / "chain.msgpack"
    out["a schema of 12,000 chained files"].write_bytes(header_bytes(import_chain(12_000)))
    at_limit = min(MAX_DESCRIPTOR_FILES, MAX_SCHEMA_TYPES)
    out[f"a schema of {at_limit:,} chained files (at the limit)"] = directory / "limit.msgpack"
    out[f"a schema of {at_limit:,} chained files (at the limit)"].write_bytes(header_bytes(import_chain(at_limit)))
    return out


def peak_rss_kb() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss it does not carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_read(path: Path) -> dict[str, object]:
    before = peak_rss_kb()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with CassetteReader(path) as reader:
                for _ in reader:
                    pass
        outcome = "read"
    except CassetteError as err:
        outcome = str(err).split(": ", 1)[1]
    peak = peak_rss_kb()
    return {"peak_kb": peak, "before_kb": before, "outcome": outcome}


def small_records(path: Path, n: int) -> None:
    packer = msgpack.Packer(use_bin_type=True)
    with path.open("wb") as out:
        out.write(header_bytes())
        for i in range(n):
            if i % 10 == 0:
                meta = [["authorization", "x" * 20], ["a", "b"]]
                out.write(packer.pack([1, i, i, i, "/a.B/C", "controller", meta, "peer", "tgt", None]))
            else:
                out.write(packer.pack([2, i, i, i, b"x" * 40] if i % 2 else [4, i, i, i, b"y" * 40, None]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--records", type=int, default=500_000, help="small records for the throughput run")
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child_read(args.child)))
        return

    print("== schema loading: an import chain, listed last first (time per file about constant = linear;")
    print("   the limits raised for this, as the loader must stay linear whatever they are set to)")
    reg.MAX_DESCRIPTOR_FILES = reg.MAX_SCHEMA_TYPES = 1 << 20
    for n in (1000, 4000, 12000):
        data = import_chain(n)
        gc.collect()
        start = time.perf_counter()
        Registry(data)
        took = time.perf_counter() - start
        print(f"{n:>6} files  {len(data) / 1e6:6.2f} MB  {took:7.3f} s  {took / n * 1e6:8.1f} us/file")
    reg.MAX_DESCRIPTOR_FILES, reg.MAX_SCHEMA_TYPES = MAX_DESCRIPTOR_FILES, MAX_SCHEMA_TYPES

    with tempfile.TemporaryDirectory(prefix="jsreplay-hostile-") as tmp:
        directory = Path(tmp)
        print("\n== hostile records and headers: peak RSS of a fresh interpreter reading them (goal: growth under 10x)")
        for label, path in hostile_files(directory).items():
            result = json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--child", str(path)], check=True, capture_output=True, text=True
                ).stdout
            )
            size = path.stat().st_size
            growth = (int(result["peak_kb"]) - int(result["before_kb"])) * 1024
            print(
                f"{label:<42} file {size / MIB:7.1f} MiB  RSS growth {growth / MIB:8.1f} MiB "
                f"({growth / size:5.2f}x)  {result['outcome']}"
            )
            path.unlink()

        print("\n== reader throughput, small records (best of 5)")
        path = directory / "small.msgpack"
        small_records(path, args.records)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            with CassetteReader(path) as reader:
                count = sum(1 for _ in reader)
            best = min(best, time.perf_counter() - start)
        size = path.stat().st_size
        print(
            f"{count:,} records  {size / 1e6:.1f} MB  {best:.3f} s  "
            f"{count / best:,.0f} ev/s  {size / best / 1e6:.0f} MB/s"
        )


if __name__ == "__main__":
    main()
