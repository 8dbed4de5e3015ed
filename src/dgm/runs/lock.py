"""One writer per run directory: an advisory lock on ``DIR/.lock`` held while a run trains.

``fcntl.flock`` belongs to the open file, so the kernel releases it when the process ends in any way (a
SIGKILL or a power cut included): a killed run never leaves its directory locked, and ``--resume`` after a
kill just works. The holder writes its pid into the file so that the refusal can name it; the pid is
informative only (a stale pid in an unlocked file means nothing). Readers (``dgm sample``, ``dgm eval``,
``dgm report``) take no lock: they read the last complete checkpoint, which every write replaces atomically;
the one file they may write into a run, an optimized level grid (``--grid optimized``), is written atomically too
(``dgm.samplers.grid.save_grid``).

Where ``fcntl`` does not exist (Windows), ``run_lock`` locks nothing. The lock is advisory and local: it
does not stop other programs, and on a network file system it is only as good as the server's flock.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None

__all__ = ["LOCK", "RunLockedError", "lock_holder", "run_lock"]

LOCK = ".lock"


class RunLockedError(ValueError):
    """Another process holds the run directory's lock (it is training there)."""


def lock_holder(run_dir: Path) -> int | None:
    """The pid recorded in ``DIR/.lock`` (None when the file is missing, empty or unreadable)."""
    try:
        text = (Path(run_dir) / LOCK).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[Path]:
    """Hold the exclusive lock of ``run_dir`` (created if missing) for the ``with`` block; yield the directory.

    Raises ``RunLockedError`` (one line, naming the directory and the holder's pid) at once, without waiting,
    when another process holds it, and ``ValueError`` when ``run_dir`` is not a directory or not writable.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {str(run_dir)!r} exists and is not a directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644) if fcntl else None
    except OSError as err:
        raise ValueError(f"cannot write in run directory {str(run_dir)!r} ({err.strerror})") from None
    if fd is None:
        yield run_dir
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = lock_holder(run_dir)
            holder = f" (pid {pid})" if pid else ""
            raise RunLockedError(f"run directory {str(run_dir)!r} is in use by another dgm process{holder}; "
                                 "wait for it to finish or stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield run_dir
        finally:
            os.ftruncate(fd, 0)  # no stale pid once released (a killed holder leaves its pid, but no lock)
    finally:
        os.close(fd)  # releases the flock
