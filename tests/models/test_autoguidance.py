"""Autoguidance (Karras et al. 2024): ``autoguided_denoiser``'s formula, its wiring through ``model.sample`` with
exact mixture oracles as the model and its guide, the guide taken from the EMA at ``guide_step`` by ``fit``
(and carried by checkpoints and resume), and the errors of the API and the CLI."""

import pytest
import torch
from torch import nn

import dgm
from dgm.data import load_data
from dgm.models import build_model
from dgm.runs import checkpoint as ckpt
from dgm.training.config import TrainConfig
from dgm.training.loop import fit

TINY = {"kind": "ddpm", "data_shape": [2], "levels": 50,
        "net": {"kind": "mlp", "dim": 2, "hidden": 16, "depth": 1, "emb_dim": 8}}


class Oracle(nn.Module):
    def __init__(self, fn, cond=False):
        super().__init__()
        self.fn, self.cond = fn, cond
        self.anchor = nn.Parameter(torch.zeros(()))  # the model reads its device from a parameter

    def forward(self, x, i, cond=None):
        return (self.fn(x, i, cond) if self.cond else self.fn(x, i)).to(x.dtype)


def test_autoguided_denoiser_is_eps_plus_w_times_the_difference():
    """eps + w (eps - eps_guide): catches the two swapped ((1 + w) eps_guide - w eps), the weight taken as the
    paper's 1 + w, or the guide's sign flipped."""
    x, i = torch.randn(6, 3, dtype=torch.float64), torch.full((6,), 7)
    good = lambda x, i: 2.0 * x + 1.0  # noqa: E731
    bad = lambda x, i: -x + 0.5  # noqa: E731
    got = dgm.autoguided_denoiser(good, bad, 1.5)(x, i)
    want = (2.0 * x + 1.0) + 1.5 * ((2.0 * x + 1.0) - (-x + 0.5))
    assert torch.equal(got, want)
    assert dgm.autoguided_denoiser(good, bad, 0.0) is good  # w = 0: the model itself, one call per step
    for w in (-0.5, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="autoguidance must be a finite number >= 0"):
            dgm.autoguided_denoiser(good, bad, w)


def oracle_pair(mixture):
    """A DDPM whose denoiser is the mixture's exact eps* and whose guide is eps* of the same mixture with its
    covariances doubled (a blurrier 'bad version')."""
    model = build_model(TINY | {"levels": 40, "schedule": "linear", "guide_step": 5})
    wide = dgm.GaussianMixture(mixture.weights, mixture.means, 2 * mixture.covs)
    good = lambda x, i: mixture.eps_star(model.schedule, x, i)  # noqa: E731
    bad = lambda x, i: wide.eps_star(model.schedule, x, i)  # noqa: E731
    model.denoiser, model.guide.denoiser = Oracle(good), Oracle(bad)
    model.guide.ready.fill_(1)
    return model.eval(), good, bad


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "dpm++2m", "sde-dpm++2m"])
def test_model_autoguidance_drives_the_sampler_with_the_guided_oracle(mixture, sampler):
    """model.sample(autoguidance=w) against dgm.sample driven by eps* + w (eps* - eps*_wide): catches the option
    dropped on the way to the sampler, the model and its guide swapped, or w inverted."""
    model, good, bad = oracle_pair(mixture)
    kw = dict(sampler=sampler, steps=10)
    got = model.sample(5, generator=torch.Generator().manual_seed(3), autoguidance=2.0, **kw)
    want = dgm.sample(dgm.autoguided_denoiser(good, bad, 2.0), model.schedule, (5, 2),
                      generator=torch.Generator().manual_seed(3), **kw)
    assert torch.allclose(got, want, atol=1e-5)
    plain = model.sample(5, generator=torch.Generator().manual_seed(3), **kw)
    assert not torch.allclose(got, plain, atol=1e-3)  # autoguidance changes the draws


def _fit(out, steps, *, resume=False, **model):
    torch.manual_seed(0)
    m = build_model(TINY | model)
    config = TrainConfig(batch_size=32, log_every=1, checkpoint_every=4, seed=0, steps=steps)
    fit(m, load_data("gmm2d"), out, train_config=config, resume=resume, progress=False)
    return ckpt.load_weights(out / ckpt.WEIGHTS)[0]


