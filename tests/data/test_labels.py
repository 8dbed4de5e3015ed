"""Class labels in the data (dgm.data.labels, the loaders, dgm.data.spec): each source's labels, their
alignment with the examples after the split, their names, bad labels, and how config.json records them."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from dgm.data import load_data
from dgm.data.builtin_sets import builtin_set
from dgm.data.dataset import split_indices
from dgm.data.files import read_idx
from dgm.data.spec import class_index, data_spec, labels_in, load_run_data, with_labels

MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


def write_idx(path: Path, a: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(header + a.astype(np.uint8).tobytes())
    return path


def indexed_vectors(n: int) -> np.ndarray:
    """(n, 2) float vectors whose first coordinate is the example's index, so a split can be traced back."""
    return np.stack([np.arange(n, dtype=np.float64), np.zeros(n)], 1)


def index_of(d, x: torch.Tensor) -> np.ndarray:
    return np.rint(d.scaling.to_data(x)[:, 0]).astype(int)


def test_gmm2d_labels_are_the_components_that_drew_each_point():
    """Mutation: labels drawn apart from the points, or not split with them -> about 1/8 agree, not 99%."""
    d = load_data("gmm2d")
    assert d.num_classes == 8 and d.label_names == [str(k) for k in range(8)]
    for x, y in ((d.train, d.train_labels), (d.heldout, d.heldout_labels)):
        m = d.density
        most_likely = m._log_joint(x.double(), m.means, m._chol).argmax(1)  # the component of highest posterior
        assert (most_likely == y).double().mean() > 0.99  # the components overlap a little (>= 3 std apart)
    # the labels are the component draw that the points were made from, not a draw of their own (the points'
    # stream, which old runs need unchanged, is checked by tests/test_legacy_runs.py)
    rng = np.random.default_rng(0)
    comp = rng.choice(8, size=20_000, p=np.full(8, 1 / 8))
    assert np.array_equal(builtin_set("gmm2d").labels, comp)


def test_digits_labels_are_sklearns_targets_split_with_the_images(require):
    """Mutation: labels split with other indices than the images."""
    datasets = require("sklearn.datasets")
    target = datasets.load_digits().target
    d = load_data("digits", seed=4)
    train_idx, held_idx = split_indices(len(target), seed=4, fraction=0.1)
    assert np.array_equal(d.train_labels.numpy(), target[train_idx])
    assert np.array_equal(d.heldout_labels.numpy(), target[held_idx])
    assert d.label_names == [str(k) for k in range(10)]


def test_other_toys_stay_unlabelled():
    for name in ("moons", "swissroll", "checkerboard"):
        assert load_data(name).num_classes is None


@pytest.mark.skipif(not MNIST.exists(), reason=f"MNIST test file not found at {MNIST}")
def test_mnist_labels_file_is_found_beside_the_images():
    """The first t10k labels are 7, 2, 1, 0, 4 (LeCun's file); the held-out tail has the file's last labels.
    Mutation: the labels file not found, or its header read as labels."""
    d = load_data(MNIST, heldout_last=1000)
    assert d.train_labels[:5].tolist() == [7, 2, 1, 0, 4] and d.num_classes == 10
    labels = read_idx(MNIST.with_name("t10k-labels-idx1-ubyte.gz"))
    assert np.array_equal(d.heldout_labels.numpy(), labels[-1000:])


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_labels_beside_images(tmp_path, suffix):
    """Mutation: labels paired with the wrong file, or a labels file of the wrong length accepted."""
    images = np.arange(30, dtype=np.uint8)[:, None, None].repeat(4, 1).repeat(4, 2)  # image k is all k
    labels = np.arange(30) % 4
    path = write_idx(tmp_path / f"t-images-idx3-ubyte{suffix}", images)
    assert load_data(path).num_classes is None  # no labels file yet: unlabelled
    write_idx(tmp_path / f"t-labels-idx1-ubyte{suffix}", labels)
    d = load_data(path, seed=1, heldout_fraction=0.2)
    for x, y in ((d.train, d.train_labels), (d.heldout, d.heldout_labels)):
        pixel = np.asarray(d.scaling.to_data(x)).reshape(len(x), -1)[:, 0].astype(int)
        assert np.array_equal(pixel % 4, y.numpy())
    write_idx(tmp_path / f"t-labels-idx1-ubyte{suffix}", labels[:-1])
    with pytest.raises(ValueError, match=r"labels file '.*t-labels-idx1-ubyte.*' holds \(29,\) values for the 30"):
        load_data(path)


