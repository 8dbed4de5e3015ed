"""The FID variant of Inception v3 (pool3 features), for pytorch-fid's weights from a LOCAL file.

Standard FID (Heusel et al. 2017) uses TensorFlow's 2015-12-05 Inception v3 graph; pytorch-fid ports
its weights to ``pt_inception-2015-12-05-6726825d.pth``. This module rebuilds that network without
torchvision -- the same blocks and module names as pytorch-fid's ``fid_inception_v3()`` (torchvision's
``Inception3(num_classes=1008, aux_logits=False)`` with the FID-patched blocks) -- so that state dict
loads with ``strict=True``. The FID patches (TensorFlow's graph differs from torchvision's model):

* every average-pool branch uses ``count_include_pad=False`` (TF does not average the zero padding);
* the last block, Mixed_7c (``FIDInceptionE_2``), max-pools its pool branch instead of averaging.

Input handling is pytorch-fid's: images (N, 3, H, W) in [0, 1] are resized bilinearly to 299x299
(``align_corners=False``) and mapped to [-1, 1]; the 2048-d features are the adaptive average pool of
Mixed_7c's output ("pool3"). The 1008-way ``fc`` layer is part of the weights file (so it is built
here for the strict load) but is not used for the features.

dgm never downloads: get the file from ``dgm.evaluation.metrics.FID_WEIGHTS_URL`` and pass its local path.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 2048
INPUT_SIZE = 299
NUM_CLASSES = 1008  # the TF graph's classifier size (pytorch-fid builds fc with it)


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm(eps=0.001) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def avg_pool_tf(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TF, ignores the zero padding."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(avg_pool_tf(x))], 1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction (Mixed_6a; unpatched)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorized 7x7 convolutions."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(avg_pool_tf(x))], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction (Mixed_7a; unpatched)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE_1(nn.Module):  # pytorch-fid's name
    """8x8 block with expanded 1x3/3x1 branches; avg-pool branch without the padding (Mixed_7b)."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return avg_pool_tf(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(self.pool(x))], 1)


class FIDInceptionE_2(FIDInceptionE_1):  # pytorch-fid's name
    """Mixed_7c: as FIDInceptionE_1 but the TF graph MAX-pools the pool branch."""

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception v3; forward: images (N, 3, H, W) in [0, 1] -> pool3 (N, 2048)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)  # in the weights file; unused for the features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)


def load_fid_inception(path) -> FIDInceptionV3:
    """FIDInceptionV3 in eval mode with pytorch-fid's weights from the local file ``path``.

    Loads tensors only (``weights_only=True``) and with ``strict=True``; ValueError (one line, naming the
    path and the first missing / unexpected / mis-shaped key) when the file is not that state dict.
    BatchNorm ``num_batches_tracked`` counters (unused in eval mode) may be absent, as in state dicts
    saved by old PyTorch versions; they are filled in.
    """
    path = Path(path).expanduser()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 -- any unreadable file is the same user error
        raise ValueError(f"{path} is not a readable PyTorch weights file ({err.__class__.__name__})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not pytorch-fid's Inception state dict (got a {type(state).__name__})")
    model = FIDInceptionV3()
    expected = model.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = value
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        what = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        raise ValueError(f"{path} is not pytorch-fid's Inception state dict: {what} "
                         f"({len(missing)} missing, {len(unexpected)} unexpected)")
    for key, value in expected.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.shape != value.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise ValueError(f"{path} is not pytorch-fid's Inception state dict: key {key!r} has shape "
                             f"{shape}, expected {tuple(value.shape)}")
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def fid_features(model: nn.Module, images, batch_size: int = 50) -> torch.Tensor:
    """Pool3 features (N, 2048) float64 (CPU) of images (N, C, H, W) in [0, 1], C = 3 or 1 (gray,
    repeated to 3 channels), computed in float32 on the model's device, ``batch_size`` at a time."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 3, H, W) or (N, 1, H, W), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("images contain NaN or infinite values")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    param = next(model.parameters())
    model.eval()
    out = []
    for chunk in x.split(batch_size):
        chunk = chunk.to(device=param.device, dtype=torch.float32)
        if chunk.shape[1] == 1:
            chunk = chunk.expand(-1, 3, -1, -1)
        out.append(model(chunk).reshape(chunk.shape[0], -1).double().cpu())
    if not out:
        return torch.zeros(0, FEATURE_DIM, dtype=torch.float64)
    return torch.cat(out)