def test_the_guide_is_the_ema_of_guide_step_and_costs_the_training_nothing(tmp_path):
    """After 7 steps with guide_step 3, the guide (in the model and the EMA) equals the EMA of a 3-step run, and
    every other weight equals a run without a guide. Catches the model's weights snapshotted instead of the EMA's,
    the snapshot a step early or late, a snapshot renewed after guide_step, or the guide trained."""
    short = _fit(tmp_path / "short", 3)
    guided = _fit(tmp_path / "guided", 7, guide_step=3)
    plain = _fit(tmp_path / "plain", 7)
    for copy in ("model", "ema"):
        guide = {k.removeprefix(f"{copy}.guide.denoiser."): v for k, v in guided.items()
                 if k.startswith(f"{copy}.guide.denoiser.")}
        ema3 = {k.removeprefix("ema.denoiser."): v for k, v in short.items() if k.startswith("ema.denoiser.")}
        assert guide.keys() == ema3.keys() and all(torch.equal(guide[k], ema3[k]) for k in guide)
        assert int(guided[f"{copy}.guide.ready"]) == 1
    rest = {k: v for k, v in guided.items() if ".guide" not in k}
    assert rest.keys() == plain.keys() and all(torch.equal(rest[k], plain[k]) for k in rest)
    assert not torch.equal(guided["ema.guide.denoiser.net.out.weight"], guided["ema.denoiser.net.out.weight"])


@pytest.mark.parametrize("split_at", [2, 3, 5])
def test_a_resume_across_the_guide_step_is_exact(tmp_path, split_at):
    """Stopped before, at, or after guide_step, then resumed: the same guide and weights as one run. Catches a
    guide lost by the checkpoint, or taken again (from a later EMA) after a resume past its step."""
    whole = _fit(tmp_path / "whole", 7, guide_step=3)
    _fit(tmp_path / "split", split_at, guide_step=3)
    split = _fit(tmp_path / "split", 7, resume=True, guide_step=3)
    assert whole.keys() == split.keys() and all(torch.equal(whole[k], split[k]) for k in whole)
    model, config = ckpt.load_model(tmp_path / "split")
    assert model.has_guide and config["model"]["guide_step"] == 3


def test_quick_sampling_autoguides_an_unconditional_model_with_its_guide():
    model = build_model(TINY | {"guide_step": 2})
    assert model.quick_sampling()[0] == {"sampler": "dpm++2m", "steps": 20}  # no snapshot yet
    model.guide.ready.fill_(1)
    assert model.quick_sampling()[0] == {"sampler": "sde-dpm++2m", "steps": 20, "autoguidance": 1.5}
    cond = build_model(TINY | {"conditional": True, "num_classes": 2, "guide_step": 1,
                               "net": TINY["net"] | {"num_classes": 2}})
    cond.guide.ready.fill_(1)  # a conditional model's report adds classifier-free guidance: no autoguidance there
    assert cond.quick_sampling()[0] == {"sampler": "dpm++2m", "steps": 20}


def test_the_guide_gets_the_labels(mixture):
    """A conditional model's guide is called with the same labels: eps*(x, c) + w (eps*(x, c) - eps*_wide(x, c))."""
    from dgm.core.guidance import class_denoiser

    labels = torch.tensor([0, 1, 1])
    wide = dgm.GaussianMixture(mixture.weights, mixture.means, 2 * mixture.covs)
    model = build_model(TINY | {"levels": 40, "schedule": "linear", "conditional": True, "num_classes": 2,
                                "guide_step": 1, "net": TINY["net"] | {"num_classes": 2}})
    good, bad = class_denoiser(mixture, labels, model.schedule), class_denoiser(wide, labels, model.schedule)
    model.denoiser, model.guide.denoiser = Oracle(good, cond=True), Oracle(bad, cond=True)
    model.guide.ready.fill_(1)
    cond = torch.tensor([0, 1, 0, 1, 1])
    got = model.eval().sample(5, generator=torch.Generator().manual_seed(1), sampler="ddim", steps=8, cond=cond,
                              autoguidance=1.0)
    guided = lambda x, i, cond: 2 * good(x, i, cond) - bad(x, i, cond)  # noqa: E731 - written out, w = 1
    want = dgm.sample(guided, model.schedule, (5, 2), sampler="ddim", steps=8, cond=cond,
                      generator=torch.Generator().manual_seed(1))
    assert torch.allclose(got, want, atol=1e-5)