def test_npz_integer_labels_follow_their_examples(tmp_path):
    """Mutation: y not split (or shuffled) with x."""
    path = tmp_path / "xy.npz"
    np.savez(path, x=indexed_vectors(50), y=(np.arange(50) * 7) % 5)
    d = load_data(path, seed=3, heldout_fraction=0.3)
    assert d.label_names == ["0", "1", "2", "3", "4"]
    for x, y in ((d.train, d.train_labels), (d.heldout, d.heldout_labels)):
        assert np.array_equal((index_of(d, x) * 7) % 5, y.numpy())
    np.savez(tmp_path / "x_only.npz", x=indexed_vectors(5))
    assert load_data(tmp_path / "x_only.npz").num_classes is None


def test_npz_string_labels_get_sorted_names(tmp_path):
    """Mutation: names in order of appearance instead of sorted, or indices not matching the names."""
    names = np.array(["dog", "cat", "emu"])
    y = names[np.arange(12) % 3]
    np.savez(tmp_path / "s.npz", x=indexed_vectors(12), y=y)
    d = load_data(tmp_path / "s.npz", heldout_fraction=0.25)
    assert d.label_names == ["cat", "dog", "emu"]
    assert [d.label_names[k] for k in d.train_labels] == y[index_of(d, d.train)].tolist()


@pytest.mark.parametrize("y, pattern", [
    (np.zeros(7), "labels must be 7 integers .* got float64"),
    (np.zeros(7, dtype=bool), "labels must be 7 integers .* got bool"),
    (np.array([0, 1, 2, -1, 0, 1, 2]), "labels must be class indices >= 0, got -1"),
    (np.zeros(6, dtype=int), r"labels must be 7 integers .* shape \(6,\)"),
    (np.zeros((7, 2), dtype=int), r"labels must be 7 integers .* of shape \(7, 2\)"),
], ids=["float", "bool", "negative", "too few", "2-D"])
def test_bad_npz_labels_name_the_file_and_the_value(tmp_path, y, pattern):
    path = tmp_path / "bad.npz"
    np.savez(path, x=indexed_vectors(7), y=y)
    with pytest.raises(ValueError, match=f"'{path}' \\(array y\\): {pattern}"):
        load_data(path)


def test_object_labels_are_refused(tmp_path):
    """np.load(allow_pickle=False): an object array of labels cannot be loaded."""
    path = tmp_path / "obj.npz"
    np.savez(path, x=indexed_vectors(3), y=np.array([1, "a", None], dtype=object))
    with pytest.raises(ValueError, match=f"cannot read '{path}'"):
        load_data(path)


def write_class_folders(root: Path, counts: dict[str, int]) -> None:
    """One folder per class; image j of class k (in sorted order) is a 3x5 gray image of value 10 k + j."""
    from PIL import Image

    for k, name in enumerate(sorted(counts)):
        (root / name).mkdir(parents=True)
        for j in range(counts[name]):
            Image.fromarray(np.full((3, 5), 10 * k + j, dtype=np.uint8), mode="L").save(root / name / f"{j}.png")


