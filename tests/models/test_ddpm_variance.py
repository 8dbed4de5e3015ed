"""A DDPM's reverse variance option (dgm.models.ddpm ``variance``): the learned variance (Nichol & Dhariwal 2021:
twice the net's output, L_hybrid, log-interpolation between the fixed tables), the analytic one (set_analytic),
variance_for, and configs that round-trip and stay compatible with old runs."""

import math

import pytest
import torch
from torch import nn

import dgm
from dgm.core.losses import LAMBDA_VLB, loss_hybrid, loss_simple
from dgm.core.parameterization import Denoiser
from dgm.core.reverse import AnalyticVariance, variance_table
from dgm.models import build_model
from dgm.models.ddpm import DDPM

NET = {"kind": "mlp", "hidden": 16, "depth": 1, "emb_dim": 8}
D = 2


def _learned(levels: int = 10, **kw) -> DDPM:
    config = DDPM.complete_config({"net": dict(NET), "levels": levels, "schedule": "linear", "variance": "learned",
                                   **kw}, [D], None)
    torch.manual_seed(0)
    return build_model(config)


def _randomize_output_layer(model: DDPM, scale: float = 0.3) -> None:
    """The MLP's output layer starts at zero (eps_hat = 0, v = 0); random weights let gradients reach the trunk."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.net.out.weight.copy_(scale * torch.randn(model.net.out.weight.shape, generator=g))
        model.net.out.bias.copy_(scale * torch.randn(model.net.out.bias.shape, generator=g))


def _x0(n: int = 64) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(1))


class FixedOutput(nn.Module):
    """A stand-in net: eps_hat = 0.5 x and the variance output v given per level (a table indexed by level)."""

    def __init__(self, v_of_level: torch.Tensor):
        super().__init__()
        self.v_of_level = v_of_level

    def forward(self, x, i, cond=None):
        v = self.v_of_level[i.long()].to(x.dtype)[:, None].expand_as(x)
        return torch.cat([0.5 * x, v], dim=1)


# --------------------------------------------------------------------------------------------- building


def test_learned_ddpm_doubles_the_net_output():
    """complete_config with variance "learned" gives the MLP out_dim = 2 D; the denoiser returns eps_hat of shape
    (B, D) and a variance of the same shape. Catches a net left at D outputs (the denoiser then raises) and
    eps_hat taken from the wrong half (all D outputs of a 2 D net)."""
    model = _learned()
    assert model.config()["net"]["out_dim"] == 2 * D and model.net.out.out_features == 2 * D
    x, i = _x0(5), torch.tensor([1, 2, 5, 9, 10])
    eps, var = model.denoiser.eps_and_variance(x, i)
    assert eps.shape == var.shape == (5, D)
    _randomize_output_layer(model)
    raw = model.net(x, i)
    torch.testing.assert_close(model.denoiser(x, i), raw[:, :D])


def test_unet_config_doubles_the_channels():
    """For images a learned variance doubles the UNet's out_channels (and only those), and the output splits into
    eps_hat and v of the input's shape. Catches in_channels doubled too, or out_channels left at C."""
    net = {"kind": "unet", "base_channels": 8, "channel_mults": [1], "num_res_blocks": 1, "groups": 4}
    config = DDPM.complete_config({"net": net, "levels": 10, "variance": "learned"}, [1, 4, 4], 256)
    assert config["net"]["in_channels"] == 1 and config["net"]["out_channels"] == 2
    model = build_model(config)
    x = torch.zeros(3, 1, 4, 4)
    eps, var = model.denoiser.eps_and_variance(x, torch.tensor([1, 5, 10]))
    assert eps.shape == var.shape == (3, 1, 4, 4)


def test_complete_config_drops_a_doubled_output_when_the_variance_is_not_learned():
    """A recipe or stored config that carried out_dim (or out_channels) from a learned run loses it for a fixed
    variance. Catches a stale out_dim kept, which makes the denoiser return 2 D channels as eps_hat."""
    stored = {"net": dict(NET, out_dim=4), "levels": 10, "variance": "fixed_large"}
    config = DDPM.complete_config(stored, [D], None)
    assert "out_dim" not in config["net"]
    assert build_model(config).denoiser(_x0(3), torch.tensor([1, 2, 3])).shape == (3, D)


