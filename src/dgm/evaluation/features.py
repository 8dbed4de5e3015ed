"""The shipped digit feature network: an offline stand-in for Inception in sample-quality metrics.

FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) compare the statistics of real and generated
images in the feature space of a pretrained classifier. Inception v3 needs downloaded weights and 299x299
RGB inputs; dgm's image sets are small grey digits, so dgm ships two tiny CNN digit classifiers
(weights in ``dgm/assets/feature_net.safetensors``, about 0.2 MB, trained by
``scripts/train_feature_net.py``; accuracies in ``dgm/assets/feature_net.json``):

- ``digits8``:  scikit-learn's 8x8 digits, input (N, 1, 8, 8);
- ``mnist28``:  MNIST, input (N, 1, 28, 28).

The net is chosen by the image size (no resizing: an upsampled 8x8 digit does not look like an MNIST
digit, so one shared net would see two different distributions). Inputs are in dgm's **model space**:
pixel values mapped linearly to [-1, 1] (background -1, ink +1). The feature space is the penultimate
layer (the ReLU activations that feed the final linear classifier), ``FEATURE_DIM`` = 64 dims, as FID
uses Inception's last pooling layer, scaled by one constant per net so that their mean square over the
training images is 1. Feature values from different nets are not comparable.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import torch
from torch import nn

FEATURE_DIM = 64
NUM_CLASSES = 10
WEIGHTS_FILE = "feature_net.safetensors"
CARD_FILE = "feature_net.json"

# kind -> (image side, channels of the three 3x3 conv layers, side after the two/three 2x2 poolings)
ARCHITECTURES: dict[str, dict] = {
    "digits8": {"side": 8, "channels": (16, 32, 32), "pools": (False, True, True)},
    "mnist28": {"side": 28, "channels": (16, 32, 32), "pools": (True, True, True)},
}
KINDS = tuple(ARCHITECTURES)


class DigitFeatureNet(nn.Module):
    """Three 3x3 conv layers (ReLU, 2x2 max-pooling where ``pools`` says), a 64-unit hidden layer
    (the feature space), a dropout and a 10-way linear classifier.

    ``forward(x)``: x (N, 1, side, side) in model space -> logits (N, 10).
    ``features(x)``: -> (N, FEATURE_DIM) penultimate activations (float32).
    """

    def __init__(self, kind: str):
        super().__init__()
        if kind not in ARCHITECTURES:
            raise ValueError(f"unknown feature net {kind!r}; choose one of {KINDS}")
        arch = ARCHITECTURES[kind]
        self.kind = kind
        self.side = arch["side"]
        layers: list[nn.Module] = []
        c_in, side = 1, self.side
        for c_out, pool in zip(arch["channels"], arch["pools"], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(2))
                side //= 2
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, FEATURE_DIM), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.classifier = nn.Linear(FEATURE_DIM, NUM_CLASSES)
        # 1 / RMS of the hidden activations over the training images, set after training, so that
        # features are O(1) (KID's kernel (x . y / D + 1)^3 assumes that) and FDs of the two nets
        # are on similar scales
        self.register_buffer("feature_scale", torch.ones(()))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, side, side) -> (N, FEATURE_DIM): the penultimate layer times ``feature_scale``."""
        return self.hidden(self.conv(x)) * self.feature_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, side, side) -> logits (N, NUM_CLASSES) (of the unscaled hidden layer)."""
        return self.classifier(self.dropout(self.hidden(self.conv(x))))


def kind_for_shape(shape) -> str:
    """The feature-net kind for the shape of ONE example: (1, 8, 8), (8, 8) or (64,) -> "digits8";
    (1, 28, 28), (28, 28) or (784,) -> "mnist28"; anything else raises ValueError."""
    shape = tuple(int(s) for s in shape)
    for kind, arch in ARCHITECTURES.items():
        side = arch["side"]
        if shape in ((1, side, side), (side, side), (side * side,)):
            return kind
    raise ValueError(
        f"no feature net for images of shape {shape}: the shipped nets take grey 8x8 digits "
        f"(1, 8, 8) or 28x28 MNIST-like digits (1, 28, 28)"
    )


def _weights_path():
    return resources.files("dgm").joinpath("assets", WEIGHTS_FILE)


def feature_net_card() -> dict:
    """The JSON card shipped beside the weights (architecture, data, seed, accuracies, command)."""
    return json.loads(resources.files("dgm").joinpath("assets", CARD_FILE).read_text())


@cache
def _load(kind: str) -> DigitFeatureNet:
    from safetensors.torch import load

    net = DigitFeatureNet(kind)
    path = _weights_path()
    if not path.is_file():
        raise FileNotFoundError(
            f"feature-net weights missing at {path}; regenerate them with scripts/train_feature_net.py"
        )
    tensors = load(path.read_bytes())
    prefix = kind + "."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    net.load_state_dict(state)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def load_feature_net(kind_or_shape) -> DigitFeatureNet:
    """The shipped, pretrained feature net in eval mode (cached; do not train it in place).

    ``kind_or_shape``: "digits8" | "mnist28", or the shape of one example (see ``kind_for_shape``).
    """
    kind = kind_or_shape if isinstance(kind_or_shape, str) else kind_for_shape(kind_or_shape)
    if kind not in ARCHITECTURES:
        raise ValueError(f"unknown feature net {kind!r}; choose one of {KINDS}")
    return _load(kind)


def as_images(x, side: int | None = None) -> torch.Tensor:
    """x: (N, 1, s, s), (N, s, s) or flat (N, s*s) for s in 8, 28 -> float32 tensor (N, 1, s, s)."""
    x = torch.as_tensor(x)
    if x.ndim < 2:
        raise ValueError(f"expected a batch of images (N, 1, H, W), got shape {tuple(x.shape)}")
    kind = kind_for_shape(x.shape[1:])
    s = ARCHITECTURES[kind]["side"]
    if side is not None and s != side:
        raise ValueError(f"expected {side}x{side} images, got shape {tuple(x.shape)}")
    x = x.reshape(x.shape[0], 1, s, s).float()
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    return x


@torch.no_grad()
def features(x, *, batch_size: int = 1000) -> torch.Tensor:
    """Feature vectors of a batch of digit images, ready for the metrics of ``dgm.evaluation.metrics``.

    x: (N, 1, 8, 8) or (N, 1, 28, 28) (also (N, H, W) or flat (N, H*W)), model space [-1, 1].
    Returns (N, FEATURE_DIM) float64 on the CPU. Raises ValueError for any other image shape.
    """
    x = as_images(x)
    net = load_feature_net(x.shape[1:])
    out = [net.features(chunk.cpu()) for chunk in x.split(batch_size)]
    if not out:
        return torch.zeros(0, FEATURE_DIM, dtype=torch.float64)
    return torch.cat(out).double()


@torch.no_grad()
def classify(x, *, batch_size: int = 1000) -> torch.Tensor:
    """Predicted digit labels (N,) int64 for images as in ``features``."""
    x = as_images(x)
    net = load_feature_net(x.shape[1:])
    return torch.cat([net(chunk).argmax(1) for chunk in x.split(batch_size)])


# --- the training data of the shipped nets (used by scripts/train_feature_net.py and the tests) ---

DIGITS_N_TRAIN = 1437  # sklearn digits: the first 1437 of 1797 (80%) train, the last 360 are held out
MNIST_N_TRAIN = 9000  # MNIST t10k: the first 9000 train, the last 1000 are held out
MNIST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def training_data(kind: str, mnist_dir=None):
    """(x_train, y_train, x_heldout, y_heldout) of the shipped net ``kind``; x in model space [-1, 1],
    float32 (N, 1, side, side); y int64 (N,). ``mnist_dir`` holds the two MNIST t10k IDX .gz files."""
    from pathlib import Path

    from dgm.data.files import read_idx

    if kind == "digits8":
        from sklearn.datasets import load_digits

        d = load_digits()
        x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # 0..16 -> [-1, 1]
        y = torch.as_tensor(d.target, dtype=torch.int64)
        n = DIGITS_N_TRAIN
    elif kind == "mnist28":
        if mnist_dir is None:
            raise ValueError("mnist28 needs mnist_dir, the folder of the MNIST t10k IDX .gz files")
        images, labels = (Path(mnist_dir) / name for name in MNIST_FILES)
        for p in (images, labels):
            if not p.is_file():
                raise FileNotFoundError(f"MNIST file not found: {p}")
        x = torch.from_numpy(read_idx(images)).float().unsqueeze(1) / 127.5 - 1.0  # 0..255 -> [-1, 1]
        y = torch.from_numpy(read_idx(labels)).long()
        n = MNIST_N_TRAIN
    else:
        raise ValueError(f"unknown feature net {kind!r}; choose one of {KINDS}")
    return x[:n], y[:n], x[n:], y[n:]
