"""Poison-proof data files (``dgm.data.files``, ``dgm.data.limits``, ``dgm.data.labels``): no pickle, no
decompression bombs, nothing larger than the memory read, no symlink loop or unreadable file skipped
silently; each refusal is one ValueError line naming the file."""

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgm.data import limits, load_data


class Payload:
    """Unpickling it creates ``marker``: proof that the loader ran pickle."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _one_line(spec) -> str:
    with pytest.raises(ValueError) as info:
        load_data(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("where", ["npy", "npz x", "npz y"])
def test_object_arrays_are_refused_without_unpickling(where, tmp_path):
    """An object array whose unpickling would create a file: refused from the header, and the file is never
    created. Catches allow_pickle=True (the marker appears) or a pickle read before the dtype is checked."""
    marker = tmp_path / "pickle-ran"
    bomb = np.array([Payload(marker), None], dtype=object)
    path = tmp_path / ("data.npy" if where == "npy" else "data.npz")
    if where == "npy":
        np.save(path, bomb, allow_pickle=True)
    elif where == "npz x":
        np.savez(path, x=bomb)
    else:
        np.savez(path, x=np.zeros((2, 2)), y=bomb)
    message = _one_line(path)
    assert message.startswith(f"cannot read '{path}'") and "Python objects" in message and "pickle" in message
    assert not marker.exists()


def test_np_load_refuses_pickle_even_if_the_header_check_misses(tmp_path, monkeypatch):
    """The second layer: with the header check switched off, np.load(allow_pickle=False) still refuses the
    object array and the payload never runs. Catches allow_pickle=True (the marker appears)."""
    from dgm.data import files

    monkeypatch.setattr(files, "check_npy_header", lambda *a: None)
    marker = tmp_path / "pickle-ran"
    for name in ("data.npy", "data.npz"):
        path = tmp_path / name
        bomb = np.array([Payload(marker), None], dtype=object)
        np.save(path, bomb, allow_pickle=True) if name.endswith(".npy") else np.savez(path, x=bomb)
        assert _one_line(path).startswith(f"cannot read '{path}'")
        assert not marker.exists()


def _npy_header(shape, dtype=np.float64) -> bytes:
    """The bytes of an .npy header (version 1.0) for an array of ``shape``."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                "shape": tuple(shape)})
    return buf.getvalue()


def test_a_header_promising_more_than_the_file_holds_is_refused_before_reading(tmp_path):
    """A 100-byte .npy whose header promises 8 TB: refused from the header (np.load would try to allocate it).
    Catches the header check removed (a MemoryError or a long read instead of one line)."""
    path = tmp_path / "liar.npy"
    path.write_bytes(_npy_header((10**12, 1)) + b"\0" * 100)
    message = _one_line(path)
    assert "promises an array of shape (1000000000000, 1)" in message and "holds 100" in message


def test_a_sparse_terabyte_array_is_refused_for_lack_of_memory(tmp_path):
    """A 1 TiB .npy that is honest about its size (a sparse file: no disk used): refused before a byte of it
    is read, naming the memory it needs. Catches the memory check removed (np.load's allocation fails or
    swaps)."""
    path = tmp_path / "huge.npy"
    header = _npy_header((1 << 37, 1))  # 2^37 float64 = 1 TiB
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + (1 << 40))
    message = _one_line(path)
    assert "needs about" in message and "of memory to load" in message and "refusing before reading" in message


def _write_idx(path: Path, a: np.ndarray) -> Path:
    data = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_larger_than_memory_is_refused_from_its_header(gz, tmp_path, monkeypatch):
    """With 1 MB "available", a 4 MB IDX file (raw or a gzip stream that would inflate to it) is refused
    from its 16-byte header. Catches reading the whole (decompressed) file first."""
    monkeypatch.setattr(limits, "available_memory", lambda: 1 << 20)
    path = _write_idx(tmp_path / ("t-images-idx3-ubyte" + (".gz" if gz else "")),
                      np.zeros((1000, 64, 64), dtype=np.uint8))
    assert "needs about" in _one_line(path)
    monkeypatch.setattr(limits, "available_memory", lambda: 1 << 34)
    assert load_data(path).train.shape[1:] == (1, 64, 64)


