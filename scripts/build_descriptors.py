#!/usr/bin/env python3
"""Build ``jsreplay/protocol/descriptors.binpb`` from the .proto files in ``protos/``.

The output is a serialized ``google.protobuf.FileDescriptorSet`` holding every proto under
``protos/`` plus everything they import (so the google/protobuf well-known types are included),
without source info. protoc is run through ``grpc_tools.protoc`` with ``protos/`` and grpc_tools'
bundled ``_proto`` directory on the include path. Input files are passed in sorted order and
protoc's output is deterministic for a given input, so the result is reproducible.

Usage:
    python scripts/build_descriptors.py           # (re)write the descriptor set
    python scripts/build_descriptors.py --check   # exit 1 if the committed file is out of date
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
OUTPUT = REPO_ROOT / "jsreplay" / "protocol" / "descriptors.binpb"
GRPC_TOOLS_INCLUDE = Path(grpc_tools.__file__).resolve().parent / "_proto"


class BuildError(RuntimeError):
    """protoc rejected the input."""


def proto_files(proto_root: Path) -> list[Path]:
    """All .proto files under ``proto_root``, sorted by their path relative to it."""
    root = proto_root.resolve()
    return sorted(root.rglob("*.proto"), key=lambda p: p.relative_to(root).as_posix())


def build_descriptor_set(proto_root: Path = PROTO_ROOT) -> bytes:
    """Compile every proto under ``proto_root`` and return the serialized FileDescriptorSet."""
    root = proto_root.resolve()
    files = proto_files(root)
    if not files:
        raise BuildError(f"no .proto files under {root}")
    with tempfile.TemporaryDirectory(prefix="jsreplay-descriptors-") as tmp:
        out = Path(tmp) / "descriptors.binpb"
        args = [
            "grpc_tools.protoc",
            f"--proto_path={root}",
            f"--proto_path={GRPC_TOOLS_INCLUDE}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            *(str(f) for f in files),
        ]
        rc = protoc.main(args)
        if rc != 0:
            raise BuildError(f"protoc failed with exit code {rc} (see its messages above)")
        return out.read_bytes()


def write_descriptor_set(output: Path = OUTPUT, proto_root: Path = PROTO_ROOT) -> bytes:
    """Build the descriptor set and write it to ``output``; return the bytes written."""
    data = build_descriptor_set(proto_root)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    return data


def is_current(output: Path = OUTPUT, proto_root: Path = PROTO_ROOT) -> bool:
    """True if ``output`` exists and equals a fresh build of ``proto_root``."""
    return output.is_file() and output.read_bytes() == build_descriptor_set(proto_root)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the output is out of date")
    parser.add_argument("--protos", type=Path, default=PROTO_ROOT, help="proto root (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="descriptor set path (default: %(default)s)")
    args = parser.parse_args(argv)
    proto_root: Path = args.protos
    output: Path = args.output

    try:
        if args.check:
            if is_current(output, proto_root):
                print(f"{output} is up to date")
                return 0
            print(
                f"error: {output} is out of date with {proto_root}; run: python scripts/build_descriptors.py",
                file=sys.stderr,
            )
            return 1
        data = write_descriptor_set(output, proto_root)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {output} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
