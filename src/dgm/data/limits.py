"""What a data file may ask of this machine: checked from its header, before its data are read (issue 14).

- ``npy_header``: the shape and dtype of an ``.npy`` (or of an array inside an ``.npz``) from its header
  alone; ``check_npy_header`` refuses an array of Python objects (only pickle could load it, and dgm never
  unpickles data), a header that promises more bytes than the file holds, and an array whose loading would
  not fit in memory.
- ``require_memory``: the memory a loaded data set takes (``load_bytes``: the raw array, then float32 in
  model space and its train/held-out copies) against what the machine has (``available_memory``: Linux's
  MemAvailable and the cgroup's headroom, since a container's /proc/meminfo shows the host's).
- ``MAX_IMAGE_SIDE``: the largest image side dgm reads (a decompression bomb is refused from its header).

The memory probe lives here, the lowest layer that needs it; ``dgm.runs.resources`` (checkpoints, samples)
imports it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

__all__ = ["MAX_IMAGE_SIDE", "MEMORY_FRACTION", "available_memory", "check_npy_header", "gib", "load_bytes",
           "npy_header", "require_memory"]

MAX_IMAGE_SIDE = 4096  # pixels: 16.7 M pixels at most, well below Pillow's decompression-bomb warning (89 M)
MEMORY_FRACTION = 0.8  # of the available memory that loading one data set may take
MODEL_SPACE_BYTES = 8  # per number: the float32 tensor in model space and its train / held-out copies
CGROUP_FILES = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
                ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


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
    cgroup's headroom (a container's /proc/meminfo shows the host's); ``os.sysconf`` free pages where /proc is
    missing; None when nothing can tell (then nothing is refused). ``dgm.runs.resources`` uses this one too."""
    found = [v for v in (_meminfo_available(), _cgroup_headroom()) if v is not None]
    if not found:
        try:
            found = [os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def load_bytes(shape, itemsize: int) -> int:
    """The memory that loading an array of ``shape`` and ``itemsize`` takes: the raw array plus
    ``MODEL_SPACE_BYTES`` per number (``dgm.data.dataset.load_data``)."""
    count = math.prod(int(d) for d in shape)
    return count * (int(itemsize) + MODEL_SPACE_BYTES)


def require_memory(nbytes: int, where: str) -> None:
    """ValueError (one line) when loading ``where`` needs more than ``MEMORY_FRACTION`` of the available memory."""
    have = available_memory()
    if have is not None and nbytes > MEMORY_FRACTION * have:
        raise ValueError(f"{where} needs about {gib(nbytes)} of memory to load, but only {gib(have)} is "
                         "available; refusing before reading it")


def npy_header(f, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) from the header of the ``.npy`` stream ``f`` (left at the start of the data)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(f)
        else:  # 3.0 only adds UTF-8 field names of structured dtypes, which dgm does not read
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise ValueError(f"cannot read {where}: {' '.join(str(err).split())}") from None
    return tuple(int(d) for d in shape), dtype


def check_npy_header(shape: tuple[int, ...], dtype: np.dtype, data_bytes: int, where: str) -> None:
    """Refuse, before reading it, an array of ``shape`` and ``dtype`` whose file holds ``data_bytes`` bytes
    after its header: Python objects (pickle), fewer bytes than the header promises, too large to load."""
    if dtype.hasobject:
        raise ValueError(f"cannot read {where}: it holds Python objects (dtype {dtype}), which only pickle can "
                         "load, and dgm never unpickles data; save numbers (float vectors or uint8 images)")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > data_bytes:
        raise ValueError(f"cannot read {where}: its header promises an array of shape {shape} ({nbytes:,} bytes) "
                         f"but the file holds {data_bytes:,} (truncated?)")
    require_memory(load_bytes(shape, dtype.itemsize), where)
