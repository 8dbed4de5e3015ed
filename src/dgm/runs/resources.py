"""What the machine has (memory, disk, the file-size limit) and refusing work that would not fit, before any of
it is allocated or written.

``available_memory`` (from ``dgm.data.limits``) reads /proc/meminfo's MemAvailable and the cgroup's limit (a
container sees the host's meminfo), with ``os.sysconf`` as the fallback; ``free_disk`` is
``shutil.disk_usage``; ``file_size_limit`` is RLIMIT_FSIZE (``ulimit -f``). ``require_memory`` and
``require_disk`` raise a one-line ``ResourceError`` (a ValueError, so the command line prints
``dgm: error: ...``) naming what was asked and what there is.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dgm.data.limits import available_memory, gib

__all__ = ["MEMORY_FRACTION", "ResourceError", "available_memory", "file_size_limit", "free_disk", "gib",
           "require_disk", "require_memory"]

MEMORY_FRACTION = 0.8  # of the available memory that one request may take (the rest: Python, torch, the OS)


class ResourceError(ValueError):
    """A request for more memory or disk than the machine has (refused before anything is allocated)."""


def free_disk(path: Path) -> int:
    """Free bytes on the file system of ``path`` (a file's folder when the file does not exist yet)."""
    path = Path(path)
    folder = path if path.is_dir() else (path.parent if str(path.parent) else Path("."))
    return shutil.disk_usage(folder).free


def file_size_limit() -> int | None:
    """The largest file this process may write (RLIMIT_FSIZE, ``ulimit -f``), or None when unlimited."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def require_memory(nbytes: int, what: str) -> None:
    """Raise ``ResourceError`` when ``what`` needs more than ``MEMORY_FRACTION`` of the available memory."""
    have = available_memory()
    if have is not None and nbytes > MEMORY_FRACTION * have:
        raise ResourceError(f"{what} needs about {gib(nbytes)} of memory, but only {gib(have)} is available; "
                            "refusing before allocating it")


def require_disk(nbytes: int, path: Path, what: str) -> None:
    """Raise ``ResourceError`` when writing ``nbytes`` to ``path`` exceeds the free disk or the file-size limit."""
    free, limit = free_disk(path), file_size_limit()
    if nbytes > free:
        raise ResourceError(f"{what} needs {gib(nbytes)} on disk, but only {gib(free)} is free where "
                            f"{str(path)!r} goes; nothing was written")
    if limit is not None and nbytes > limit:
        raise ResourceError(f"{what} needs {gib(nbytes)} on disk, more than this process's file-size limit "
                            f"(ulimit -f) of {gib(limit)}; nothing was written")
