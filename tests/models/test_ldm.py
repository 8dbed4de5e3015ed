"""The latent DDPM (dgm.models.ldm): the two-stage training, the bound, the samples, resume across stages, the
command line."""

import json

import pytest
import torch

from dgm.core.gaussian import normal_log_prob_from_log_std
from dgm.data.spec import data_spec, load_run_data
from dgm.models import build_model
from dgm.runs.checkpoint import load_model
from dgm.training.config import TrainConfig, learning_rate
from dgm.training.loop import _stage, fit
from dgm.training.recipes import recipe

VAE_STEPS, STEPS = 6, 10


def tiny_ldm(vae_steps: int = VAE_STEPS) -> torch.nn.Module:
    """An LDM for the 8x8 digits (17 gray levels): an MLP VAE with 4 latents and a 16-wide latent DDPM."""
    torch.manual_seed(0)
    return build_model({
        "kind": "ldm", "vae_steps": vae_steps,
        "vae": {"kind": "vae", "data_shape": [1, 8, 8], "latent_dim": 4, "arch": "mlp", "hidden": [32],
                "decoder": "discretized", "bins": 17},
        "ddpm": {"kind": "ddpm", "data_shape": [4], "net": {"kind": "mlp", "dim": 4, "hidden": 16, "depth": 1,
                                                            "emb_dim": 8},
                 "schedule": "cosine", "levels": 20, "prediction": "v", "objective": "v"}})


@pytest.fixture(scope="module")
def digits():
    return load_run_data(data_spec("digits", None))


def train(model, data, out, steps: int, resume: bool = False):
    cfg = TrainConfig(steps=steps, batch_size=32, lr=1e-3, warmup_steps=3, log_every=1, checkpoint_every=100)
    return fit(model, data, out, train_config=cfg, resume=resume, progress=False)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """(model, EMA) of a 10-step run whose VAE trains for 6, and the model of a run stopped after the first
    stage-2 step."""
    out = tmp_path_factory.mktemp("ldm")
    train(tiny_ldm(), digits, out / "a", VAE_STEPS + 1)
    train(tiny_ldm(), digits, out / "b", STEPS)
    log = [json.loads(line) for line in (out / "b" / "log.jsonl").read_text().splitlines()]
    return load_model(out / "b", ema=False)[0], load_model(out / "b")[0], load_model(out / "a", ema=False)[0], log


def test_the_switch_freezes_the_vae_at_its_ema_and_standardizes_its_latents(trained, digits):
    model, ema, after_switch, _ = trained
    assert int(model.stage) == int(ema.stage) == 1
    # the VAE is the EMA's from the switch on and stays frozen through stage 2 (fails if it keeps training or
    # if the model's own VAE weights are kept)
    for (name, p), q, r in zip(model.vae.state_dict().items(), ema.vae.state_dict().values(),
                               after_switch.vae.state_dict().values(), strict=True):
        assert torch.equal(p, q) and torch.equal(p, r), name
    # shift and scale: mean and std of the encoder means over the training data (fails on swapped or on other data)
    with torch.no_grad():
        means = model.vae.encode(digits.train)[0]
    torch.testing.assert_close(model.z_shift, means.mean(0))
    torch.testing.assert_close(model.z_scale, means.std(0))
    # the DDPM trained in stage 2 (its weights left the initialisation)
    fresh = tiny_ldm()
    assert not all(torch.equal(a, b) for a, b in zip(model.ddpm.parameters(), fresh.ddpm.parameters(), strict=True))


def test_warm_ups_restart_with_the_ddpm(trained):
    """The learning rate and the EMA warm-up run on the step within the stage (fails if the DDPM starts at full
    learning rate)."""
    lr = {r["step"]: r["lr"] for r in trained[3]}  # the record of step t holds the rate of its last step, t - 1
    assert lr[VAE_STEPS] == pytest.approx(1e-3) and lr[VAE_STEPS + 1] == pytest.approx(1e-3 / 3)
    model, cfg = tiny_ldm(), TrainConfig(steps=STEPS, lr=1e-3, warmup_steps=3)
    assert _stage(model, cfg, 2) == (2, TrainConfig(steps=VAE_STEPS, lr=1e-3, warmup_steps=3))
    in_stage, stage_cfg = _stage(model, cfg, VAE_STEPS)
    assert (in_stage, stage_cfg.steps) == (0, STEPS - VAE_STEPS)
    assert learning_rate(stage_cfg, in_stage) == pytest.approx(1e-3 / 3)


