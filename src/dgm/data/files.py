"""Reading data files into raw arrays and their class labels, and checking them: ``.npy``/``.npz`` arrays,
folders of images and MNIST IDX files (LeCun's format, gzipped or raw).

A raw array is continuous vectors, float (N, D), or uint8 images (N, H, W), (N, C, H, W) or (N, H, W, C)
with C in {1, 3}; ``check_array`` tells which (and the layout) or names what is wrong. Labels
(``dgm.data.labels``): ``y`` in an ``.npz``, the labels file beside MNIST images, class subfolders.

Poison-proof (issue 14; ``dgm.data.limits``): headers are read before data, so an array of Python objects
(pickle is never used: ``allow_pickle=False`` besides), a header that promises more than the file holds, or
data larger than the available memory (a gzip or zip bomb too) are refused before anything is allocated;
images are opened header first, so a decompression bomb, a side over ``MAX_IMAGE_SIDE`` or an animation is
refused before a pixel is decoded; a symlink loop, a dangling link or an unreadable file among the images is
an error, never skipped. Every refusal is one ValueError line naming the file.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
from torch import Tensor

from dgm.data.labels import encode_labels, idx_labels_path
from dgm.data.limits import MAX_IMAGE_SIDE, check_npy_header, load_bytes, npy_header, require_memory

__all__ = ["IMAGE_SUFFIXES", "check_array", "read_class_folders", "read_idx", "read_image_folder", "read_path"]

Labelled = tuple[np.ndarray, Tensor | None, list[str] | None]  # (raw array, labels (N,) or None, class names)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
_IDX_NAME = re.compile(r"idx\d-ubyte(\.gz)?$")
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def check_array(a: np.ndarray, where: str) -> tuple[str, str | None]:
    """Validate a raw array; return (kind, layout). Vectors: float (N, D); images: uint8, see module doc."""
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{where}: unsupported dtype {a.dtype}; expected float vectors or uint8 images")
    if a.ndim < 2 or a.ndim > 4:
        raise ValueError(f"{where}: array of shape {a.shape} has {a.ndim} dimensions; expected (N, D) "
                         "vectors or (N, H, W), (N, C, H, W), (N, H, W, C) images")
    if a.shape[0] == 0 or a.size == 0:
        raise ValueError(f"{where}: empty data set (shape {a.shape})")
    if a.ndim == 2:
        if a.dtype.kind != "f":
            raise ValueError(f"{where}: (N, D) vectors must be float, got {a.dtype} of shape {a.shape} "
                             "(convert with .astype(float), or give uint8 images as (N, H, W))")
        if not np.isfinite(a).all():
            raise ValueError(f"{where}: the data contain NaN or Inf")
        return "vector", None
    if a.dtype != np.uint8:
        raise ValueError(f"{where}: images must be uint8 (0..255), got {a.dtype} of shape {a.shape}")
    if a.ndim == 3:
        return "image", "NHW"
    if a.shape[1] in (1, 3):
        return "image", "NCHW"
    if a.shape[3] in (1, 3):
        return "image", "NHWC"
    raise ValueError(f"{where}: cannot find the channel axis of images of shape {a.shape}; expected "
                     "(N, C, H, W) or (N, H, W, C) with C in {1, 3}")


def read_path(path: Path) -> Labelled:
    """The raw array stored at ``path`` (a file or a folder of images), with its class labels and names
    where the source has them (else None, None)."""
    if path.is_dir():
        return read_class_folders(path)
    name = path.name.lower()
    if _IDX_NAME.search(name):
        return _read_idx_labelled(path)
    if not name.endswith((".npy", ".npz")):
        raise ValueError(f"unsupported data file '{path}': expected .npy, .npz, an MNIST IDX file "
                         "(*-idx3-ubyte[.gz]) or a folder of images")
    try:  # the headers first: no pickle, no truncated array, nothing larger than the memory
        if name.endswith(".npy"):
            with open(path, "rb") as f:
                shape, dtype = npy_header(f, f"'{path}'")
                check_npy_header(shape, dtype, path.stat().st_size - f.tell(), f"'{path}'")
            wanted = []
        else:
            with zipfile.ZipFile(path) as zf:
                keys = [n.removesuffix(".npy") for n in zf.namelist() if n.endswith(".npy")]
                if not keys:
                    raise ValueError(f"'{path}' holds no arrays")
                wanted = ["x" if "x" in keys else "data" if "data" in keys else keys[0]]
                wanted += ["y"] if "y" in keys and wanted == ["x"] else []
                for key in wanted:
                    with zf.open(key + ".npy") as f:
                        shape, dtype = npy_header(f, f"'{path}' (array {key})")
                        data_bytes = zf.getinfo(key + ".npy").file_size - f.tell()
                    check_npy_header(shape, dtype, data_bytes, f"'{path}' (array {key})")
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"cannot read '{path}': {' '.join(str(err).split())}") from None
    try:
        if not wanted:
            return np.load(path, allow_pickle=False), None, None
        with np.load(path, allow_pickle=False) as loaded:
            raw = loaded[wanted[0]]
            y = loaded["y"] if "y" in wanted else None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"cannot read '{path}': {' '.join(str(err).split())}") from None
    if y is None:
        return raw, None, None
    labels, names = encode_labels(y, len(raw), f"'{path}' (array y)")
    return raw, labels, names


def _read_idx_labelled(path: Path) -> Labelled:
    """MNIST images and, when it lies beside them, their labels file (one uint8 class per image)."""
    raw = read_idx(path)
    found = idx_labels_path(path)
    if found is None:
        return raw, None, None
    y = read_idx(found)
    if y.ndim != 1 or len(y) != len(raw):
        raise ValueError(f"labels file '{found}' holds {y.shape} values for the {len(raw)} images of '{path}'")
    labels, names = encode_labels(y, len(raw), f"labels file '{found}'")
    return raw, labels, names


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format), gzipped or raw: magic 0 0 type ndim, big-endian dims.

    The header is read first: data larger than the available memory are refused before they are read (a
    gzip bomb too), and exactly the bytes the header promises are read.
    """
    gz = path.name.lower().endswith(".gz")
    try:
        with (gzip.open if gz else open)(path, "rb") as f:
            magic = f.read(4)
            if len(magic) < 4 or magic[0] or magic[1] or magic[2] not in _IDX_TYPES:
                raise ValueError(f"'{path}' is not an IDX file (bad magic number {magic.hex()})")
            ndim, dtype = magic[3], np.dtype(_IDX_TYPES[magic[2]])
            head = f.read(4 * ndim)
            if len(head) < 4 * ndim:
                raise ValueError(f"IDX file '{path}' is truncated inside its header")
            dims = struct.unpack(f">{ndim}I", head)
            nbytes = math.prod(dims) * dtype.itemsize
            held = None if gz else os.fstat(f.fileno()).st_size - 4 - 4 * ndim
            if held is None or held == nbytes:
                require_memory(load_bytes(dims, dtype.itemsize), f"IDX file '{path}'")
                buf = f.read(nbytes)
                held = len(buf) + len(f.read(1))  # one byte more than promised: a longer file
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"cannot read IDX file '{path}': {' '.join(str(err).split())}") from None
    if held != nbytes:
        shown = f"more than {nbytes}" if held > nbytes and gz else str(held)
        raise ValueError(f"IDX file '{path}' holds {shown} data bytes but its header {dims} needs {nbytes}")
    return np.frombuffer(buf, dtype).reshape(dims).astype(dtype.newbyteorder("="))


