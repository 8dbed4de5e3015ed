"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file of a run directory, every sample file and every report is written through ``atomic_write``: to a
temporary sibling ``.NAME.tmpPID``, fsynced, renamed onto NAME, and the folder fsynced so that the rename
survives a power cut too. A write that fails removes its temporary; a SIGKILL can leave one behind, which
``temporaries_of`` finds (the next writer of a run directory deletes them).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "atomic_write_bytes", "fsync_folder", "temporaries_of", "temporary_sibling"]


def temporary_sibling(path: Path) -> Path:
    """``.NAME.tmpPID`` beside ``path``: where this process writes ``path`` before renaming it."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def temporaries_of(path: Path) -> list[Path]:
    """The temporary siblings of ``path`` that any process left (``.NAME.tmpPID``), sorted."""
    path = Path(path)
    prefix = f".{path.name}.tmp"
    found = path.parent.glob(glob.escape(prefix) + "*")
    return sorted(p for p in found if p.name[len(prefix):].isdigit() and p.is_file())


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``path``, fsync it, and rename it onto ``path``."""
    path = Path(path)
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_folder(path.parent if str(path.parent) else Path("."))
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))