def test_resume_across_the_switch_is_exact(digits, tmp_path):
    """Stopped in stage 1 and resumed past the switch: the same weights as a run straight through."""
    train(tiny_ldm(), digits, tmp_path / "straight", STEPS)
    train(tiny_ldm(), digits, tmp_path / "split", VAE_STEPS - 2)
    train(tiny_ldm(), digits, tmp_path / "split", STEPS, resume=True)
    for ema in (True, False):
        a, b = load_model(tmp_path / "straight", ema=ema)[0], load_model(tmp_path / "split", ema=ema)[0]
        for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q), name


def test_bound_is_the_elbo_with_the_ddpm_bound_as_prior(trained, digits):
    """nll = -log p(x|z) + log q(z|x) + L_DDPM(z_s) + sum log scale for one z ~ q(z|x), in that draw order.
    Fails on a dropped log-Jacobian, the sign of log q, or the encoder mean in place of a draw."""
    _, model, _, _ = trained
    x = digits.heldout[:5]
    got = model.evaluate(x, generator=torch.Generator().manual_seed(3))["nll_nats"]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        mean, log_std = model.vae.encode_log_std(x)
        z = mean + log_std.exp() * torch.randn(mean.shape, generator=g)
        recon = model.vae.likelihood.log_prob(x, model.vae.decode_raw(z))
        log_q = normal_log_prob_from_log_std(z, mean, log_std).sum(1)
        z_s = (z - model.z_shift) / model.z_scale
        prior = model.ddpm.evaluate(z_s, generator=g)["nll_nats"] + model.z_scale.log().sum()
    torch.testing.assert_close(got, -recon + log_q + prior)
    assert model.z_scale.log().sum().abs() > 0.1  # the Jacobian term is not negligible here


def test_samples_decode_the_unstandardized_ddpm_latents(trained):
    _, model, _, _ = trained
    got = model.sample(6, sampler="ddim", steps=5, generator=torch.Generator().manual_seed(1))
    z_s = model.ddpm.sample(6, sampler="ddim", steps=5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(got, model.vae.decode(model.z_shift + model.z_scale * z_s))
    assert got.shape == (6, 1, 8, 8)


def test_before_the_switch_there_is_no_sample_nor_bound(digits):
    model = tiny_ldm()
    for call in (lambda: model.sample(2), lambda: model.evaluate(digits.heldout[:2])):
        with pytest.raises(ValueError, match="still in stage 1"):
            call()


def test_recipe_and_bad_data():
    scaling = load_run_data(data_spec("digits", None)).scaling
    model_cfg, train_cfg = recipe("ldm", scaling)
    model = build_model(model_cfg)
    assert model.ddpm.data_shape == (model.vae.latent_dim,) and train_cfg["steps"] > model.vae_steps
    with pytest.raises(ValueError, match="ldm models images"):
        recipe("ldm", load_run_data(data_spec("gmm2d", None)).scaling)


def test_command_line(tmp_path, one_line_error, capsys):
    from dgm.cli import main

    settings = tmp_path / "tiny.toml"
    settings.write_text("[model]\nvae_steps = 4\n[model.ddpm]\nlevels = 20\n[model.ddpm.net]\nhidden = 16\n"
                        "depth = 1\n[model.vae]\nhidden = [32]\n[train]\nbatch_size = 32\nwarmup_steps = 2\n")
    run = tmp_path / "run"
    line = one_line_error(["train", "ldm", "--data", "gmm2d", "--out", str(run), "--steps", "2", "--no-progress"])
    assert "ldm models images" in line and not run.exists()
    train_argv = ["train", "ldm", "--data", "digits", "--out", str(run), "--config", str(settings), "--no-progress"]
    assert main([*train_argv, "--steps", "3"]) == 0
    assert "stage 1 of 2" in capsys.readouterr().err
    assert "still in stage 1" in one_line_error(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.npy")])
    assert main(["train", "ldm", "--out", str(run), "--resume", "--steps", "8", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.npy")]) == 0
    assert main(["eval", str(run), "--max-examples", "8"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["kind"] == "ldm" and result["bits_per_dim"] > 0
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "--n-samples", "64"]) == 0
    assert "latent ancestral, 20 levels, decoder means" in (tmp_path / "r.html").read_text()