def test_the_ema_update_leaves_the_guide_alone():
    """take() writes the guide into both copies; the per-step EMA update must not copy it again (it cost 7% of a
    step on MNIST). Other buffers are still copied."""
    from dgm.training.loop import ema_update

    model, ema = build_model(TINY | {"guide_step": 2}), build_model(TINY | {"guide_step": 2})
    before = {k: v.clone() for k, v in ema.guide.state_dict().items()}
    with torch.no_grad():
        for b in model.guide.buffers():
            b.add_(1)
    ema_update(ema, model, 0.9)
    assert all(torch.equal(ema.guide.state_dict()[k], before[k]) for k in before)


def test_the_guide_is_no_parameter():
    """The guide's weights are buffers: the optimizer, gradient clipping and parameter counts never see them."""
    a, b = build_model(TINY), build_model(TINY | {"guide_step": 10})
    assert [n for n, _ in b.named_parameters()] == [n for n, _ in a.named_parameters()]
    assert not b.has_guide and {n for n, _ in b.named_buffers()} >= {"guide.ready", "guide.denoiser.net.out.weight"}


def test_autoguidance_errors(mixture):
    with pytest.raises(ValueError, match="has no guide \\(train with guide_step"):
        build_model(TINY).sample(3, autoguidance=1.0)
    with pytest.raises(ValueError, match="has no guide yet: it is the EMA of step 10"):
        build_model(TINY | {"guide_step": 10}).sample(3, autoguidance=1.0)
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="guide_step must be a positive integer, or 0 or None for no guide"):
            build_model(TINY | {"guide_step": bad})
    assert build_model(TINY | {"guide_step": 0}).guide is None and "guide_step" not in build_model(
        TINY | {"guide_step": 0}).config()
    with pytest.raises(ValueError, match="autoguidance must be a finite number >= 0"):  # the bad value first
        build_model(TINY).sample(3, autoguidance=-1.0)
    with pytest.raises(ValueError, match="the latent ddpm keeps no guide"):
        build_model({"kind": "ldm", "vae_steps": 2, "vae": {"kind": "vae", "data_shape": [2], "latent_dim": 2,
                                                           "arch": "mlp", "hidden": [8]},
                     "ddpm": TINY | {"data_shape": [2], "guide_step": 5}})
    cond = build_model(TINY | {"conditional": True, "num_classes": 2, "guide_step": 1,
                               "net": TINY["net"] | {"num_classes": 2}})
    cond.guide.ready.fill_(1)
    with pytest.raises(ValueError, match="choose one"):
        cond.sample(3, cond=0, guidance=1.0, autoguidance=1.0)


def test_cli_autoguidance(tmp_path, capsys, one_line_error):
    """dgm train --guide-step keeps a guide that dgm sample --autoguidance uses; a run without one, or not past its
    step, and --autoguidance beside --guidance or without --metrics, are one-line errors that write nothing."""
    from dgm.cli import main

    run, late = tmp_path / "run", tmp_path / "late"
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(run), "--steps", "4", "--guide-step", "2",
                 "--no-progress"]) == 0
    assert main(["sample", str(run), "-n", "50", "--out", str(tmp_path / "s.npy"), "--sampler", "ddim", "--steps",
                 "5", "--autoguidance", "1"]) == 0 and (tmp_path / "s.npy").exists()
    assert main(["train", "ddpm", "--data", "gmm2d", "--out", str(late), "--steps", "2", "--guide-step", "9",
                 "--no-progress"]) == 0
    capsys.readouterr()
    line = one_line_error(["sample", str(late), "-n", "5", "--out", str(tmp_path / "l.npy"), "--autoguidance", "1"])
    assert "has not trained past step 9" in line and not (tmp_path / "l.npy").exists()
    line = one_line_error(["eval", str(late), "--autoguidance", "1"])
    assert line == "dgm: error: --autoguidance 1 applies to the samples of --metrics; none were asked for"
    line = one_line_error(["train", "vae", "--data", "gmm2d", "--out", str(tmp_path / "v"), "--guide-step", "3"])
    assert line == "dgm: error: --guide-step applies to ddpm only, not vae" and not (tmp_path / "v").exists()