def test_a_learned_variance_net_with_the_wrong_output_size_raises():
    """A net that outputs D channels under learn_variance raises ValueError naming the expected 2 x D. Catches a
    chunk of a D-channel output into two halves of D / 2 (silently wrong)."""
    model = DDPM(data_shape=[D], net=dict(NET, dim=D), levels=10, variance="learned")
    with pytest.raises(ValueError, match=f"2 x {D}"):
        model.denoiser(_x0(3), torch.tensor([1, 2, 3]))


def test_config_round_trip_through_build_model():
    """model.config() -> build_model -> the same config and parameters of the same shapes, for every variance.
    Catches "variance" missing from config() (a learned model rebuilt with D outputs cannot load its weights)."""
    for variance in ("learned", "fixed_large", "analytic", "fixed_small"):
        config = DDPM.complete_config({"net": dict(NET), "levels": 10, "variance": variance}, [D], None)
        model = build_model(config)
        again = build_model(model.config())
        assert again.config() == model.config() and again.variance == variance
        shapes = {k: v.shape for k, v in model.state_dict().items()}
        assert {k: v.shape for k, v in again.state_dict().items()} == shapes


def test_fixed_small_config_has_no_variance_key():
    """The default variance is left out of config(), so run configs written before the option existed still equal a
    new run's config (resume and the "different run" check compare them). Catches "variance": "fixed_small"
    written always."""
    model = DDPM(data_shape=[D], net=dict(NET, dim=D), levels=10)
    assert "variance" not in model.config() and model.variance == "fixed_small"
    assert build_model(model.config()).variance == "fixed_small"
    assert DDPM(data_shape=[D], net=dict(NET, dim=D), levels=10, variance="fixed_large").config()["variance"] == \
        "fixed_large"


def test_unknown_variance_is_rejected():
    """An unknown variance name raises ValueError quoting it. Catches a dispatch without an else."""
    with pytest.raises(ValueError, match="'huge'"):
        DDPM(data_shape=[D], net=dict(NET, dim=D), levels=10, variance="huge")


# --------------------------------------------------------------------------------------------- the hybrid loss


def test_hybrid_loss_is_finite_and_trains_the_variance_half():
    """model.loss of a learned DDPM is finite and its gradient reaches the variance half of the output layer (and the
    mean half). Catches a variance output that never enters the loss (L_simple only)."""
    model = _learned()
    _randomize_output_layer(model)
    loss, _ = model.loss(_x0(), generator=torch.Generator().manual_seed(2))
    assert torch.isfinite(loss)
    loss.backward()
    grad = model.net.out.weight.grad
    assert grad[D:].abs().sum() > 0 and grad[:D].abs().sum() > 0


