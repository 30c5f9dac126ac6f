"""Creating output files without following what an attacker may have put at their path.

`--cassette --overwrite` and `--ca-out` replace a file the user named. Opening that path with O_TRUNC would
write through a symlink (or into a hard-linked file) to wherever it points; instead a new file is created
next to it (O_EXCL | O_NOFOLLOW, so nothing existing is opened) and renamed over the path, which replaces a
symlink itself, never its target.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def create_replacing(path: Path, mode: int) -> int:
    """A new, empty file at `path` replacing whatever is there, open for writing; its descriptor.

    `mode` is applied as `os.open` does (less the umask). Raises OSError (e.g. when `path` is a directory).
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(temp, flags, mode)
        except FileExistsError:
            continue
        break
    try:
        os.replace(temp, path)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    return fd
