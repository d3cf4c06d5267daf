"""Files written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write `data` to `path` through a temporary name in the same folder, then rename it into place, so a
    reader (or a run killed half-way) never sees a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path
