"""Labels travel as ``cond``: the denoiser signature eps_fn(x_i, i, cond=None) everywhere, a two-argument
eps_fn still working, and nets with a class embedding and a null class."""

import json

import pytest
import torch

import dgm
from dgm.models import build_model
from dgm.nets import MLP, UNet, build_net


class Recorder:
    """A three-argument denoiser that remembers the labels it saw, row by row with the levels."""

    def __init__(self, mixture, s):
        self.mixture, self.s, self.seen = mixture, s, []

    def __call__(self, x, i, cond=None):
        self.seen.append((i.clone(), None if cond is None else cond.clone()))
        return self.mixture.eps_star(self.s, x, i)


def _rows(rec):
    levels = torch.cat([i for i, _ in rec.seen])
    labels = torch.cat([c for _, c in rec.seen])
    return levels, labels


def test_losses_pass_the_labels(mixture):
    s = dgm.Schedule.linear(20)
    x0 = mixture.sample(6, torch.Generator().manual_seed(0)).float()
    cond = torch.tensor([0, 1, 2, 0, 1, 2])
    for loss in (dgm.loss_simple, dgm.loss_ddpm):
        rec = Recorder(mixture, s)
        loss(rec, s, x0, cond=cond, generator=torch.Generator().manual_seed(1))
        assert torch.equal(rec.seen[0][1], cond)


def test_vlb_repeats_the_labels_with_the_levels(mixture):
    """vlb batches several levels per call: each row must keep its own example's label."""
    s = dgm.Schedule.linear(12)
    x0 = mixture.sample(5, torch.Generator().manual_seed(0))
    cond = torch.tensor([4, 3, 2, 1, 0])
    rec = Recorder(mixture, s)
    dgm.vlb(rec, s, x0, cond=cond, max_batch=20, generator=torch.Generator().manual_seed(1))
    levels, labels = _rows(rec)
    assert sorted(levels.unique().tolist()) == list(range(1, 13)) and len(levels) == 12 * 5
    assert torch.equal(labels, cond.repeat(12))


@pytest.mark.parametrize("sampler, steps", [("ancestral", None), ("ancestral", 5), ("ddim", 5), ("dpm++2m", 5)])
def test_samplers_pass_the_labels(mixture, sampler, steps):
    s = dgm.Schedule.linear(15)
    rec = Recorder(mixture, s)
    cond = torch.tensor([1, 0, 1])
    dgm.sample(rec, s, (3, 2), sampler=sampler, steps=steps, cond=cond, dtype=torch.float64,
               generator=torch.Generator().manual_seed(0))
    assert len(rec.seen) == (steps or s.L) and all(torch.equal(c, cond) for _, c in rec.seen)


def test_two_argument_denoisers_keep_working(mixture):
    s = dgm.Schedule.linear(15)
    fn = lambda x, i: mixture.eps_star(s, x, i)  # noqa: E731
    x0 = mixture.sample(8, torch.Generator().manual_seed(0))
    assert torch.isfinite(dgm.vlb(fn, s, x0)).all()
    assert torch.isfinite(dgm.loss_simple(fn, s, x0)).all()
    assert dgm.sample(fn, s, (4, 2), sampler="dpm++2m", steps=4).shape == (4, 2)


@pytest.mark.parametrize("make, shape", [(lambda: MLP(3, hidden=16, depth=1, emb_dim=8, num_classes=4), (5, 3)),
                                         (lambda: UNet(base_channels=8, image_size=8, num_res_blocks=1, groups=4,
                                                       head_channels=8, num_classes=4), (5, 1, 8, 8))])
def test_conditional_nets(make, shape):
    net = make()
    x, i = torch.randn(shape), torch.tensor([1, 5, 9, 13, 17])
    # fresh: the class embedding is zero, so every label and the null class give the unconditional output
    assert torch.equal(net(x, i, torch.tensor([0, 1, 2, 3, 0])), net(x, i))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    a, b = net(x, i, torch.tensor([0, 0, 0, 0, 0])), net(x, i, torch.tensor([1, 1, 1, 1, 1]))
    assert not torch.allclose(a, b)
    assert torch.equal(net(x, i), net(x, i, torch.full((5,), 4)))  # None is the null class, index 4
    with pytest.raises(ValueError, match="0..3"):
        net(x, i, torch.tensor([0, 1, 2, 3, 5]))
    with pytest.raises(ValueError, match="shape"):
        net(x, i, torch.tensor([0, 1]))
    rebuilt = build_net(json.loads(json.dumps(net.config())))
    rebuilt.load_state_dict(net.state_dict())
    assert torch.equal(rebuilt(x, i, torch.tensor([2, 2, 2, 2, 2])), net(x, i, torch.tensor([2, 2, 2, 2, 2])))


def test_unconditional_nets_refuse_labels():
    net = MLP(3, hidden=16, depth=1, emb_dim=8)
    assert "num_classes" not in net.config()  # old configs and weights stay as they were
    with pytest.raises(ValueError, match="without num_classes"):
        net(torch.randn(2, 3), torch.tensor([1, 2]), torch.tensor([0, 1]))


def test_ddpm_model_passes_labels_to_its_net():
    model = build_model({"kind": "ddpm", "data_shape": [3], "levels": 10,
                         "net": {"kind": "mlp", "dim": 3, "hidden": 16, "depth": 1, "emb_dim": 8, "num_classes": 2}})
    x0 = torch.randn(4, 3)
    cond = torch.tensor([0, 1, 0, 1])
    loss, _ = model.loss(x0, cond=cond, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    assert model.sample(4, cond=cond, sampler="ddim", steps=3).shape == (4, 3)
    assert model.evaluate(x0, cond=cond)["nll_nats"].shape == (4,)
    with pytest.raises(ValueError, match="0..1"):
        model.sample(2, cond=torch.tensor([0, 7]), sampler="ddim", steps=3)


def test_vae_refuses_labels():
    vae = build_model({"kind": "vae", "data_shape": [2], "latent_dim": 2, "hidden": [8]})
    with pytest.raises(ValueError, match="unconditional"):
        vae.loss(torch.randn(3, 2), cond=torch.tensor([0, 1, 0]))
