"""VAE and HVAE (EQUATIONS.md E9, E10, E13): shapes, closed forms, IWAE bounds, decoders, configs."""

import json
import math

import pytest
import torch
from torch import nn

from dgm.core.gaussian import normal_kl_from_log_std as kl_normals
from dgm.core.gaussian import normal_log_prob_from_log_std as log_normal
from dgm.models import build_model
from dgm.models.vae import HVAE, VAE
from dgm.models.vae.likelihoods import DecoderLikelihood

torch.set_num_threads(1)


def four_blobs(n: int, seed: int) -> torch.Tensor:
    """A tiny 2-D data set: 4 Gaussian blobs (std 0.08) at (+-0.5, +-0.5)."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    return centers[torch.randint(0, 4, (n,), generator=g)] + 0.08 * torch.randn(n, 2, generator=g)


def train(model, x, steps: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = model.loss(x[torch.randint(0, len(x), (64,), generator=g)], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


@pytest.fixture(scope="module")
def trained():
    """A VAE and an HVAE after 600 Adam steps on the blobs, plus held-out points."""
    torch.manual_seed(0)
    x = four_blobs(512, seed=1)
    vae = train(VAE(data_shape=[2], latent_dim=2, hidden=[32, 32]), x, 600)
    torch.manual_seed(0)
    hvae = train(HVAE(data_shape=[2], latent_dims=[2, 2], hidden=[32, 32]), x, 600)
    return vae.eval(), hvae.eval(), four_blobs(256, seed=2)


MODELS = [
    (VAE, {"latent_dim": 3}),
    (HVAE, {"latent_dims": [3, 2]}),
]
SHAPES = [("mlp", [2]), ("mlp", [1, 8, 8]), ("conv", [1, 8, 8]), ("conv", [1, 28, 28])]


@pytest.mark.parametrize("cls,kw", MODELS)
@pytest.mark.parametrize("arch,shape", SHAPES)
def test_shapes(cls, kw, arch, shape):
    g = torch.Generator().manual_seed(0)
    model = cls(data_shape=shape, arch=arch, hidden=[8, 16], **kw)
    x = torch.rand(5, *shape, generator=g) * 2 - 1
    loss, logs = model.loss(x, generator=g)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert {"rate", "distortion", "elbo_nats", "loss"} <= set(logs)
    assert model.sample(3, generator=g).shape == (3, *shape)
    ev = model.evaluate(x, generator=g, k=4)
    assert ev["nll_nats"].shape == ev["elbo_nats"].shape == (5,)
    if cls is VAE:
        mean, std = model.encode(x)
        assert mean.shape == std.shape == (5, 3) and (std > 0).all()
        assert model.decode(mean).shape == (5, *shape)
        assert model.reconstruct(x, 2, generator=g).shape == (2, 5, *shape)
    else:
        assert {"kl_1", "kl_2"} <= set(logs)
        kl = logs["kl_1"] + logs["kl_2"]  # nats per example; rate is per data dim
        assert math.isclose(logs["rate"] * math.prod(shape), kl, rel_tol=1e-4)


def test_analytic_kl_matches_monte_carlo():
    """E13: KL(q || p) in closed form against the mean of log q(z) - log p(z), z ~ q, 200k draws."""
    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(4, generator=g, dtype=torch.float64) * 0.5 for _ in range(4))
    z = mq + torch.exp(lq) * torch.randn(200_000, 4, generator=g, dtype=torch.float64)
    log_ratio = log_normal(z, mq, lq) - log_normal(z, mp, lp)  # (n, 4)
    se = log_ratio.std(0) / math.sqrt(len(z))
    assert (kl_normals(mq, lq, mp, lp) - log_ratio.mean(0)).abs().max() < (5 * se).max()
    # with p = N(0, 1): E13's (m^2 + s^2 - 1 - log s^2) / 2
    s2 = torch.exp(2 * lq)
    torch.testing.assert_close(kl_normals(mq, lq, 0 * mq, 0 * lq), 0.5 * (mq**2 + s2 - 1 - torch.log(s2)))


def linear_gaussian_vae(D: int = 3, m: int = 2, sigma: float = 0.3) -> tuple[VAE, torch.Tensor, torch.Tensor]:
    """A VAE made exact: decoder x = W z + b (+ sigma noise), W with orthogonal columns, and an encoder equal
    to the true posterior N(S W^T (x - b) / sigma^2, S), S = (I + W^T W / sigma^2)^-1 (diagonal)."""
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(D, m, generator=g, dtype=torch.float64))
    W = q * torch.tensor([1.5, 0.7], dtype=torch.float64)
    b = 0.2 * torch.randn(D, generator=g, dtype=torch.float64)
    vae = VAE(data_shape=[D], latent_dim=m, decoder_std=sigma).double()
    S = 1 / (1 + (W**2).sum(0) / sigma**2)  # (m,)
    enc = nn.Linear(D, 2 * m).double()
    with torch.no_grad():
        enc.weight.copy_(torch.cat([S[:, None] * W.T / sigma**2, torch.zeros(m, D, dtype=torch.float64)]))
        enc.bias.copy_(torch.cat([-(S[:, None] * W.T / sigma**2) @ b, 0.5 * torch.log(S)]))
    dec = nn.Linear(m, D).double()
    with torch.no_grad():
        dec.weight.copy_(W)
        dec.bias.copy_(b)
    vae.encoder, vae.decoder_net = enc, dec
    return vae, W @ W.T + sigma**2 * torch.eye(D, dtype=torch.float64), b


def test_iwae_exact_for_exact_posterior():
    """With q(z|x) = p(z|x) every importance weight equals p(x) (E9 gap 0): the bound is -log p(x) for any
    K and any chunking, and the ELBO equals it."""
    vae, cov, b = linear_gaussian_vae()
    x = torch.distributions.MultivariateNormal(b, cov).sample((6,)).double()
    nll = -torch.distributions.MultivariateNormal(b, cov).log_prob(x)
    g = torch.Generator().manual_seed(0)
    for k, max_rows in [(1, 2048), (10, 3), (37, 8)]:
        ev = vae.evaluate(x, generator=g, k=k, max_rows=max_rows)
        torch.testing.assert_close(ev["nll_nats"], nll)
        torch.testing.assert_close(ev["elbo_nats"], nll)


@pytest.mark.parametrize("which", [0, 1], ids=["vae", "hvae"])
def test_iwae_bound_tightens(trained, which):
    """E13: nll (-IWAE, K=50) <= elbo_nats on every example; the K-sample bound is non-increasing in
    expectation over K = 1, 10, 100 (paired means, margin 3 standard errors); the ELBO estimate does not
    depend on K beyond noise."""
    model, x = trained[which], trained[2]
    g = torch.Generator().manual_seed(0)
    ev = model.evaluate(x, generator=g, k=50)
    assert (ev["nll_nats"] <= ev["elbo_nats"] + 1e-6).all()
    nll = {k: model.evaluate(x, generator=g, k=k)["nll_nats"] for k in (1, 10, 100)}
    for lo, hi in [(1, 10), (10, 100)]:
        d = nll[lo] - nll[hi]
        assert d.mean() >= -3 * d.std() / math.sqrt(len(d)), (lo, hi, d.mean())
    d = nll[1] - nll[100]
    assert d.mean() > 3 * d.std() / math.sqrt(len(d))  # a trained model has a posterior gap to close
    e1, e100 = nll[1], model.evaluate(x, generator=g, k=100)["elbo_nats"]
    assert (e1 - e100).mean().abs() < 4 * (e1 - e100).std() / math.sqrt(len(x))


def test_hvae_kls_agree_with_log_weights(trained):
    """The HVAE's analytic per-layer KLs (training loss) and its joint log-weights (evaluation) estimate
    the same ELBO: mean of recon - sum_l KL_l over many draws against the mean of log w."""
    hvae, x = trained[1], trained[2][:4]
    g = torch.Generator().manual_seed(1)
    n = 4000
    with torch.no_grad():
        recon, kls = hvae._elbo_terms(x.repeat(n, 1), g)
        elbo_terms = (recon - torch.stack(kls).sum(0)).reshape(n, 4)
        log_w = hvae._log_weights(x, n, g)  # (n, 4)
    se = torch.sqrt(elbo_terms.var(0) / n + log_w.var(0) / n)
    assert ((elbo_terms.mean(0) - log_w.mean(0)).abs() < 4 * se).all()


def test_training_reduces_loss(trained):
    """A few hundred steps on 2-D blobs lower the held-out negative ELBO and IWAE bound of an untrained
    model by a wide margin."""
    x = trained[2]
    g = torch.Generator().manual_seed(0)
    for model, fresh in [(trained[0], VAE(data_shape=[2], latent_dim=2, hidden=[32, 32])),
                         (trained[1], HVAE(data_shape=[2], latent_dims=[2, 2], hidden=[32, 32]))]:
        before = fresh.evaluate(x, generator=g, k=20)
        after = model.evaluate(x, generator=g, k=20)
        assert after["elbo_nats"].mean() < before["elbo_nats"].mean() - 1.0
        # the blobs' entropy is log 4 + log(2 pi e 0.08^2) = -0.83 nats; a model that ignores z (one
        # Gaussian of variance 0.25 + 0.08^2 per dim) sits at log(2 pi e 0.2564) = 1.48
        assert after["nll_nats"].mean() < 0.8


def test_discretized_normalizes():
    """E36 with K bins: the probabilities of the K values sum to 1, for any mean and std."""
    for bins in (2, 5, 17, 256):
        grid = torch.linspace(-1, 1, bins, dtype=torch.float64)[:, None]  # (K, 1)
        lik = DecoderLikelihood("discretized", "learned", bins, [1]).double()
        for mean, log_std in [(0.3, -1.0), (-0.95, -6.0), (2.0, 0.5), (0.0, -3.0)]:
            with torch.no_grad():
                lik.log_std.fill_(log_std)
            out = torch.full((bins, 1), mean, dtype=torch.float64)
            total = lik.log_prob(grid, out).exp().sum()
            torch.testing.assert_close(total, torch.tensor(1.0, dtype=torch.float64))


def test_bernoulli_and_gaussian_normalize():
    lik = DecoderLikelihood("bernoulli", "learned", None, [1])
    logits = torch.tensor([[-2.0], [0.3], [4.0]])
    for lo, hi in [(-1.0, 1.0), (0.0, 1.0)]:  # {-1, 1} and {0, 1} data: x > 0 is a 1
        p_hi = lik.log_prob(torch.full((3, 1), hi), logits).exp()
        p_lo = lik.log_prob(torch.full((3, 1), lo), logits).exp()
        torch.testing.assert_close(p_hi + p_lo, torch.ones(3))
        torch.testing.assert_close(p_hi, torch.sigmoid(logits[:, 0]))
    torch.testing.assert_close(lik.mean(logits), 2 * torch.sigmoid(logits) - 1)
    gauss = DecoderLikelihood("gaussian", 0.2, None, [1]).double()
    xs = torch.linspace(-3, 3, 20001, dtype=torch.float64)[:, None]
    dens = gauss.log_prob(xs, torch.full_like(xs, 0.4)).exp()
    torch.testing.assert_close(torch.trapezoid(dens, xs[:, 0]), torch.tensor(1.0, dtype=torch.float64))


def test_samples_live_on_the_data_support():
    g = torch.Generator().manual_seed(0)
    disc = VAE(data_shape=[1, 8, 8], arch="conv", hidden=[8], decoder="discretized", bins=17)
    s = disc.sample(4, generator=g, noise=True)
    k = (s + 1) * 8
    assert (k - k.round()).abs().max() < 1e-5 and s.min() >= -1 and s.max() <= 1
    bern = HVAE(data_shape=[6], latent_dims=[2, 2], decoder="bernoulli")
    assert set(bern.sample(50, generator=g, noise=True).unique().tolist()) <= {-1.0, 1.0}
    with pytest.raises(ValueError, match="ddim"):
        disc.sample(2, sampler="ddim")


def test_kl_warmup():
    model = VAE(data_shape=[2], latent_dim=2, beta=0.5, kl_warmup_steps=10)
    assert [model.kl_weight(t) for t in (0, 5, 10, 20)] == [0.0, 0.25, 0.5, 0.5]
    x = four_blobs(8, seed=0)
    _, logs = model.loss(x)
    assert logs["kl_weight"] == 0.0 and int(model.kl_step) == 1
    model.set_step(5)
    assert model.loss(x)[1]["kl_weight"] == 0.25 and int(model.kl_step) == 6
    assert model.loss(x, step=100)[1]["kl_weight"] == 0.5 and int(model.kl_step) == 6
    model.eval()
    model.loss(x)
    assert int(model.kl_step) == 6  # evaluation does not advance the warm-up
    assert VAE(data_shape=[2], beta=2.0).kl_weight(0) == 2.0


@pytest.mark.parametrize("config", [
    {"kind": "vae", "data_shape": [1, 8, 8], "latent_dim": 5, "arch": "conv", "hidden": [8, 16],
     "decoder": "discretized", "decoder_std": "learned", "bins": 17, "beta": 0.5, "kl_warmup_steps": 100,
     "binarize": False},
    {"kind": "vae", "data_shape": [3], "latent_dim": 2, "arch": "mlp", "hidden": [16],
     "decoder": "gaussian", "decoder_std": 0.1, "bins": None, "beta": 1.0, "kl_warmup_steps": 0,
     "binarize": False},
    {"kind": "hvae", "data_shape": [4], "latent_dims": [4, 3, 2], "arch": "mlp", "hidden": [16, 16],
     "decoder": "bernoulli", "decoder_std": "learned", "bins": None, "beta": 1.0, "kl_warmup_steps": 0,
     "binarize": True},
])
def test_config_round_trip(config):
    model = build_model(json.loads(json.dumps(config)))
    assert model.kind == config["kind"] and model.config() == config
    twin = build_model(json.loads(json.dumps(model.config())))
    twin.load_state_dict(model.state_dict())
    x = torch.rand(3, *config["data_shape"]) * 2 - 1
    a = model.evaluate(x, generator=torch.Generator().manual_seed(0), k=3)
    b = twin.evaluate(x, generator=torch.Generator().manual_seed(0), k=3)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("cls,kw,bad", [
    (VAE, {"latent_dim": 0}, "0"),
    (VAE, {"latent_dim": -3}, "-3"),
    (VAE, {"decoder": "poisson"}, "poisson"),
    (VAE, {"arch": "transformer"}, "transformer"),
    (VAE, {"decoder": "discretized"}, "bins"),
    (VAE, {"decoder_std": -1.0}, "-1.0"),
    (VAE, {"arch": "conv"}, "conv"),
    (VAE, {"beta": -0.1}, "-0.1"),
    (HVAE, {"latent_dims": [4]}, r"\[4\]"),
    (HVAE, {"latent_dims": [4, 0]}, "0"),
    (HVAE, {"decoder": "poisson"}, "poisson"),
])
def test_bad_config_raises(cls, kw, bad):
    with pytest.raises(ValueError, match=bad):
        cls(data_shape=[2], **kw)


def test_discretized_mean_and_gradients():
    """The discretized decoder's mean is sum_k x_k P(x_k), inside [-1, 1]; its log-likelihood agrees with
    dgm.gaussian's, and its float32 gradients equal the exact ones even where a bin is many stds from the
    mean (up to 40 stds here, the end bins included).

    The exact gradients, from a 30-digit mpmath evaluation: with P = Phi(u) - Phi(l), u = (x + h - m) / s,
    l = (x - h - m) / s (u = +inf at x = 1, l = -inf at x = -1), d log P / dm = -(phi(u) - phi(l)) / (s P)
    and d log P / d log s = -(u phi(u) - l phi(l)) / P, summed over all entries for the one learned log-std.
    Measured float32 error: 7e-5 relative (largest |gradient| 388).
    Mutation caught: the clamped logs of Ho et al.'s code (log max(P, 1e-12)) in
    discretized_gaussian_log_prob: finite gradients, but zero in every far bin (the old
    ``isfinite(grad)`` check passed it).
    """
    import mpmath  # comes with torch (through sympy)

    from dgm.core.gaussian import discretized_gaussian_log_prob

    bins = 9
    lik = DecoderLikelihood("discretized", "learned", bins, [1])
    grid = torch.linspace(-1, 1, bins)[:, None, None]  # (K, 1, 1)
    out = torch.linspace(-3, 3, 61)[None, :, None].expand(bins, 61, 1).clone().requires_grad_(True)
    lp = lik.log_prob(grid.expand(bins, 61, 1).reshape(-1, 1), out.reshape(-1, 1)).reshape(bins, 61)
    torch.testing.assert_close(lik.mean(out[0]), (grid[:, :, 0] * lp.exp()).sum(0)[:, None])
    assert lik.mean(out[0]).abs().max() <= 1
    lp.sum().backward()
    ref = discretized_gaussian_log_prob(grid.expand(bins, 61, 1), out, lik.get_log_std(out), bins)[..., 0]
    torch.testing.assert_close(lp, ref)

    mpmath.mp.dps = 30
    h, std = mpmath.mpf(1) / (bins - 1), mpmath.exp(mpmath.mpf(lik.log_std.item()))
    grad_m = torch.zeros(bins, 61, dtype=torch.float64)
    grad_log_s = mpmath.mpf(0)
    for k, x in enumerate(grid.flatten().tolist()):
        for j, m in enumerate(out[0, :, 0].tolist()):
            u = mpmath.inf if k == bins - 1 else (x + h - m) / std
            lo = -mpmath.inf if k == 0 else (x - h - m) / std
            p = mpmath.ncdf(-lo) - mpmath.ncdf(-u) if lo > 0 else mpmath.ncdf(u) - mpmath.ncdf(lo)
            pdf_u, pdf_lo = mpmath.npdf(u), mpmath.npdf(lo)  # 0 at +-inf
            grad_m[k, j] = float(-(pdf_u - pdf_lo) / (std * p))
            grad_log_s -= ((u * pdf_u if k < bins - 1 else 0) - (lo * pdf_lo if k > 0 else 0)) / p
    assert grad_m.abs().max() > 300  # the far bins are in the comparison
    torch.testing.assert_close(out.grad[..., 0].double(), grad_m, rtol=5e-4, atol=1e-3)
    assert lik.log_std.grad.item() == pytest.approx(float(grad_log_s), rel=1e-4)


def test_dynamic_binarization():
    """binarize=True: each batch is a fresh Bernoulli((x + 1) / 2) draw; only with the bernoulli decoder."""
    from dgm.models.vae.base import dynamic_binarize

    g = torch.Generator().manual_seed(0)
    x = torch.full((20000, 1), 0.5)  # gray level 0.5 in model space: P(white) = 0.75
    b = dynamic_binarize(x, g)
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    assert abs((b > 0).float().mean().item() - 0.75) < 0.02
    with pytest.raises(ValueError, match="binarize needs the bernoulli decoder"):
        VAE(data_shape=[4], decoder="gaussian", binarize=True)
    model = VAE(data_shape=[4], decoder="bernoulli", binarize=True)
    x = torch.rand(8, 4) * 2 - 1
    a = model.evaluate(x, k=4, generator=torch.Generator().manual_seed(1))["nll_nats"]
    b = model.evaluate(x, k=4, generator=torch.Generator().manual_seed(1))["nll_nats"]
    assert torch.equal(a, b)  # a seeded generator fixes the binarization of the evaluation set
