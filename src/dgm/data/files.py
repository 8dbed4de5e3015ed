"""Reading data files into raw arrays and their class labels, and checking them: ``.npy``/``.npz`` arrays,
folders of images and MNIST IDX files (LeCun's format, gzipped or raw).

A raw array is continuous vectors, float (N, D), or uint8 images (N, H, W), (N, C, H, W) or (N, H, W, C)
with C in {1, 3}; ``check_array`` tells which (and the layout) or names what is wrong. Labels
(``dgm.data.labels``): ``y`` in an ``.npz``, the labels file beside MNIST images, class subfolders.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
from torch import Tensor

from dgm.data.labels import encode_labels, idx_labels_path

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
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded, None, None
        with loaded:
            keys = list(loaded.files)
            if not keys:
                raise ValueError(f"'{path}' holds no arrays")
            raw = loaded["x" if "x" in keys else "data" if "data" in keys else keys[0]]
            y = loaded["y"] if "y" in keys and "x" in keys else None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read '{path}': {err}") from None
    except ValueError as err:  # e.g. an object array, which would need pickle
        raise ValueError(f"cannot read '{path}': {err}") from None
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
    """Parse an IDX file (LeCun's MNIST format), gzipped or raw: magic 0 0 type ndim, big-endian dims."""
    try:
        with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
            buf = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read IDX file '{path}': {err}") from None
    if len(buf) < 4 or buf[0] or buf[1] or buf[2] not in _IDX_TYPES:
        raise ValueError(f"'{path}' is not an IDX file (bad magic number {buf[:4].hex()})")
    ndim, header = buf[3], 4 + 4 * buf[3]
    if len(buf) < header:
        raise ValueError(f"IDX file '{path}' is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = np.dtype(_IDX_TYPES[buf[2]])
    if len(buf) - header != math.prod(dims) * dtype.itemsize:
        raise ValueError(f"IDX file '{path}' holds {len(buf) - header} data bytes but its header "
                         f"{dims} needs {math.prod(dims) * dtype.itemsize}")
    return np.frombuffer(buf, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


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
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
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


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_images(files: list[Path], folder: Path) -> np.ndarray:
    """The images ``files`` -> uint8 (N, C, H, W), as ``read_image_folder`` describes."""
    from PIL import Image

    images = []
    for p in files:
        try:
            with Image.open(p) as im:
                if im.mode in ("I", "I;16", "I;16B", "F"):
                    raise ValueError(f"image '{p}' has {im.mode} pixels; only 8-bit images are supported")
                im = im.convert("L" if im.mode in ("1", "L", "LA") else "RGB")
                a = np.asarray(im, dtype=np.uint8)
        except (OSError, SyntaxError) as err:
            raise ValueError(f"unreadable image '{p}': {err}") from None
        images.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
        if images[-1].shape[1:] != images[0].shape[1:]:
            raise ValueError(f"images in '{folder}' differ in size: '{files[0].name}' is "
                             f"{images[0].shape[2]}x{images[0].shape[1]}, '{p.name}' is {a.shape[1]}x{a.shape[0]}")
    channels = max(a.shape[0] for a in images)
    return np.stack([np.repeat(a, channels // a.shape[0], axis=0) for a in images])
