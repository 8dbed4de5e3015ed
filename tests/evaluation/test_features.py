"""dgm.evaluation.features: the shipped digit feature nets, on held-out digits, and the feature space's ranking
of real, blurred and noise images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dgm.evaluation import features as feat
from dgm.evaluation.distances import frechet_distance
from dgm.evaluation.metrics import quality_metrics

MNIST_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------- feature net


@pytest.mark.parametrize("shape", [(7, 1, 8, 8), (7, 8, 8), (7, 64), (5, 1, 28, 28), (5, 784)])
def test_features_shape_dtype_finite(shape):
    x = torch.rand(shape, generator=gen(18)) * 2 - 1
    f = feat.features(x)
    assert f.shape == (shape[0], feat.FEATURE_DIM) and f.dtype == torch.float64
    assert torch.isfinite(f).all()


@pytest.mark.parametrize("shape", [(4, 1, 16, 16), (4, 3, 8, 8), (4, 1, 8, 9), (4,), (4, 2)])
def test_features_rejects_unsupported_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        feat.features(torch.zeros(shape))
    with pytest.raises(ValueError):
        feat.load_feature_net(shape[1:] or (0,))


def test_load_feature_net_by_kind_and_shape():
    assert feat.load_feature_net("digits8") is feat.load_feature_net((1, 8, 8))
    assert feat.load_feature_net((28, 28)).kind == "mnist28"
    with pytest.raises(ValueError):
        feat.load_feature_net("cifar10")


def test_feature_net_classifies_heldout_digits():
    _, _, x, y = feat.training_data("digits8")
    assert len(y) == 360
    acc = float((feat.classify(x) == y).double().mean())
    assert acc > 0.93


@pytest.mark.skipif(not (MNIST_DIR / feat.MNIST_FILES[0]).is_file(), reason="MNIST t10k files not present")
def test_feature_net_classifies_heldout_mnist():
    _, _, x, y = feat.training_data("mnist28", MNIST_DIR)
    assert len(y) == 1000
    assert float((feat.classify(x) == y).double().mean()) > 0.97


def blur(x: torch.Tensor) -> torch.Tensor:
    """3x3 binomial blur (weights 1 2 1 / 4 per axis), edges replicated."""
    k = torch.tensor([0.25, 0.5, 0.25])
    x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), (k[:, None] * k[None, :]).view(1, 1, 3, 3))
    return x


def test_feature_space_ranks_real_blurred_noise():
    x = torch.cat(feat.training_data("digits8")[::2])
    perm = torch.randperm(len(x), generator=gen(19))
    a, b = x[perm[: len(x) // 2]], x[perm[len(x) // 2 :]]
    fa = feat.features(a)
    fd = [frechet_distance(fa, feat.features(other))
          for other in (b, blur(b), blur(blur(b)), torch.rand(b.shape, generator=gen(20)) * 2 - 1)]
    assert fd[0] < 0.2 * fd[1] and fd[1] < fd[2] < fd[3]
    out = quality_metrics(x, blur(blur(x)), kind="image", names=["fd", "recall"], generator=gen(0))
    assert out["fd"] > 10 * out["fd_floor"] and out["recall"] < 0.5 * out["recall_floor"]
