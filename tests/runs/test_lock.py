"""One writer per run directory (``dgm.runs.lock``): a second process is refused at once with a one-line
error naming the directory and the holder's pid; a holder killed with SIGKILL leaves the lock free."""

import os
import signal

import pytest

from dgm.runs.lock import LOCK, RunLockedError, lock_holder, run_lock


def test_a_second_process_is_refused_naming_the_directory_and_holder(tmp_path, lock_process):
    """Catches a lock that is not taken (the second process acquires), a blocking flock (the second one
    hangs instead of answering), or an error without the pid or the directory."""
    run = tmp_path / "run"
    holder = lock_process.holder(run)
    try:
        message = lock_process.attempt(run)
        assert message.startswith(f"run directory {str(run)!r} is in use") and "\n" not in message
        assert f"(pid {holder.pid})" in message and lock_holder(run) == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_killed_with_sigkill_leaves_the_lock_free(tmp_path, lock_process):
    """Catches a lock that outlives its process (a lock file created with O_EXCL, or a pid check): after
    SIGKILL the file still holds the dead pid, but the next process takes the lock."""
    run = tmp_path / "run"
    holder = lock_process.holder(run)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_holder(run) == holder.pid  # the stale pid is still written ...
    assert lock_process.attempt(run) == "acquired"  # ... but the kernel released the lock


def test_the_same_process_cannot_hold_it_twice_and_release_frees_it(tmp_path):
    """flock belongs to the open file: a second ``run_lock`` in the same process (two ``fit`` calls on one
    directory) is refused too; after the ``with`` block the lock is free and the pid is cleared."""
    with run_lock(tmp_path / "r") as held:
        assert held == tmp_path / "r" and lock_holder(held) == os.getpid()
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"), run_lock(tmp_path / "r"):
            pass
    assert lock_holder(tmp_path / "r") is None and (tmp_path / "r" / LOCK).exists()
    with run_lock(tmp_path / "r"):
        pass


def test_a_file_in_place_of_the_directory_is_a_one_line_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="exists and is not a directory"), run_lock(tmp_path / "f"):
        pass
    with pytest.raises(ValueError, match="cannot write in run directory"), run_lock(tmp_path / "f" / "sub"):
        pass
