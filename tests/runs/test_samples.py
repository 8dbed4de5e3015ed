"""``write_samples`` (``dgm sample``): streamed .npy equal to the in-memory file, sizes refused before any draw,
no NaN ever written, nothing half written, an existing output never lost."""

import json

import numpy as np
import pytest
import torch

from dgm.data import Scaling
from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
from dgm.runs import resources, samples
from dgm.runs.samples import sample_model, write_samples

VECTOR = Scaling("vector", (3,), (1.0, -2.0, 0.5), (2.0, 0.5, 1.0), "float32")
IMAGE = Scaling("image", (1, 4, 4), 127.5, 127.5, "uint8", bins=256, layout="NHWC")


class Stub:
    """A model whose ``sample`` draws N(0, I) from the generator (and counts its calls); ``nan_at``: draws
    with that index are NaN."""

    def __init__(self, shape, nan_at=()):
        self.shape, self.nan_at, self.calls = shape, set(nan_at), 0
        self.drawn = 0

    def sample(self, n, *, generator=None, **kw):
        self.calls += 1
        x = torch.randn(n, *self.shape, generator=generator)
        for k in range(self.drawn, self.drawn + n):
            if k in self.nan_at:
                x[k - self.drawn].view(-1)[0] = float("nan")
        self.drawn += n
        return x


def _expected(model, n, scaling, seed=0, chunk=4096):
    """What ``np.save`` writes for the in-memory samples: the reference the streamed file must equal."""
    return np.asarray(scaling.to_data(sample_model(model, n, seed=seed, sampler=None, steps=None, chunk=chunk)))


@pytest.mark.parametrize("scaling", [VECTOR, IMAGE], ids=["vector", "image"])
def test_streamed_npy_equals_np_save_byte_for_byte(scaling, tmp_path):
    """Streamed in chunks of 3 over 10 samples (a short last chunk) against np.save of the same draws held in
    memory: catches a dropped or repeated chunk, a wrong header (shape, dtype, layout) and any byte of
    difference from np.save."""
    out = tmp_path / "s.npy"
    write_samples(Stub(scaling.shape), 10, out, scaling, seed=4, chunk=3)
    ref = tmp_path / "ref.npy"
    np.save(ref, _expected(Stub(scaling.shape), 10, scaling, seed=4, chunk=3))
    assert out.read_bytes() == ref.read_bytes()
    assert np.load(out).shape == ((10, 3) if scaling is VECTOR else (10, 4, 4, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npy", "s.npy"]  # no temporary left


@pytest.mark.parametrize("suffix", [".npy", ".png"])
def test_a_nan_is_an_error_and_the_old_file_survives(suffix, tmp_path):
    """A NaN in the second chunk (sample 4): ValueError naming it, the existing file untouched, no temporary
    left. Catches writing the first chunk before checking the rest, and a NaN passed on (to_data casts it)."""
    out = tmp_path / f"s{suffix}"
    out.write_bytes(b"the previous samples")
    with pytest.raises(ValueError, match=r"sample 4 \(and 0 more of draws 3..5\) holds a NaN"):
        write_samples(Stub((3,), nan_at={4}), 9, out, VECTOR, seed=0, chunk=3)
    assert out.read_bytes() == b"the previous samples"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def test_too_many_samples_for_the_disk_are_refused_before_any_draw(tmp_path):
    """-n 10^12 of 3 float32: 12 TB, more than the disk: refused with the sizes, the model never called.
    Catches a check after sampling (or none: 10^12 draws would never end)."""
    model = Stub((3,))
    with pytest.raises(resources.ResourceError, match=r"1,000,000,000,000 samples .* needs 10.9 TiB on disk"):
        write_samples(model, 10**12, tmp_path / "s.npy", VECTOR, seed=0)
    assert model.calls == 0 and not list(tmp_path.iterdir())


def test_the_file_size_limit_is_checked_too(tmp_path, monkeypatch):
    """``ulimit -f``: a file larger than RLIMIT_FSIZE would fail mid-write; it is refused up front."""
    monkeypatch.setattr(resources, "file_size_limit", lambda: 1000)
    with pytest.raises(resources.ResourceError, match="file-size limit"):
        write_samples(Stub((3,)), 100, tmp_path / "s.npy", VECTOR, seed=0)
    write_samples(Stub((3,)), 10, tmp_path / "s.npy", VECTOR, seed=0)  # 128 + 120 bytes: fits
    assert (tmp_path / "s.npy").stat().st_size == 248


def test_npy_streams_when_memory_is_short_and_png_is_refused(tmp_path, monkeypatch):
    """With 1 MB of memory "available", 200,000 vectors (2.4 MB) still stream to .npy, drawn 4096 at a time,
    while the .png (every sample in memory) is refused before any draw. Catches a .npy built in memory."""
    monkeypatch.setattr(resources, "available_memory", lambda: 1 << 20)
    model = Stub((3,))
    write_samples(model, 200_000, tmp_path / "s.npy", VECTOR, seed=0)
    assert model.calls == 49 and np.load(tmp_path / "s.npy").shape == (200_000, 3)
    png = Stub((3,))
    with pytest.raises(resources.ResourceError, match="a picture of 200,000 samples needs about"):
        write_samples(png, 200_000, tmp_path / "s.png", VECTOR, seed=0)
    assert png.calls == 0 and not (tmp_path / "s.png").exists()


def test_cli_refuses_a_huge_n_in_one_line(tmp_path, one_line_error):
    """``dgm sample DIR -n 1000000000000``: one line naming the sizes, exit 2, no file."""
    torch.manual_seed(0)
    config = {"kind": "ddpm", "data_shape": [2], "levels": 5,
              "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}}
    model = build_model(config)
    scaling = Scaling("vector", (2,), 0.0, 1.0, "float32")
    ckpt.write_config(tmp_path, json.loads(json.dumps({"model": model.config(), "scaling": scaling.to_dict()})))
    tensors = {f"{p}.{k}": v.clone() for p in ("model", "ema") for k, v in model.state_dict().items()}
    ckpt.save_weights(tmp_path / ckpt.WEIGHTS, tensors, step=1, kind="ddpm")
    line = one_line_error(["sample", str(tmp_path), "-n", str(10**12), "--out", str(tmp_path / "s.npy")])
    assert "needs 7.28 TiB on disk" in line and not (tmp_path / "s.npy").exists()
    assert samples.CHUNK == 4096
