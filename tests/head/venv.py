"""Locate or build a venv holding Jumpstarter's development peers (../shared/jumpstarter-head/wheels).

The development line conflicts with the 0.9.0 packages the tests run under, so its client and exporter run as
subprocesses with a python of their own. The venv is built once under a cache directory, keyed by the wheels'
names and sizes, and reused; `JSREPLAY_HEAD_VENV` points at a ready one instead.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _find_head() -> Path:
    """`shared/jumpstarter-head` beside the checkout (CI), or beside one of its parents (a git worktree)."""
    for parent in (REPO.parent, *REPO.parent.parents[:2]):
        candidate = parent / "shared" / "jumpstarter-head"
        if candidate.is_dir():
            return candidate
    return REPO.parent / "shared" / "jumpstarter-head"


HEAD = _find_head()
BUILD_TIMEOUT = 900.0


class HeadUnavailable(Exception):
    """The development peers cannot be run here; the message says why (a skip reason)."""


def head_protos() -> Path:
    protos = HEAD / "protos"
    if not protos.is_dir():
        raise HeadUnavailable(f"{HEAD} is absent: the development Jumpstarter peers are not beside this checkout")
    return protos


def _wheels() -> list[Path]:
    wheels = sorted((HEAD / "wheels").glob("*.whl"))
    if not wheels:
        raise HeadUnavailable(f"{HEAD / 'wheels'} is absent or empty: the development Jumpstarter peers are missing")
    return wheels


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jsreplay-tests"


def head_python() -> Path:
    """The python of a venv with the development peers installed (built on first use)."""
    ready = os.environ.get("JSREPLAY_HEAD_VENV")
    if ready:
        python = Path(ready) / "bin" / "python"
        if not python.exists():
            raise HeadUnavailable(f"JSREPLAY_HEAD_VENV={ready} has no bin/python")
        return python
    wheels = _wheels()
    digest = hashlib.sha256("\n".join(f"{w.name}:{w.stat().st_size}" for w in wheels).encode()).hexdigest()[:12]
    venv = _cache_root() / f"venv-head-{digest}"
    python = venv / "bin" / "python"
    marker = venv / ".complete"
    if marker.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=BUILD_TIMEOUT)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *map(str, wheels)],
            check=True,
            timeout=BUILD_TIMEOUT,
            capture_output=True,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        raise HeadUnavailable(f"could not build {venv}: {exc} {detail[-500:]!r}") from exc
    marker.write_text("ok\n")
    return python


if __name__ == "__main__":
    print(head_python())
