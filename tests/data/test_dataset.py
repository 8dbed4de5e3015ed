"""dgm.data: built-in sets, user files, the held-out split, labels, the scaling round trip and bad input."""

import gzip
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dgm.data import BUILTINS, DataSet, Scaling, load_data

MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


def write_idx(path: Path, a: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(header + a.astype(np.uint8).tobytes())
    return path


def uint8_images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("name", ["gmm2d", "moons", "swissroll", "checkerboard"])
def test_toy_sets_are_standardised_2d_vectors(name):
    d = load_data(name)
    assert isinstance(d, DataSet) and d.name == name
    assert d.train.shape == (18_000, 2) and d.heldout.shape == (2_000, 2)
    assert d.train.dtype == torch.float32 and d.bins is None and d.dim == 2
    torch.testing.assert_close(d.train.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.train.std(0), torch.ones(2), atol=1e-3, rtol=0)
    assert d.scaling.kind == "vector" and d.scaling.shape == (2,)
    assert (d.density is not None) == (name == "gmm2d")


def test_gmm2d_density_is_in_model_space():
    d = load_data("gmm2d")
    x = d.heldout[:500].double()
    from dgm.data.builtin_sets import builtin_set

    data_density = builtin_set("gmm2d").density
    data = torch.from_numpy(d.scaling.to_data(x))
    # change of variables: log p_model(x) = log p_data(data) + sum log scale
    torch.testing.assert_close(d.density.log_prob(x), data_density.log_prob(data) + d.scaling.log_abs_det())
    # the held-out log-likelihood under the true density is close to its entropy (Monte Carlo)
    assert abs(d.density.log_prob(d.heldout.double()).mean().item() + d.density.entropy(20_000)) < 0.1


def test_digits_are_17_level_images():
    d = load_data("digits")
    assert d.train.shape[1:] == (1, 8, 8) and len(d.train) + len(d.heldout) == 1797
    assert d.bins == 17 and d.dim == 64
    levels = torch.unique(torch.cat([d.train, d.heldout]))
    torch.testing.assert_close(levels, torch.arange(17) / 8.0 - 1.0)
    from sklearn.datasets import load_digits

    full = load_data("digits", heldout_fraction=0.0)
    assert np.array_equal(full.scaling.to_data(full.train), load_digits().images[:, None])


def test_builtins_are_fixed_and_split_depends_on_seed():
    a, b, c = load_data("moons", seed=0), load_data("moons", seed=0), load_data("moons", seed=1)
    assert torch.equal(a.train, b.train) and torch.equal(a.heldout, b.heldout)
    assert not torch.equal(a.heldout, c.heldout)
    both = lambda d: np.sort(d.scaling.to_data(torch.cat([d.train, d.heldout])), 0)  # noqa: E731
    np.testing.assert_allclose(both(a), both(c), atol=1e-5)  # the same examples in data space


@pytest.mark.parametrize("layout,shape", [("NHW", (30, 6, 5)), ("NCHW", (30, 3, 6, 5)), ("NHWC", (30, 6, 5, 3)),
                                          ("NCHW", (30, 1, 6, 5))])
def test_uint8_image_files_round_trip_exactly(tmp_path, layout, shape):
    raw = uint8_images(shape)
    np.save(tmp_path / "x.npy", raw)
    d = load_data(tmp_path / "x.npy", heldout_fraction=0.0)
    channels = 1 if layout == "NHW" else 3 if 3 in shape[1:2] + shape[3:] else 1
    assert d.train.shape == (30, channels, 6, 5) and d.bins == 256 and d.scaling.layout == layout
    assert d.train.min() >= -1 and d.train.max() <= 1
    back = d.scaling.to_data(d.train)
    assert back.dtype == np.uint8 and np.array_equal(back, raw)
    noisy = d.train + 0.3 / 127.5 * torch.randn(d.train.shape).clamp(-1, 1)  # within half a bin
    assert np.array_equal(d.scaling.to_data(noisy), raw)
    assert np.array_equal(d.scaling.to_data(torch.full_like(d.train, 5.0)), np.full_like(raw, 255))


def test_float_vectors_npy_and_npz(tmp_path):
    raw = np.random.default_rng(0).normal(3.0, 2.0, (200, 4)).astype(np.float32)
    np.save(tmp_path / "v.npy", raw)
    np.savez(tmp_path / "v.npz", labels=np.arange(200), x=raw)
    np.savez(tmp_path / "first.npz", raw)
    for name in ("v.npy", "v.npz", "first.npz"):
        d = load_data(tmp_path / name)
        assert d.train.shape == (180, 4) and d.heldout.shape == (20, 4) and d.bins is None
        assert d.scaling.dtype == "float32"
        back = d.scaling.to_data(torch.cat([d.train, d.heldout]))
        assert back.dtype == np.float32
    s = d.scaling
    assert math.isclose(s.log_abs_det(), float(np.log(s.scale).sum()))
    np.testing.assert_allclose(s.to_data(s.to_model(raw)), raw, rtol=1e-5, atol=1e-5)


def test_constant_dimension_gets_unit_scale():
    raw = np.ones((10, 2))
    raw[:, 0] = np.arange(10)
    d = load_data(raw)
    assert d.scaling.scale[1] == 1.0 and torch.isfinite(d.train).all()


def test_image_folder(tmp_path):
    from PIL import Image

    raw = uint8_images((4, 7, 9))
    for k, a in enumerate(raw):
        Image.fromarray(a, mode="L").save(tmp_path / f"img{k}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    d = load_data(tmp_path, heldout_fraction=0.0)
    assert d.train.shape == (4, 1, 7, 9) and np.array_equal(d.scaling.to_data(d.train)[:, 0], raw)
    rgb = uint8_images((7, 9, 3), seed=1)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "rgb.png")
    d = load_data(tmp_path, heldout_fraction=0.0)
    assert d.train.shape == (5, 3, 7, 9)
    assert np.array_equal(d.scaling.to_data(d.train)[4].transpose(1, 2, 0), rgb)


def test_idx_files_raw_and_gz(tmp_path):
    raw = uint8_images((50, 4, 4))
    for name in ("t-images-idx3-ubyte", "t-images-idx3-ubyte.gz"):
        d = load_data(write_idx(tmp_path / name, raw), heldout_last=10)
        assert d.train.shape == (40, 1, 4, 4) and d.heldout.shape == (10, 1, 4, 4)
        assert np.array_equal(d.scaling.to_data(d.heldout), raw[40:])


def test_random_split_is_deterministic_and_disjoint():
    raw = np.arange(100, dtype=np.float64)[:, None]
    a, b = load_data(raw, seed=3, heldout_fraction=0.25), load_data(raw, seed=3, heldout_fraction=0.25)
    assert torch.equal(a.heldout, b.heldout) and len(a.heldout) == 25
    ids = lambda d, t: set(np.rint(d.scaling.to_data(t)[:, 0]).astype(int))  # noqa: E731
    assert ids(a, a.train).isdisjoint(ids(a, a.heldout)) and len(ids(a, a.train) | ids(a, a.heldout)) == 100


def test_scaling_json_round_trip_and_reuse():
    for d in (load_data("digits"), load_data("moons")):
        s = d.scaling
        copy = Scaling.from_dict(json.loads(json.dumps(s.to_dict())))
        assert copy == s
        assert torch.equal(copy.to_model(s.to_data(d.heldout)), d.heldout)
    moons = load_data("moons")
    again = load_data(moons.scaling.to_data(moons.heldout), scaling=moons.scaling, heldout_fraction=0.0)
    torch.testing.assert_close(again.train, moons.heldout)


@pytest.mark.skipif(not MNIST.exists(), reason=f"MNIST test file not found at {MNIST}")
def test_mnist_idx_with_tail_split():
    d = load_data(MNIST, heldout_last=1000)
    assert d.train.shape == (9000, 1, 28, 28) and d.heldout.shape == (1000, 1, 28, 28)
    assert d.bins == 256 and d.train.min() == -1 and d.train.max() == 1


def bad_inputs(tmp_path: Path) -> dict:
    """name -> (spec, pattern the ValueError message must contain)."""
    cases = {
        "unknown builtin": ("mnistt", "gmm2d, moons, swissroll, checkerboard, digits"),
        "missing path": (str(tmp_path / "nope.npy"), "no such file"),
        "empty set": (np.zeros((0, 3)), "empty"),
        "wrong ndim": (np.zeros(5), "1 dimensions"),
        "int vectors": (np.zeros((5, 3), dtype=np.int64), "must be float"),
        "float images": (np.zeros((5, 8, 8), dtype=np.float32), "uint8"),
        "bad channels": (np.zeros((5, 2, 8, 8), dtype=np.uint8), "channel axis"),
        "nan": (np.array([[0.0, np.nan]]), "NaN"),
        "inf": (np.array([[0.0, np.inf]]), "Inf"),
        "complex": (np.zeros((5, 3), dtype=complex), "dtype"),
    }
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    cases["unreadable image"] = (tmp_path / "bad", "unreadable image")
    from PIL import Image

    (tmp_path / "sizes").mkdir()
    Image.fromarray(uint8_images((4, 4))).save(tmp_path / "sizes" / "a.png")
    Image.fromarray(uint8_images((5, 4))).save(tmp_path / "sizes" / "b.png")
    cases["mixed sizes"] = (tmp_path / "sizes", "differ in size")
    (tmp_path / "empty").mkdir()
    cases["empty folder"] = (tmp_path / "empty", "no image files")
    (tmp_path / "x.csv").write_text("1,2\n")
    cases["unsupported file"] = (tmp_path / "x.csv", "unsupported data file")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    cases["corrupt npy"] = (tmp_path / "junk.npy", "cannot read")
    np.save(tmp_path / "obj.npy", np.array([{}], dtype=object), allow_pickle=True)
    cases["object npy"] = (tmp_path / "obj.npy", "cannot read")
    write_idx(tmp_path / "short-idx3-ubyte", uint8_images((3, 4, 4)))
    (tmp_path / "short-idx3-ubyte").write_bytes((tmp_path / "short-idx3-ubyte").read_bytes()[:-5])
    cases["truncated idx"] = (tmp_path / "short-idx3-ubyte", "needs 48")
    (tmp_path / "magic-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04")
    cases["bad idx magic"] = (tmp_path / "magic-idx3-ubyte", "not an IDX file")
    return cases


def test_bad_inputs_raise_value_error_naming_the_problem(tmp_path):
    for case, (spec, pattern) in bad_inputs(tmp_path).items():
        with pytest.raises(ValueError) as info:
            load_data(spec)
        assert pattern in str(info.value), (case, str(info.value))


def test_bad_split_arguments():
    with pytest.raises(ValueError, match="heldout_fraction"):
        load_data("moons", heldout_fraction=1.0)
    with pytest.raises(ValueError, match="heldout_last"):
        load_data(np.zeros((5, 2)), heldout_last=5)
    with pytest.raises(ValueError, match="vector"):
        load_data(uint8_images((3, 4, 4)), scaling=load_data("moons").scaling)


def test_builtin_list():
    assert set(BUILTINS) == {"gmm2d", "moons", "swissroll", "checkerboard", "digits"}


def test_scaling_validates_its_fields():
    for kwargs, pattern in [
        ({"kind": "audio"}, "kind"),
        ({"scale": [1.0, 2.0, 3.0]}, "3 values"),
        ({"scale": 0.0}, "positive"),
        ({"bins": 1}, "bins"),
        ({"dtype": "nonsense"}, "dtype"),
        ({"layout": "NCHW"}, "layout"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            Scaling(**{"kind": "vector", "shape": (2,), "shift": 0.0, "scale": 1.0, "dtype": "float64", **kwargs})


def test_labels_default_to_none_and_follow_the_split():
    d = load_data("moons")
    assert d.train_labels is None and d.heldout_labels is None and d.label_names is None
    raw = np.arange(40, dtype=np.float64)[:, None]
    d = load_data(raw, labels=np.arange(40) % 3, label_names=["a", "b", "c"], seed=2, heldout_fraction=0.25)
    assert d.train_labels.dtype == torch.int64 and len(d.heldout_labels) == len(d.heldout) == 10
    for x, y in ((d.train, d.train_labels), (d.heldout, d.heldout_labels)):
        index = np.rint(d.scaling.to_data(x)[:, 0]).astype(int)
        assert np.array_equal(index % 3, y.numpy())  # each label stays with its example
    last = load_data(raw, labels=np.arange(40) % 3, heldout_last=4)
    assert last.heldout_labels.tolist() == [36 % 3, 37 % 3, 38 % 3, 39 % 3]


def test_bad_labels_are_a_clear_error():
    raw = np.zeros((6, 2))
    with pytest.raises(ValueError, match="6 integers"):
        load_data(raw, labels=np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="6 integers"):
        load_data(raw, labels=np.zeros(6))
    with pytest.raises(ValueError, match="0..1"):
        load_data(raw, labels=np.arange(6), label_names=["a", "b"])
    train, held = torch.zeros(3, 2), torch.zeros(1, 2)
    scaling = load_data(raw).scaling
    with pytest.raises(ValueError, match="both"):
        DataSet("x", train, held, scaling, train_labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="LongTensor of shape \\(3,\\)"):
        DataSet("x", train, held, scaling, train_labels=torch.zeros(3), heldout_labels=torch.zeros(1, dtype=torch.long))
    with pytest.raises(ValueError, match="label_names"):
        DataSet("x", train, held, scaling, label_names=("a", "b"))


def test_builtin_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    from dgm.data.spec import data_spec

    (tmp_path / "gmm2d").mkdir()
    monkeypatch.chdir(tmp_path)
    assert data_spec("gmm2d")["spec"] == "gmm2d"
    assert data_spec("./gmm2d")["spec"] == str((tmp_path / "gmm2d").resolve())
