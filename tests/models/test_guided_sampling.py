"""Classifier-free guidance through a model's ``sample(..., cond, guidance)``: the wiring (the null class, the
guided denoiser, every sampler) against the exact class oracle, and its errors."""

import pytest
import torch
from torch import nn

import dgm
from dgm.core.guidance import class_denoiser
from dgm.models import build_model

LABELS = torch.tensor([0, 1, 1])  # the fixture mixture's components -> 2 classes; the null class is 2


class Oracle(nn.Module):
    """The exact class-conditional eps* as the model's denoiser (null-class rows get the unconditional eps*)."""

    def __init__(self, fn):
        super().__init__()
        self.fn, self.anchor = fn, nn.Parameter(torch.zeros(()))

    def forward(self, x, i, cond=None):
        return self.fn(x, i, cond).to(x.dtype)


def oracle_ddpm(mixture):
    model = build_model({"kind": "ddpm", "data_shape": [2], "levels": 40, "schedule": "linear", "conditional": True,
                         "num_classes": 2, "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}})
    model.denoiser = Oracle(class_denoiser(mixture, LABELS, model.schedule))
    return model.eval()


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpm++2m"])
def test_model_guidance_is_cfg_of_the_oracle(mixture, sampler):
    """model.sample(cond=c, guidance=w) against dgm.sample driven by (1 + w) eps*_c - w eps*. Catches guidance
    dropped on the way to the sampler, the null class taken as num_classes - 1 (a real class), or w inverted."""
    model = oracle_ddpm(mixture)
    cond = torch.tensor([0, 1, 0, 1, 1])
    got = model.sample(5, generator=torch.Generator().manual_seed(3), sampler=sampler, steps=10, cond=cond,
                       guidance=2.0)
    fn = class_denoiser(mixture, LABELS, model.schedule)
    want = dgm.sample(dgm.guided_denoiser(fn, 2.0, 2), model.schedule, (5, 2), sampler=sampler, steps=10,
                      cond=cond, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(got, want, atol=1e-5)
    plain = model.sample(5, generator=torch.Generator().manual_seed(3), sampler=sampler, steps=10, cond=cond)
    assert not torch.allclose(got, plain, atol=1e-3)  # guidance changes the draws


def test_an_int_class_is_every_row(mixture):
    model = oracle_ddpm(mixture)
    a = model.sample(4, generator=torch.Generator().manual_seed(0), steps=8, sampler="ddim", cond=1, guidance=1.0)
    b = model.sample(4, generator=torch.Generator().manual_seed(0), steps=8, sampler="ddim",
                     cond=torch.ones(4, dtype=torch.long), guidance=1.0)
    assert torch.equal(a, b)


def test_guidance_errors(mixture):
    model = oracle_ddpm(mixture)
    with pytest.raises(ValueError, match="needs class labels"):
        model.sample(3, guidance=1.0)
    with pytest.raises(ValueError, match="guidance must be a finite number >= 0"):
        model.sample(3, cond=0, guidance=-1.0)
    plain = build_model({"kind": "ddpm", "data_shape": [2], "levels": 10,
                         "net": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 1, "emb_dim": 8}})
    with pytest.raises(ValueError, match="needs a class-conditional model"):
        plain.sample(3, guidance=1.0)