def test_class_folders_are_labelled_by_folder_name(tmp_path):
    """Mutation: labels counted in another order than the images were read, or names not sorted."""
    write_class_folders(tmp_path / "set", {"zebra": 3, "ant": 4, "mole": 2})
    (tmp_path / "set" / ".hidden").mkdir()
    d = load_data(tmp_path / "set", seed=0, heldout_fraction=0.3)
    assert d.label_names == ["ant", "mole", "zebra"] and len(d.train) + len(d.heldout) == 9
    for x, y in ((d.train, d.train_labels), (d.heldout, d.heldout_labels)):
        value = np.asarray(d.scaling.to_data(x)).reshape(len(x), -1)[:, 0].astype(int)
        assert np.array_equal(value // 10, y.numpy())


def test_flat_folder_stays_unlabelled_and_empty_class_is_an_error(tmp_path):
    from PIL import Image

    write_class_folders(tmp_path / "flat", {"sub": 2})
    Image.fromarray(np.zeros((3, 5), dtype=np.uint8), mode="L").save(tmp_path / "flat" / "top.png")
    d = load_data(tmp_path / "flat", heldout_fraction=0.0)
    assert d.num_classes is None and len(d.train) == 1  # image files at the top: a flat folder, subfolders ignored
    write_class_folders(tmp_path / "classes", {"a": 2})
    (tmp_path / "classes" / "b").mkdir()
    with pytest.raises(ValueError, match="class folder '.*classes/b' holds no image files"):
        load_data(tmp_path / "classes")


def test_explicit_labels_win_and_are_checked():
    d = load_data("gmm2d", labels=np.arange(20_000) % 2, label_names=["even", "odd"], heldout_fraction=0.5)
    assert d.label_names == ["even", "odd"] and torch.equal(d.train_labels, torch.from_numpy(
        np.arange(20_000)[split_indices(20_000, seed=0, fraction=0.5)[0]] % 2))
    with pytest.raises(ValueError, match="label 'c' is not one of the class names"):
        load_data(indexed_vectors(3), labels=["a", "b", "c"], label_names=["a", "b"])


def test_config_records_the_classes_and_old_specs_still_load(tmp_path):
    """with_labels -> config.json -> load_run_data and class_index; a spec without them (an old config.json)
    loads as before. Mutation: a changed data set not noticed, or a name mapped to the wrong index."""
    np.savez(tmp_path / "s.npz", x=indexed_vectors(12), y=np.array(["b", "a", "c"] * 4))
    spec = data_spec(str(tmp_path / "s.npz"))
    d = load_run_data(spec)
    recorded = with_labels(spec, d)
    assert recorded == spec | {"num_classes": 3, "label_names": ["a", "b", "c"]}
    assert load_run_data(recorded).num_classes == 3
    assert class_index(recorded, "c") == 2 and class_index(recorded, "1") == 1
    with pytest.raises(ValueError, match="unknown class 'd'; the classes are a, b, c"):
        class_index(recorded, "d")
    with pytest.raises(ValueError, match="no classes"):
        class_index(spec, "a")
    assert class_index({"spec": "x", "num_classes": 3, "label_names": ["1", "10", "2"]}, "2") == 2  # a name first
    assert class_index({"spec": "x", "num_classes": 3, "label_names": ["1", "10", "2"]}, "1") == 0
    np.savez(tmp_path / "s.npz", x=indexed_vectors(12), y=np.array(["b", "a", "d"] * 4))
    with pytest.raises(ValueError, match="changed since the run was trained"):
        load_run_data(recorded)
    with pytest.raises(ValueError, match="has no class labels; give an .npz"):
        with_labels({"spec": "moons"}, load_data("moons"))
    old = {"spec": "gmm2d", "seed": 0, "heldout_fraction": 0.1}  # written before labels existed
    assert load_run_data(old).num_classes == 8


def test_labels_in_maps_by_name():
    """dgm eval --data: labels matched to the run's classes by name. Mutation: indices taken as they are."""
    data = load_data(indexed_vectors(6), labels=np.array(["b", "a", "b", "a", "b", "b"]), heldout_fraction=0.0)
    assert labels_in(data, ["x", "b", "a"], "--data").tolist() == [1, 2, 1, 2, 1, 1]
    with pytest.raises(ValueError, match="--data has the class 'a', which the run was not trained on"):
        labels_in(data, ["b"], "--data")
    assert labels_in(load_data("moons"), ["a"], "--data") is None
