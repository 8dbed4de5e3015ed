"""Contract tests shared by every network: shapes, determinism, no NaN, zero init, config round trip."""

import json
import math

import pytest
import torch

from dgm.nets import MLP, UNet, build_net, level_embedding

# Small nets keep the suite fast; the defaults are exercised by build_net round trips below.
NETS = {
    "mlp": lambda: MLP(3, hidden=32, depth=2, emb_dim=16),
    "unet8": lambda: UNet(in_channels=1, base_channels=16, image_size=8, num_res_blocks=1),
    "unet28": lambda: UNet(in_channels=1, base_channels=16, channel_mults=(1, 2, 2), image_size=28,
                           num_res_blocks=1),
    "unet_rgb": lambda: UNet(in_channels=3, base_channels=16, image_size=8, num_res_blocks=1),
    "unet28_patch2": lambda: UNet(in_channels=1, base_channels=16, channel_mults=(1, 2, 2), image_size=28,
                                  num_res_blocks=1, patch_size=2),
    "unet_rgb_patch4": lambda: UNet(in_channels=3, base_channels=16, image_size=8, num_res_blocks=1, patch_size=4),
}
SHAPES = {"mlp": (5, 3), "unet8": (2, 1, 8, 8), "unet28": (2, 1, 28, 28), "unet_rgb": (2, 3, 8, 8),
          "unet28_patch2": (2, 1, 28, 28), "unet_rgb_patch4": (2, 3, 8, 8)}


def randomize(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (the zero-initialised last layer too) random values, so outputs are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


def inputs(name: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[name]
    return torch.randn(shape, generator=g), torch.randint(0, 1000, (shape[0],), generator=g)


@pytest.mark.parametrize("name", NETS)
def test_fresh_net_outputs_zero_with_input_shape(name):
    torch.manual_seed(0)
    net = NETS[name]()
    x, i = inputs(name)
    y = net(x, i)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.count_nonzero(y) == 0


@pytest.mark.parametrize("name", NETS)
def test_deterministic_finite_and_depends_on_level(name):
    net = randomize(NETS[name]()).eval()
    x, i = inputs(name)
    y1, y2 = net(x, i), net(x, i)
    assert torch.isfinite(y1).all()
    assert torch.equal(y1, y2)
    assert not torch.allclose(net(x, i), net(x, (i + 7) % 1000))


@pytest.mark.parametrize("name", NETS)
def test_examples_are_processed_independently(name):
    net = randomize(NETS[name]()).eval()
    x, i = inputs(name)
    torch.testing.assert_close(net(x[:1], i[:1]), net(x, i)[:1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NETS)
def test_gradient_reaches_every_parameter(name):
    net = NETS[name]()  # fresh: the zero last layer must still pass gradient to everything
    x, i = inputs(name)
    (net(x, i) - x).pow(2).mean().backward()
    out = net.out if name == "mlp" else net.conv_out
    assert out.weight.grad.abs().sum() > 0
    randomize(net).zero_grad()
    (net(x, i) - x).pow(2).mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert all(p.grad.abs().sum() > 0 for p in net.parameters())


@pytest.mark.parametrize("name", NETS)
def test_build_net_round_trip_through_json(name):
    net = NETS[name]()
    config = json.loads(json.dumps(net.config()))
    copy = build_net(config)
    assert type(copy) is type(net) and copy.config() == net.config()
    copy.load_state_dict(randomize(net).state_dict())
    x, i = inputs(name)
    assert torch.equal(copy(x, i), net(x, i))


def test_default_configs_build():
    assert build_net({"kind": "mlp", "dim": 2}).config()["hidden"] == 256
    unet = build_net({"kind": "unet"})
    assert unet.config()["attn_resolutions"] == [4]  # the lowest resolution of an 8x8 input
    assert UNet(image_size=28, channel_mults=(1, 2, 2)).config()["attn_resolutions"] == [7]


def test_unet_odd_sizes_and_batch_of_one():
    net = randomize(UNet(base_channels=16, channel_mults=(1, 2, 2), image_size=7, num_res_blocks=1))
    x = torch.randn(1, 1, 7, 7)
    assert net(x, torch.tensor([3])).shape == x.shape


@pytest.mark.parametrize("out_channels", [None, 2])
def test_unet_patches_fold_into_channels_as_pixel_unshuffle(out_channels):
    # A patch_size=2 UNet on 28x28x1 is, weight for weight, a plain UNet on pixel_unshuffle(x) (14x14x4) whose
    # output is pixel_shuffle'd back; with a learned variance (out_channels 2) too. Its resolutions start at 14
    # (so the default attention sits at 4x4, not 7x7: a wrong start would change the layers and fail the load).
    patched = randomize(UNet(in_channels=1, base_channels=16, channel_mults=(1, 2, 2), image_size=28,
                             num_res_blocks=1, patch_size=2, out_channels=out_channels))
    plain = UNet(in_channels=4, base_channels=16, channel_mults=(1, 2, 2), image_size=14, num_res_blocks=1,
                 out_channels=4 * (out_channels or 1))
    assert patched.config()["attn_resolutions"] == [4] and patched.config()["patch_size"] == 2
    plain.load_state_dict(patched.state_dict())
    x, i = inputs("unet28")
    expected = torch.nn.functional.pixel_shuffle(plain(torch.nn.functional.pixel_unshuffle(x, 2), i), 2)
    assert expected.shape == (2, out_channels or 1, 28, 28)
    torch.testing.assert_close(patched(x, i), expected, rtol=0, atol=0)
    assert "patch_size" not in UNet(image_size=28).config()  # configs of unpatched nets are unchanged


def test_unet_bad_patch_sizes_raise():
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(ValueError, match=f"patch_size must be a positive integer, got {bad!r}"):
            UNet(image_size=28, patch_size=bad)
    with pytest.raises(ValueError, match="image_size 28 is not a multiple of patch_size 3"):
        UNet(image_size=28, patch_size=3)
    net = UNet(base_channels=16, channel_mults=(1, 2), image_size=28, num_res_blocks=1, patch_size=4)
    with pytest.raises(ValueError, match=r"multiples of 4, got \(30, 28\)"):
        net(torch.zeros(1, 1, 30, 28), torch.tensor([3]))


def test_unknown_kind_and_bad_options_raise():
    with pytest.raises(ValueError, match="'transformer'"):
        build_net({"kind": "transformer"})
    with pytest.raises(ValueError, match="kind"):
        build_net({"dim": 2})
    with pytest.raises(ValueError, match="widht"):
        build_net({"kind": "mlp", "dim": 2, "widht": 3})
    with pytest.raises(ValueError, match="groups"):
        UNet(base_channels=12, groups=8)
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        MLP(2)(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long))


def test_level_embedding_closed_form():
    i = torch.tensor([0, 1, 999])
    emb = level_embedding(i, 8, max_period=10_000.0)
    assert emb.shape == (3, 8)
    w = torch.tensor([10_000.0 ** (-k / 4) for k in range(4)])
    expected = torch.cat([torch.cos(i[:, None] * w), torch.sin(i[:, None] * w)], 1)
    torch.testing.assert_close(emb, expected)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert math.isclose(emb[1, 0].item(), math.cos(1.0), rel_tol=1e-6)  # the fastest frequency is 1/level
    with pytest.raises(ValueError, match="even"):
        level_embedding(i, 7)
