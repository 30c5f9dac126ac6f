"""Where an edit's cassette goes: a temporary file next to the output, put in place only once it reads back.

Without `overwrite` the finished file is hard-linked to the output path, which fails if anything appeared
there meanwhile (nothing is replaced); with it (and for `--in-place`) it is renamed over the path, which is
atomic and replaces a symlink rather than writing through it. On any error the temporary file is removed and
the output path (and every input) is as it was.
"""

from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path
from types import TracebackType

from jsreplay.cassette.errors import CassetteError, CassetteExistsError, TruncatedCassetteWarning
from jsreplay.cassette.format import CassetteReader


def same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


class Output:
    """`with Output(path, inputs=..., overwrite=...) as out:` write `out.temp`, then `out.commit()`."""

    def __init__(self, path: Path, *, inputs: list[Path], overwrite: bool = False, in_place: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite or in_place
        if not in_place:
            for source in inputs:
                if same_file(source, self.path):
                    raise CassetteError(self.path, "is also an input; write elsewhere or use --in-place")
        if self.path.is_dir():
            raise CassetteError(self.path, "is a directory")
        if not self.overwrite and (self.path.exists() or self.path.is_symlink()):
            raise CassetteExistsError(self.path, "already exists; choose another path or pass --overwrite")
        self.temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        self.committed = False

    def commit(self) -> None:
        if self.overwrite:
            os.replace(self.temp, self.path)
        else:
            try:
                os.link(self.temp, self.path)
            except FileExistsError:
                raise CassetteExistsError(
                    self.path, "already exists; choose another path or pass --overwrite"
                ) from None
            self.temp.unlink()
        self.committed = True

    def __enter__(self) -> Output:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.committed:
            self.temp.unlink(missing_ok=True)


def read_back(path: Path) -> int:
    """Read a cassette just written from end to end; its event count. Any problem is a CassetteError."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", TruncatedCassetteWarning)
        try:
            with CassetteReader(path) as reader:
                return sum(1 for _ in reader)
        except TruncatedCassetteWarning as warning:
            raise CassetteError(path, f"the output does not read back whole: {warning}") from None
