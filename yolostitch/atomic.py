"""Atomic, durable file writes: a temporary file beside the target, flushed and fsynced, then renamed over it.

Used for everything a later run reads back (checkpoints, feature-cache files and index), so a run killed or a
machine losing power at any moment leaves either the old file or the complete new one, never a torn one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write`` on a binary file object for ``path``; the file appears only once it is on disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
