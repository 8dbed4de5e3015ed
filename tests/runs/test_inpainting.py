"""``dgm.runs.inpainting``: reading inputs and masks in a run's data space, completions that keep the known
pixels of their own input, the grid, and one-line errors."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from dgm.data import Scaling
from dgm.models import build_model
from dgm.runs.inpainting import inpaint, inpainting_grid, read_input, read_mask

DIGITS = Scaling("image", (1, 8, 8), 8.0, 8.0, "float64", bins=17, layout="NCHW")  # the digits' scaling
GREY = Scaling("image", (1, 8, 8), 127.5, 127.5, "uint8", bins=256, layout="NHW")  # a uint8 (N, H, W) set
VECTORS = Scaling("vector", (2,), 0.0, 1.0, "float64")


def tiny_ddpm():
    torch.manual_seed(0)
    return build_model({"kind": "ddpm", "data_shape": [1, 8, 8], "levels": 20, "net": {
        "kind": "unet", "base_channels": 8, "image_size": 8, "num_res_blocks": 1, "groups": 4, "head_channels": 8}})


def test_read_input_accepts_the_runs_layouts(tmp_path):
    """(N, 1, H, W), grey (N, H, W) and one (H, W) example all land in model space. Catches data not scaled
    (digits 0..16 must map to [-1, 1]) or a grey array mistaken for N channels."""
    x = np.random.default_rng(0).integers(0, 17, (3, 8, 8)).astype(np.float64)
    for arr in (x[:, None], x):
        np.save(tmp_path / "x.npy", arr)
        got = read_input(tmp_path / "x.npy", DIGITS)
        assert got.shape == (3, 1, 8, 8) and torch.allclose(got[:, 0], torch.from_numpy(x / 8 - 1).float())
    np.save(tmp_path / "one.npy", x[0])
    assert read_input(tmp_path / "one.npy", DIGITS).shape == (1, 1, 8, 8)
    img = Image.fromarray(np.full((8, 8), 255, np.uint8))
    img.save(tmp_path / "x.png")
    assert torch.equal(read_input(tmp_path / "x.png", GREY), torch.ones(1, 1, 8, 8))


@pytest.mark.parametrize("make, match", [
    (lambda p: np.save(p / "in.npy", np.zeros((2, 7, 8))), r"has shape \(2, 7, 8\); expected \(N, 1, 8, 8\)"),
    (lambda p: np.save(p / "in.npy", np.full((1, 8, 8), np.nan)), "holds NaN"),
    (lambda p: (p / "in.npy").write_bytes(b"not an array"), "cannot read"),
    (lambda p: Image.fromarray(np.zeros((9, 8), np.uint8)).save(p / "in.png"), r"image of shape \(1, 9, 8\)"),
    (lambda p: None, "does not exist"),
], ids=["shape", "nan", "garbage", "png size", "missing"])
def test_bad_inputs(tmp_path, make, match):
    make(tmp_path)
    path = tmp_path / "in.png" if (tmp_path / "in.png").exists() else tmp_path / "in.npy"
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        read_input(path, DIGITS)


def test_read_mask_forms(tmp_path):
    """A bool or 0/1 .npy of (H, W) or (1, H, W), or a .png with light = known, give the same mask."""
    m = np.zeros((8, 8), bool)
    m[:, :3] = True
    np.save(tmp_path / "a.npy", m)
    np.save(tmp_path / "b.npy", m[None].astype(np.uint8))
    Image.fromarray(np.where(m, 255, 0).astype(np.uint8)).save(tmp_path / "c.png")
    want = torch.from_numpy(m)[None]
    for name in ("a.npy", "b.npy", "c.png"):
        assert torch.equal(read_mask(tmp_path / name, DIGITS), want), name
    np.save(tmp_path / "bad.npy", np.full((8, 8), 0.5))
    with pytest.raises(ValueError, match="only 0/1"):
        read_mask(tmp_path / "bad.npy", DIGITS)
    np.save(tmp_path / "none.npy", np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="marks no pixel as known"):
        read_mask(tmp_path / "none.npy", DIGITS)
    np.save(tmp_path / "wrong.npy", np.ones((4, 4), bool))
    with pytest.raises(ValueError, match=r"has shape \(4, 4\)"):
        read_mask(tmp_path / "wrong.npy", DIGITS)
    with pytest.raises(ValueError, match="needs an image run"):
        read_mask(tmp_path / "c.png", VECTORS)


def test_completions_keep_their_own_inputs_known_pixels():
    """With "replace" (y taken as noiseless) every completion equals its own input on the known pixels.
    Catches the mask inverted, or the K rows of y repeated input-major instead of per input (completion k of
    input 0 would carry input 1's pixels)."""
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[..., :4] = True
    done, stats = inpaint(tiny_ddpm(), x, mask, method="replace", per_input=3, steps=5, seed=1)
    assert done.shape == (2, 3, 1, 8, 8) and stats["nfe"] == 5
    for n in range(2):
        assert torch.allclose(done[n][:, mask], x[n][mask].expand(3, -1), atol=1e-6)
    assert not torch.allclose(done[0, 0], done[0, 1])  # the K completions are distinct draws


def test_inpaint_refuses_bad_settings():
    x, mask = torch.zeros(1, 1, 8, 8), torch.ones(1, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="unknown --method 'magic'"):
        inpaint(tiny_ddpm(), x, mask, method="magic")
    with pytest.raises(ValueError, match="--noise must be"):
        inpaint(tiny_ddpm(), x, mask, method="smc", noise=float("nan"))
    with pytest.raises(ValueError, match=r"the mask has shape \(1, 4, 4\)"):
        inpaint(tiny_ddpm(), x, torch.ones(1, 4, 4, dtype=torch.bool), method="smc")
    vae = build_model({"kind": "vae", "data_shape": [2], "latent_dim": 2, "hidden": [8]})
    with pytest.raises(ValueError, match="needs a pixel-space DDPM run; this run is a vae"):
        inpaint(vae, torch.zeros(1, 2), torch.ones(2, dtype=torch.bool), method="smc")


def test_grid_has_a_row_per_input_and_a_column_per_picture():
    """Input, mask, K completions and the truth: 2 + K + 1 tiles a row."""
    x = torch.zeros(2, 1, 8, 8)
    mask = torch.ones(1, 8, 8, dtype=torch.bool)
    png = inpainting_grid(x, mask, torch.zeros(2, 3, 1, 8, 8), truth=x)
    w, h = Image.open(io.BytesIO(png)).size
    zoom = 4  # 32 px a tile for 8x8 images
    assert (w, h) == ((6 * 9 + 1) * zoom, (2 * 9 + 1) * zoom)