def read_image_folder(folder: Path) -> np.ndarray:
    """Images of a folder (sorted by name) -> uint8 (N, C, H, W); gray stays 1 channel, colour becomes RGB.

    Alpha is dropped; if the folder mixes gray and colour images, the gray ones are repeated to RGB.
    """
    files = _image_files(folder)
    if not files:
        raise ValueError(f"folder '{folder}' holds no image files ({' '.join(IMAGE_SUFFIXES)})")
    return _read_images(files, folder)


def read_class_folders(folder: Path) -> Labelled:
    """A folder of images, or of class folders of images: (images, labels, names).

    Image files directly in ``folder`` make an unlabelled set (its subfolders are ignored). Without them,
    every subfolder (not hidden) is a class named after it, in sorted order, and holds that class's images.
    """
    if _image_files(folder):
        return read_image_folder(folder), None, None
    classes = [p for p in _entries(folder) if p.is_dir() and not p.name.startswith(".")]
    if not classes:
        raise ValueError(f"folder '{folder}' holds no image files ({' '.join(IMAGE_SUFFIXES)}) and no class folders")
    files, labels = [], []
    for k, sub in enumerate(classes):
        found = _image_files(sub)
        if not found:
            raise ValueError(f"class folder '{sub}' holds no image files ({' '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [k] * len(found)
    names = [p.name for p in classes]
    return _read_images(files, folder), encode_labels(np.array(labels), len(labels), f"'{folder}'", names)[0], names


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted; a folder that cannot be listed is a one-line ValueError."""
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        raise ValueError(f"cannot list folder '{folder}': {err.strerror or err}") from None


def _image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` (by suffix), sorted. An image name that cannot be followed (a symlink
    loop, a dangling link) is an error, never silently skipped."""
    files = []
    for p in _entries(folder):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            p.stat()
        except OSError as err:
            raise ValueError(f"unreadable image '{p}': {err.strerror or err} (a symlink loop or a dangling "
                             "link?)") from None
        if p.is_file():
            files.append(p)
    return files


def _open_image(p: Path):
    """``p`` opened by Pillow (header only), refused when it is no still 8-bit image of at most
    ``MAX_IMAGE_SIDE`` pixels a side (a decompression bomb is caught before any pixel is decoded)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(p)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise ValueError(f"image '{p}' is too large to read safely ({' '.join(str(err).split())})") from None
    if not (0 < im.width <= MAX_IMAGE_SIDE and 0 < im.height <= MAX_IMAGE_SIDE):
        im.close()
        raise ValueError(f"image '{p}' is {im.width}x{im.height} pixels; dgm reads images of 1 to "
                         f"{MAX_IMAGE_SIDE} pixels a side")
    if getattr(im, "n_frames", 1) > 1:
        frames = im.n_frames
        im.close()
        raise ValueError(f"image '{p}' has {frames} frames (an animation); dgm reads still images only")
    if im.mode in ("I", "I;16", "I;16B", "F"):
        im.close()
        raise ValueError(f"image '{p}' has {im.mode} pixels; only 8-bit images are supported")
    return im


def _read_images(files: list[Path], folder: Path) -> np.ndarray:
    """The images ``files`` -> uint8 (N, C, H, W), as ``read_image_folder`` describes. The first image's size
    times the number of files must fit in memory before the images are decoded."""
    images = []
    for p in files:
        try:
            with _open_image(p) as im:
                gray = im.mode in ("1", "L", "LA")
                if not images:
                    require_memory(load_bytes((len(files), 1 if gray else 3, im.height, im.width), 1),
                                   f"the {len(files)} images of '{folder}'")
                im = im.convert("L" if gray else "RGB")
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, SyntaxError, EOFError) as err:
            raise ValueError(f"unreadable image '{p}': {' '.join(str(err).split())}") from None
        images.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        if images[-1].shape[1:] != images[0].shape[1:]:
            raise ValueError(f"images in '{folder}' differ in size: '{files[0].name}' is "
                             f"{images[0].shape[2]}x{images[0].shape[1]}, '{p.name}' is {a.shape[1]}x{a.shape[0]}")
    channels = max(a.shape[0] for a in images)
    return np.stack([np.repeat(a, channels // a.shape[0], axis=0) for a in images])
