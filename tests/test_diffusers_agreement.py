"""dgm's book-notation schedules and kernels agree with diffusers' schedulers after translation (STYLE.md test 1)."""

import pytest
import torch

import dgm


@pytest.fixture(scope="module")
def diffusers(require):
    """diffusers, a dev dependency: these tests skip without it, and fail without it under CI."""
    return require("diffusers")


@pytest.mark.parametrize("name, ours", [("linear", dgm.Schedule.linear), ("squaredcos_cap_v2", dgm.Schedule.cosine)])
def test_alphas_cumprod(diffusers, name, ours):
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=name)
    s = ours(1000)
    assert torch.allclose(s.alpha_bar[1:] ** 2, sched.alphas_cumprod.double(), rtol=1e-5, atol=1e-7)
    assert torch.allclose(s.beta[1:] ** 2, sched.betas.double(), rtol=1e-5, atol=1e-8)


def test_posterior_matches_ddpm_scheduler(diffusers):
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", variance_type="fixed_small",
                                    clip_sample=False)
    s = dgm.Schedule.from_diffusers(sched.betas)
    g = torch.Generator().manual_seed(0)
    x_i, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    for t in (1, 10, 500, 999):
        i = t + 1  # Ho's index t = level - 1
        seed = torch.Generator().manual_seed(7)
        out = sched.step(eps, t, x_i, generator=seed)
        noise = torch.randn(x_i.shape, generator=torch.Generator().manual_seed(7))
        x0_hat = dgm.eps_to_x0(s, x_i.double(), eps.double(), i)
        mean, var = dgm.posterior(s, x_i.double(), x0_hat, i)
        assert torch.allclose(out.pred_original_sample.double(), x0_hat, atol=1e-4)
        assert torch.allclose(out.prev_sample.double(), mean + var.sqrt() * noise, atol=1e-4)
        assert float(sched._get_variance(t)) == pytest.approx(var.item(), rel=1e-3)  # diffusers computes in float32


def test_one_ddim_step_matches_ddim_scheduler(diffusers):
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False,
                                    set_alpha_to_one=True)
    sched.set_timesteps(20)
    s = dgm.Schedule.from_diffusers(sched.betas)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    ts = sched.timesteps.tolist()
    for t, t_prev in zip(ts, ts[1:] + [-1], strict=True):
        out = sched.step(eps, t, x, eta=0.0).prev_sample
        ours = dgm.ddim_step(s, x.double(), eps.double(), t + 1, t_prev + 1)
        assert torch.allclose(out.double(), ours, atol=1e-5), t
