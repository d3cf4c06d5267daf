"""Files written whole or not at all."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial"  # the suffix of a file or folder still being written


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary name in the same folder, then rename it into place, so a
    reader (or a run killed half-way) never sees a partial file."""
    with replaced(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


@contextmanager
def replaced(path: str | os.PathLike):
    """Yield a temporary path next to `path` to write a file or a folder into; when the block ends without
    an error, the result replaces `path` (a folder already there is removed first), else it is deleted."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{PARTIAL}")
    _remove(tmp)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
