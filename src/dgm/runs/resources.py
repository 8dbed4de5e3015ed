"""What the machine has (memory, disk, the file-size limit) and refusing work that would not fit, before any of
it is allocated or written.

``available_memory`` reads /proc/meminfo's MemAvailable and the cgroup's limit (a container sees the host's
meminfo), with ``os.sysconf`` as the fallback; ``free_disk`` is ``shutil.disk_usage``; ``file_size_limit`` is
RLIMIT_FSIZE (``ulimit -f``). ``require_memory`` and ``require_disk`` raise a one-line ``ResourceError`` (a
ValueError, so the command line prints ``dgm: error: ...``) naming what was asked and what there is.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["MEMORY_FRACTION", "ResourceError", "available_memory", "file_size_limit", "free_disk", "gib",
           "require_disk", "require_memory"]

MEMORY_FRACTION = 0.8  # of the available memory that one request may take (the rest: Python, torch, the OS)
CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


class ResourceError(ValueError):
    """A request for more memory or disk than the machine has (refused before anything is allocated)."""


def gib(n: float) -> str:
    """Bytes as a short human figure: "12.3 GiB", "512 MiB", "800 B"."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_headroom() -> int | None:
    """The cgroup's memory limit minus its usage, or None without a (finite) limit."""
    for limit_file, usage_file in CGROUP_FILES:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge number: no limit
            return max(0, int(limit) - usage)
    return None


def available_memory() -> int | None:
    """Bytes of memory a new allocation can take without swapping: the smaller of MemAvailable and the
    cgroup's headroom; ``os.sysconf`` free pages where /proc is missing; None when nothing can tell."""
    found = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    if not found:
        try:
            found = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


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
