"""dgm.evaluation.inception: pytorch-fid's FID Inception v3, checked against its source (the weights file itself is
not available offline, so numerical agreement with pytorch-fid is NOT tested here)."""

import math

import pytest
import torch

from dgm.evaluation import inception as I
from dgm.evaluation import metrics as M

# The BasicConv2d modules of pytorch-fid's fid_inception_v3(): torchvision's Inception3 without the
# aux head, with the FID-patched Mixed blocks (same submodule names as torchvision's blocks).
STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
BLOCK_A = ["branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3",
           "branch_pool"]
BLOCK_B = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
BLOCK_C = ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1", "branch7x7dbl_2",
           "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5", "branch_pool"]
BLOCK_D = ["branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3", "branch7x7x3_4"]
BLOCK_E = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1", "branch3x3dbl_2",
           "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
BLOCKS = {"5b": BLOCK_A, "5c": BLOCK_A, "5d": BLOCK_A, "6a": BLOCK_B, "6b": BLOCK_C, "6c": BLOCK_C,
          "6d": BLOCK_C, "6e": BLOCK_C, "7a": BLOCK_D, "7b": BLOCK_E, "7c": BLOCK_E}
BN_KEYS = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]


def expected_keys() -> set[str]:
    convs = STEM + [f"Mixed_{b}.{c}" for b, names in BLOCKS.items() for c in names]
    assert len(convs) == 94
    keys = {f"{c}.conv.weight" for c in convs} | {f"{c}.bn.{k}" for c in convs for k in BN_KEYS}
    return keys | {"fc.weight", "fc.bias"}  # fid_inception_v3 builds Inception3(num_classes=1008)


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialized state dict with O(1) activations (He-scaled convs, random BN stats)."""
    g = torch.Generator().manual_seed(seed)
    state = I.FIDInceptionV3().state_dict()
    for k, v in state.items():
        if k.endswith("conv.weight"):
            state[k] = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel())
        elif k.endswith(("running_var", "bn.weight")):
            state[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith(("running_mean", "bn.bias")):
            state[k] = 0.1 * torch.randn(v.shape, generator=g)
    return state


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / M.FID_WEIGHTS_NAME
    torch.save(random_state(), path)
    return path


@pytest.fixture(scope="module")
def model(weights_file):
    torch.set_num_threads(1)
    return I.load_fid_inception(weights_file)


def test_state_dict_matches_pytorch_fid_layout():
    state = I.FIDInceptionV3().state_dict()
    assert set(state) == expected_keys()
    assert len(state) == 566
    shapes = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_2.conv.weight": (192, 192, 7, 1),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "Mixed_7c.branch_pool.bn.running_var": (192,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for k, shape in shapes.items():
        assert tuple(state[k].shape) == shape, k
    # torchvision's inception_v3 has 27,161,264 parameters; minus the aux head (3,326,696), plus the
    # 8 extra classes of fc (16,392) -> pytorch-fid's network (~91 MiB of float32, the file's size)
    assert sum(p.numel() for p in I.FIDInceptionV3().parameters()) == 23_850_960
    bn = I.FIDInceptionV3().Conv2d_1a_3x3.bn
    assert bn.eps == 0.001 and I.FIDInceptionV3().Conv2d_1a_3x3.conv.bias is None


def test_fid_patches():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.allclose(I.avg_pool_tf(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 4, 4))  # padding ignored
    e1, e2 = I.FIDInceptionE_1.pool(None, x), I.FIDInceptionE_2.pool(None, x)
    assert e1[0, 0, 0, 0] == (0 + 1 + 4 + 5) / 4 and e2[0, 0, 0, 0] == 5  # Mixed_7c max-pools


def test_load_and_features(model):
    g = torch.Generator().manual_seed(1)
    gray = torch.rand(2, 1, 8, 8, generator=g)
    f = I.fid_features(model, gray)
    assert f.shape == (2, 2048) and f.dtype == torch.float64 and torch.isfinite(f).all()
    assert f.abs().max() > 0 and not torch.allclose(f[0], f[1])
    f_rgb = I.fid_features(model, gray.repeat(1, 3, 1, 1), batch_size=1)
    torch.testing.assert_close(f, f_rgb)
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_inception_fd(weights_file):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(2)
    real = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    fake = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    fd = M.inception_fd(real, fake, weights_file)
    assert isinstance(fd, float) and math.isfinite(fd) and fd >= 0


def test_load_errors(tmp_path):
    missing = tmp_path / M.FID_WEIGHTS_NAME
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05") as err:
        M.inception_fd(None, None, missing)
    assert str(missing) in str(err.value) and M.FID_WEIGHTS_URL in str(err.value)

    state = I.FIDInceptionV3().state_dict()
    state["Mixed_7c.branch_pool.conv.kernel"] = state.pop("Mixed_7c.branch_pool.conv.weight")
    renamed = tmp_path / "renamed.pth"
    torch.save(state, renamed)
    with pytest.raises(ValueError, match=r"missing key 'Mixed_7c\.branch_pool\.conv\.weight'") as err:
        I.load_fid_inception(renamed)
    assert str(renamed) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="Mixed_7c.branch_pool.conv.weight"):
        M.inception_fd(None, None, renamed)

    state = I.FIDInceptionV3().state_dict()
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    extra = tmp_path / "extra.pth"
    torch.save(state, extra)
    with pytest.raises(ValueError, match=r"unexpected key 'AuxLogits\.fc\.weight'"):
        I.load_fid_inception(extra)

    state = I.FIDInceptionV3().state_dict()
    state["fc.weight"] = torch.zeros(1000, 2048)
    wrong = tmp_path / "wrong.pth"
    torch.save(state, wrong)
    with pytest.raises(ValueError, match=r"'fc\.weight' has shape \(1000, 2048\)"):
        I.load_fid_inception(wrong)


def test_old_state_dict_without_num_batches_tracked(tmp_path):
    state = {k: v for k, v in I.FIDInceptionV3().state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    I.load_fid_inception(path)