def test_an_npz_member_larger_than_memory_is_refused(tmp_path, monkeypatch):
    """A compressed .npz of zeros (a zip bomb in small) is measured from its member's header. Catches a
    memory check on .npy files only."""
    monkeypatch.setattr(limits, "available_memory", lambda: 1 << 20)
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x=np.zeros((4000, 64)))
    assert path.stat().st_size < 10_000
    message = _one_line(path)
    assert message.startswith(f"'{path}' (array x) needs about")


def _png_header(width: int, height: int) -> bytes:
    """A grey PNG that declares ``width`` x ``height`` pixels but holds almost no data (a decompression bomb
    as Pillow sees it from the header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("size", "pattern"), [
    ((20000, 20000), "too large to read safely"),  # Pillow's DecompressionBombError (> 2 x MAX_IMAGE_PIXELS)
    ((10000, 10000), "too large to read safely"),  # Pillow's DecompressionBombWarning, made an error
    ((5000, 1), "is 5000x1 pixels; dgm reads images of 1 to 4096 pixels a side"),
], ids=["bomb error", "bomb warning", "wide"])
def test_image_bombs_and_huge_images_are_refused_from_the_header(size, pattern, tmp_path):
    """Catches the bomb error or warning escaping (a traceback, or a 100-megapixel decode) and the side limit
    removed."""
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "b.png").write_bytes(_png_header(*size))
    message = _one_line(tmp_path / "imgs")
    assert "'" + str(tmp_path / "imgs" / "b.png") + "'" in message and pattern in message


def test_animations_and_odd_images_are_one_line_errors(tmp_path):
    """An animated GIF (its frames but the first would be dropped silently) and a zero-width PNG. Catches a GIF
    whose first frame is taken silently."""
    (tmp_path / "gif").mkdir()
    frames = [Image.fromarray(np.full((4, 4), v, np.uint8)) for v in (0, 255)]
    frames[0].save(tmp_path / "gif" / "anim.gif", save_all=True, append_images=frames[1:])
    assert "has 2 frames (an animation)" in _one_line(tmp_path / "gif")
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "z.png").write_bytes(_png_header(0, 5))
    assert "unreadable image" in _one_line(tmp_path / "zero")


def test_symlink_loops_and_dangling_links_are_errors_not_skipped(tmp_path):
    """A self-referencing a.png beside a good image: an error naming it (Path.is_file() is False for a loop,
    so it was silently skipped). Catches the loop skipped."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "good.png")
    os.symlink(folder / "a.png", folder / "a.png")
    message = _one_line(folder)
    assert f"unreadable image '{folder / 'a.png'}'" in message and "symlink loop" in message
    (folder / "a.png").unlink()
    os.symlink(tmp_path / "nowhere.png", folder / "b.png")
    assert f"'{folder / 'b.png'}'" in _one_line(folder)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode (see the test below)")
def test_an_unreadable_image_is_a_one_line_error(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a.png")
    (folder / "a.png").chmod(0)
    assert f"unreadable image '{folder / 'a.png'}'" in _one_line(folder)


def test_a_permission_error_is_a_one_line_error(tmp_path, monkeypatch):
    """As root chmod 000 cannot fail a read, so Pillow's open is made to raise what it raises then. Catches a
    PermissionError escaping as a traceback."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "a.png")

    def denied(path, *args, **kw):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", denied)
    assert _one_line(folder) == f"unreadable image '{folder / 'a.png'}': [Errno 13] Permission denied: " \
                                f"'{folder / 'a.png'}'"


def test_absurd_labels_are_refused_before_naming_every_class(tmp_path):
    """y = [0, 10**6]: a million class names (and a million-row class embedding) for 2 examples. Catches the
    class limit removed."""
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((2, 2)), y=np.array([0, 10**6]))
    message = _one_line(path)
    assert "label 1000000 would make 1,000,001 classes" in message and "at most 65,536" in message
