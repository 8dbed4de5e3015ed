"""``log.jsonl``: the training log of a run directory, one JSON object per logged step.

The one home of the file's name, its writer (append a record and flush, so a kill loses at most the line
being written), its reader (torn or foreign lines skipped) and ``truncate_log`` (what a resume keeps).
"""

from __future__ import annotations

import json
from pathlib import Path

from dgm.runs.atomic import atomic_write_bytes

__all__ = ["LOG", "LogWriter", "read_log", "truncate_log"]

LOG = "log.jsonl"


class LogWriter:
    """Appends records to ``DIR/log.jsonl``; each ``write`` is one line, flushed at once.

    Use as a context manager, or call ``close``.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOG
        self._file = open(self.path, "a")  # noqa: SIM115 - closed by close() / __exit__

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> LogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _records(path: Path):
    """(line, record) for each line of ``path`` that holds a JSON object."""
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            yield line, rec


def read_log(run_dir: Path) -> list[dict]:
    """The JSON records of ``DIR/log.jsonl`` (torn or foreign lines skipped; [] without a log)."""
    path = Path(run_dir) / LOG
    return [rec for _, rec in _records(path)] if path.is_file() else []


def truncate_log(run_dir: Path, step: int) -> None:
    """Drop torn lines of ``DIR/log.jsonl`` and those after ``step`` (written after the checkpoint a resume
    starts from)."""
    path = Path(run_dir) / LOG
    if not path.exists():
        return
    keep = [line for line, rec in _records(path) if rec.get("step", 0) <= step]
    atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode())