def test_the_mean_half_gets_exactly_the_gradient_of_loss_simple():
    """L_vlb sees eps_hat with its gradient stopped, so the mean half of the output layer gets L_simple's gradient
    exactly (same draws from the same seed), and the variance half gets nothing from L_simple and everything from
    the vlb term (zero with lambda_vlb = 0). Catches the stop-gradient removed (the vlb term then moves the mean),
    and a loss that draws its levels differently from L_simple."""
    model = _learned()
    _randomize_output_layer(model)
    s, x0 = model.schedule, _x0()

    def grads(loss_fn, **kw):
        model.zero_grad()
        loss_fn(model.denoiser, s, x0, generator=torch.Generator().manual_seed(3), **kw).backward()
        return model.net.out.weight.grad.clone(), model.net.out.bias.grad.clone()

    w_h, b_h = grads(loss_hybrid)
    w_s, b_s = grads(loss_simple)
    torch.testing.assert_close(w_h[:D], w_s[:D], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(b_h[:D], b_s[:D], rtol=1e-6, atol=1e-8)
    assert w_s[D:].abs().sum() == 0 and w_h[D:].abs().sum() > 0
    w_0, _ = grads(loss_hybrid, lambda_vlb=0.0)
    assert w_0[D:].abs().sum() == 0
    torch.testing.assert_close(w_0[:D], w_s[:D], rtol=1e-6, atol=1e-8)


class SpyDenoiser:
    """eps_and_variance for loss_hybrid: eps_hat = 0.3 x_i and v_i = beta_i^2 (1 + 0.1 i), recording the draws."""

    def __init__(self, s):
        self.s, self.calls = s, []

    def eps_and_variance(self, x_i, i, cond=None):
        self.calls.append((x_i, i))
        v = (self.s.beta[i] ** 2 * (1 + 0.1 * i)).to(x_i.dtype)[:, None].expand_as(x_i)
        return 0.3 * x_i, v


def test_hybrid_loss_value_is_simple_plus_lambda_L_times_the_level_term():
    """L_hybrid = L_simple + lambda L mean_b(term_b / D): term = KL(N(A x0 + B x_i, sigma2(i)) || N(mu_hat, v_i)) for
    i >= 2 (E24, E27, E29) and -log N(x0; x0_hat, v_1) at i = 1 (E34), recomputed here with torch.distributions
    from the recorded draws. Catches a KL with its arguments swapped, a sum over dimensions instead of a mean, a
    missing factor L, the decoder term at i = 1 replaced by a KL against sigma2(1) = 0 (inf), and a wrong lambda."""
    s = dgm.Schedule.linear(10)
    x0 = _x0(200).double()
    spy = SpyDenoiser(s)
    got = loss_hybrid(spy, s, x0, generator=torch.Generator().manual_seed(4))
    (x_i, i), = spy.calls
    assert (i == 1).any() and (i > 1).any()
    a, sb = s.alpha_bar[i][:, None], s.sigma_bar[i][:, None]
    eps = (x_i - a * x0) / sb
    eps_hat = 0.3 * x_i
    v = s.beta[i] ** 2 * (1 + 0.1 * i)
    simple = ((eps_hat - eps) ** 2).mean(1).mean()
    term = torch.zeros(len(i), dtype=torch.float64)
    first = i == 1
    x0_hat = (x_i - sb * eps_hat) / a
    term[first] = -torch.distributions.Normal(x0_hat[first], v[first, None].sqrt()).log_prob(x0[first]).sum(1) / D
    r = ~first
    mu = s.A[i[r]][:, None] * x0[r] + s.B[i[r]][:, None] * x_i[r]
    mu_hat = (x_i[r] - (s.beta[i[r]] ** 2 / s.sigma_bar[i[r]])[:, None] * eps_hat[r]) / s.alpha[i[r]][:, None]
    q = torch.distributions.Normal(mu, s.sigma2[i[r]].sqrt()[:, None].expand_as(mu))
    p = torch.distributions.Normal(mu_hat, v[r].sqrt()[:, None].expand_as(mu))
    term[r] = torch.distributions.kl_divergence(q, p).sum(1) / D
    want = simple + LAMBDA_VLB * s.L * term.mean()
    assert LAMBDA_VLB == 1e-3
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------- learned variance


def test_learned_variance_interpolates_log_variance_between_the_fixed_tables():
    """v_i = exp(f log beta_i^2 + (1 - f) log sigma2(i)), f = (v + 1) / 2: v = -1 gives the fixed-small table (sigma2(1)
    clipped to sigma2(2)), v = +1 beta_i^2, v = 0 their geometric mean, and |v| < 1 lies strictly between the two.
    Catches f = v (v = -1 then gives sigma2^2 / beta^2, outside the range), a linear instead of a log interpolation
    (the arithmetic mean at v = 0), and an unclipped sigma2(1) = 0 (log 0)."""
    s = dgm.Schedule.linear(10)
    small = variance_table(s, "fixed_small")
    large = s.beta**2
    levels = torch.arange(1, s.L + 1)
    x = torch.zeros(s.L, D, dtype=torch.float64)
    for value in (-1.0, -0.6, 0.0, 0.3, 1.0):
        den = Denoiser(FixedOutput(torch.full((s.L + 1,), value, dtype=torch.float64)), s, learn_variance=True)
        var = den.reverse_variance(x, levels)[:, 0]
        f = (value + 1) / 2
        want = torch.exp(f * torch.log(large[1:]) + (1 - f) * torch.log(small[1:]))
        torch.testing.assert_close(var, want, rtol=1e-12, atol=0)
        lo, hi = torch.minimum(small[1:], large[1:]), torch.maximum(small[1:], large[1:])
        if abs(value) < 1:
            assert ((var > lo) & (var < hi)).all()
    assert small[1] == s.sigma2[2]


def test_learned_variance_reaches_the_bound_and_the_sampler():
    """variance_for() of a learned DDPM is the denoiser's reverse_variance, which vlb and ancestral sampling read
    (E34, E39): the bound with the model's default equals vlb(..., variance=denoiser.reverse_variance), and a grid
    that skips levels raises (a per-level learned variance has no skipped steps). Catches evaluate ignoring the
    learned variance (using fixed_small)."""
    model = _learned()
    _randomize_output_layer(model)
    x0 = _x0(16)
    got = model.evaluate(x0, generator=torch.Generator().manual_seed(5))["nll_nats"]
    want = dgm.vlb(model.denoiser, model.schedule, x0, generator=torch.Generator().manual_seed(5),
                   variance=model.denoiser.reverse_variance)
    small = dgm.vlb(model.denoiser, model.schedule, x0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, small)
    assert torch.isfinite(model.sample(8, generator=torch.Generator().manual_seed(6))).all()
    with pytest.raises(ValueError, match="neighbouring"):
        model.sample(8, steps=3, generator=torch.Generator().manual_seed(6))


# --------------------------------------------------------------------------------------------- variance_for


def test_variance_for_errors():
    """variance_for("learned") on a model trained without it, "analytic" before set_analytic, an unknown name, and a
    Gamma of the wrong length in set_analytic raise ValueError saying what to do. Catches a fallback to
    fixed_small for any of them (a silently different bound)."""
    model = DDPM(data_shape=[D], net=dict(NET, dim=D), levels=10)
    with pytest.raises(ValueError, match="without a learned variance"):
        model.variance_for("learned")
    with pytest.raises(ValueError, match="estimate"):
        model.variance_for("analytic")
    with pytest.raises(ValueError, match="'wide'"):
        model.variance_for("wide")
    with pytest.raises(ValueError, match="L = 10"):
        model.set_analytic(AnalyticVariance(torch.zeros(8, dtype=torch.float64)))
    with pytest.raises(ValueError, match="estimate"):
        model.evaluate(_x0(4), variance="analytic")


def test_variance_for_names_and_the_analytic_variance():
    """Fixed names pass through; after set_analytic, "analytic" is that object and evaluate(variance="analytic") is
    vlb with it; set_analytic(None) clears it; the model's own choice is the default. Catches evaluate ignoring
    its variance argument."""
    model = DDPM(data_shape=[D], net=dict(NET, dim=D), levels=10, variance="analytic")
    assert model.variance_for("fixed_large") == "fixed_large"
    av = AnalyticVariance(torch.linspace(0, 1, 11, dtype=torch.float64))
    model.set_analytic(av)
    assert model.variance_for() is av and model.variance_for("analytic") is av
    x0 = _x0(8)
    got = model.evaluate(x0, generator=torch.Generator().manual_seed(0))["nll_nats"]
    want = dgm.vlb(model.denoiser, model.schedule, x0, generator=torch.Generator().manual_seed(0), variance=av)
    torch.testing.assert_close(got, want)
    large = model.evaluate(x0, generator=torch.Generator().manual_seed(0), variance="fixed_large")["nll_nats"]
    assert not torch.allclose(large, got)
    model.set_analytic(None)
    with pytest.raises(ValueError):
        model.variance_for()


def test_continuous_view():
    """continuous_view: continuous data are their own view (offset 0); dequantized discrete data get u in (-h, h) and
    the offset -D log(2h) (E37); discrete data without dequantization have no density (ValueError). Catches an
    offset of the wrong sign, and u not scaled to the bin's half-width."""
    x0 = torch.tensor([[-1.0, 1.0], [0.0, 0.5]])
    cont = DDPM(data_shape=[D], net=dict(NET, dim=D), levels=10)
    y, offset = cont.continuous_view(x0)
    assert y is x0 and offset == 0.0
    deq = DDPM(data_shape=[D], net=dict(NET, dim=D), levels=10, bins=5, dequantize=True)
    y, offset = deq.continuous_view(x0, torch.Generator().manual_seed(0))
    h = 1 / 4
    assert offset == pytest.approx(-D * math.log(2 * h))
    assert ((y - x0).abs() < h).all() and not torch.equal(y, x0)
    with pytest.raises(ValueError, match="dequantiz"):
        DDPM(data_shape=[D], net=dict(NET, dim=D), levels=10, bins=5).continuous_view(x0)
