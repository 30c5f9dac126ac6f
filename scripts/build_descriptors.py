#!/usr/bin/env python3
"""Build the schemas jsreplay ships from the .proto files in ``protos/``.

- ``protos/v0.9.0`` -> ``jsreplay/protocol/schemas/v0.9.0.binpb`` (jumpstarter-protocol 0.9.0);
- ``protos/head``   -> ``jsreplay/protocol/schemas/head.binpb`` (the development line);
- their union       -> ``jsreplay/protocol/descriptors.binpb``, the default: head plus what 0.9.0 had and head
  dropped (``AuditStream``), see ``jsreplay.protocol.schemas.union``.

Each is a serialized ``google.protobuf.FileDescriptorSet`` holding the tree's protos plus everything they import
(the google/protobuf well-known types), without source info, compiled by ``grpc_tools.protoc`` with files in
sorted order, so the result is reproducible.

Usage:
    python scripts/build_descriptors.py           # (re)write the descriptor sets
    python scripts/build_descriptors.py --check   # exit 1 if a committed file is out of date
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from jsreplay.protocol.schemas import SchemaError, compile_protos, union  # noqa: E402

PROTO_ROOT = REPO_ROOT / "protos"
LINES = {"v0.9.0": PROTO_ROOT / "v0.9.0", "head": PROTO_ROOT / "head"}
SCHEMAS = REPO_ROOT / "jsreplay" / "protocol" / "schemas"
OUTPUT = REPO_ROOT / "jsreplay" / "protocol" / "descriptors.binpb"


class BuildError(RuntimeError):
    """protoc rejected the input."""


def build_descriptor_set(proto_root: Path) -> bytes:
    """Compile every proto under ``proto_root`` and return the serialized FileDescriptorSet."""
    try:
        return compile_protos(proto_root)
    except SchemaError as err:
        raise BuildError(str(err)) from None


def build_all(proto_root: Path = PROTO_ROOT) -> dict[str, bytes]:
    """line name -> descriptor set, and "union" -> the default schema."""
    built = {name: build_descriptor_set(proto_root / name) for name in LINES}
    built["union"] = union(built["head"], built["v0.9.0"])
    return built


def outputs(output: Path = OUTPUT) -> dict[str, Path]:
    return {"union": output, **{name: SCHEMAS / f"{name}.binpb" for name in LINES}}


def write_all(output: Path = OUTPUT, proto_root: Path = PROTO_ROOT, *, only_union: bool = False) -> dict[str, bytes]:
    built = build_all(proto_root)
    for name, path in outputs(output).items():
        if only_union and name != "union":
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(built[name])
    return built


def stale(output: Path = OUTPUT, proto_root: Path = PROTO_ROOT, *, only_union: bool = False) -> list[Path]:
    """The outputs that differ from a fresh build."""
    built = build_all(proto_root)
    return [
        path
        for name, path in outputs(output).items()
        if not (only_union and name != "union") and (not path.is_file() or path.read_bytes() != built[name])
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if an output is out of date")
    parser.add_argument("--protos", type=Path, default=PROTO_ROOT, help="proto root (default: %(default)s)")
    parser.add_argument("--output", type=Path, help=f"write only the union here (default: all; the union to {OUTPUT})")
    args = parser.parse_args(argv)
    proto_root: Path = args.protos
    output: Path = args.output or OUTPUT
    only_union = args.output is not None
    try:
        if args.check:
            bad = stale(output, proto_root, only_union=only_union)
            if not bad:
                print("descriptor sets are up to date")
                return 0
            names = ", ".join(str(p) for p in bad)
            print(f"error: {names} out of date with {proto_root}; run: python scripts/build_descriptors.py",
                  file=sys.stderr)  # fmt: skip
            return 1
        built = write_all(output, proto_root, only_union=only_union)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in outputs(output).items():
        if not (only_union and name != "union"):
            print(f"wrote {path} ({len(built[name])} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
