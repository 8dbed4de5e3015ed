"""Class-conditional DDPM and VAE (the ``conditional`` option): configs, label dropout (Ho & Salimans 2022),
labels reaching the nets, the conditional VAE's bound (Sohn et al. 2015) against a closed form, and errors."""

import json
import math

import pytest
import torch
from torch import nn

from dgm.models import build_model
from dgm.models.ddpm import DDPM
from dgm.models.vae import HVAE, VAE
from dgm.models.vae.vae import LABEL_DIM
from dgm.nets.embeddings import ClassEmbedding, drop_labels

NET = {"kind": "mlp", "dim": 2, "hidden": 16, "depth": 1, "emb_dim": 8}
CLASS_KEYS = {"conditional", "num_classes", "label_dropout"}


def ddpm(**kw) -> DDPM:
    torch.manual_seed(0)
    return build_model({"kind": "ddpm", "data_shape": [2], "levels": 20, "net": dict(NET), **kw})


def vae(**kw) -> VAE:
    torch.manual_seed(0)
    return build_model({"kind": "vae", "data_shape": [2], "latent_dim": 2, "hidden": [16], **kw})


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four blobs (std 0.08) at (+-0.5, +-0.5) and each point's blob, the class."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    y = torch.randint(0, 4, (n,), generator=g)
    return centers[y] + 0.08 * torch.randn(n, 2, generator=g), y


def adam_steps(model, x, y, steps: int, lr: float = 1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for k in range(steps):
        loss, _ = model.loss(x, cond=y, generator=torch.Generator().manual_seed(k))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("make", [ddpm, vae], ids=["ddpm", "vae"])
def test_config_round_trip_with_defaults_omitted(make):
    """Mutation: a class option written at its default (old config files would change), or one lost on the
    way through config.json (a resumed or loaded run would rebuild another model)."""
    assert not CLASS_KEYS & set(make().config())
    model = make(conditional=True, num_classes=3, label_dropout=0.25)
    config = model.config()
    assert {k: config[k] for k in CLASS_KEYS} == {"conditional": True, "num_classes": 3, "label_dropout": 0.25}
    assert "label_dropout" not in make(conditional=True, num_classes=3).config()
    rebuilt = build_model(json.loads(json.dumps(config)))
    assert rebuilt.config() == config
    rebuilt.load_state_dict(model.state_dict())  # the same parameters, class embedding included


def test_complete_config_takes_num_classes_from_the_data():
    config = DDPM.complete_config({"net": dict(NET), "levels": 20, "conditional": True}, [2], None, num_classes=4)
    assert config["num_classes"] == 4 and config["net"]["num_classes"] == 4
    assert build_model(config).net.config()["num_classes"] == 4
    assert VAE.complete_config({"conditional": True}, [2], None, num_classes=5)["num_classes"] == 5
    for cls in (DDPM, VAE):
        with pytest.raises(ValueError, match="needs class labels in the data"):
            cls.complete_config({"net": dict(NET), "conditional": True}, [2], None)
    with pytest.raises(ValueError, match="the hvae is unconditional"):
        HVAE.complete_config({"conditional": True}, [2], None, num_classes=3)
    with pytest.raises(ValueError, match="the hvae is unconditional"):
        HVAE(data_shape=[2], conditional=True)


@pytest.mark.parametrize("make", [ddpm, vae], ids=["ddpm", "vae"])
@pytest.mark.parametrize("kw, pattern", [
    ({"conditional": True}, "needs num_classes"),
    ({"conditional": True, "num_classes": 0}, "needs num_classes"),
    ({"num_classes": 3}, "num_classes=3 needs conditional=true"),
    ({"label_dropout": 0.3}, "label_dropout=0.3 needs conditional=true"),
    ({"conditional": True, "num_classes": 3, "label_dropout": 1.0}, r"label_dropout must be a number in \[0, 1\)"),
    ({"conditional": "yes", "num_classes": 3}, "conditional must be true or false"),
])
def test_bad_class_options(make, kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(**kw)


def test_ddpm_net_with_other_num_classes_is_refused():
    with pytest.raises(ValueError, match="the net's num_classes=5 differs from num_classes=3"):
        build_model({"kind": "ddpm", "data_shape": [2], "net": dict(NET, num_classes=5), "conditional": True,
                     "num_classes": 3})


def test_drop_labels_rate_and_reproducibility():
    """Each label becomes the null class with probability p, independently, from the generator only.
    Mutation: a fixed fraction, another null index, global randomness, or kept labels changed."""
    n, p, K = 20_000, 0.3, 5
    cond = torch.arange(n) % K
    dropped = drop_labels(cond, p, K, torch.Generator().manual_seed(1))
    null = dropped == K
    assert abs(null.double().mean().item() - p) < 4.5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(dropped[~null], cond[~null])
    assert torch.equal(dropped, drop_labels(cond, p, K, torch.Generator().manual_seed(1)))
    assert not torch.equal(dropped, drop_labels(cond, p, K, torch.Generator().manual_seed(2)))
    assert torch.equal(drop_labels(cond, 0.0, K, torch.Generator().manual_seed(1)), cond)


def _seen_labels(model, run) -> list[torch.Tensor]:
    """The labels the model's class embedding receives while ``run()`` runs (None: the null class)."""
    embedding = next(m for m in model.modules() if isinstance(m, ClassEmbedding))
    seen = []

    def hook(module, args):
        cond, batch = args
        seen.append(torch.full((batch,), module.num_classes) if cond is None else cond.clone())

    handle = embedding.register_forward_pre_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("make", [ddpm, vae], ids=["ddpm", "vae"])
def test_training_drops_labels_reproducibly_and_only_in_training(make):
    """Mutation: label dropout skipped, applied at evaluation too, or drawn from global randomness."""
    n, p, K = 4000, 0.5, 3
    model = make(conditional=True, num_classes=K, label_dropout=p)
    x, cond = torch.randn(n, 2), torch.arange(n) % K

    def loss(seed):
        return lambda: model.loss(x, cond=cond, generator=torch.Generator().manual_seed(seed))

    model.train()
    first = _seen_labels(model, loss(0))[0]
    null = first == K
    assert abs(null.double().mean().item() - p) < 4.5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(first[~null], cond[~null])
    assert torch.equal(_seen_labels(model, loss(0))[0], first)
    model.eval()
    assert all(torch.equal(seen, cond) for seen in _seen_labels(model, loss(0)))


def test_fresh_conditional_ddpm_is_the_unconditional_one_then_learns_classes():
    """The class embedding starts at zero, so a fresh conditional DDPM's loss is the unconditional one (same
    weights, same noise); after training with labels the classes differ. Mutation: the loss not passing the
    labels to the net (the class embedding never moves)."""
    x, y = blobs(256, seed=1)
    cond_model, plain = ddpm(conditional=True, num_classes=4), ddpm()
    assert plain.load_state_dict(cond_model.state_dict(), strict=False).unexpected_keys == [
        "denoiser.net.label.table.weight"]
    cond_model.eval(), plain.eval()
    loss_c, _ = cond_model.loss(x, cond=y, generator=torch.Generator().manual_seed(3))
    loss_u, _ = plain.loss(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(loss_c, loss_u)
    adam_steps(cond_model, x, y, steps=5)
    i = torch.full((8,), 10)
    with torch.no_grad():
        out = [cond_model(x[:8], i, torch.full((8,), c)) for c in range(5)]
    assert all(not torch.allclose(out[0], out[c]) for c in range(1, 5))


def test_ddpm_sample_and_evaluate_take_labels_and_none_is_the_null_class():
    """Mutation: sample/evaluate ignoring cond, or None not read as the null class."""
    x, y = blobs(256, seed=1)
    model = adam_steps(ddpm(conditional=True, num_classes=4), x, y, steps=5)
    null = torch.full((6,), 4)

    def ev(cond):
        return model.evaluate(x[:6], cond=cond, generator=torch.Generator().manual_seed(0))["nll_nats"]

    assert torch.equal(ev(None), ev(null))
    assert not torch.allclose(ev(y[:6]), ev((y[:6] + 1) % 4))

    def draw(cond):
        return model.sample(6, cond=cond, sampler="ddim", steps=4, generator=torch.Generator().manual_seed(0))

    assert torch.equal(draw(None), draw(null))
    assert not torch.allclose(draw(torch.zeros(6, dtype=torch.long)), draw(torch.ones(6, dtype=torch.long)))


@pytest.mark.parametrize("make", [ddpm, vae], ids=["ddpm", "vae"])
def test_label_errors_are_one_line(make):
    """Mutation: an unconditional model silently ignoring labels, or bad labels reaching the net."""
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="is unconditional: it takes no class labels"):
        make().loss(x, cond=torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="is unconditional: it takes no class labels"):
        make().evaluate(x, cond=torch.tensor([0, 1, 0]))
    model = make(conditional=True, num_classes=2)
    with pytest.raises(ValueError, match="trains on class labels: give cond"):
        model.loss(x)
    for bad, pattern in [(torch.tensor([0, 1, 3]), r"must lie in 0..1 \(or 2, the null class\), got 0..3"),
                         (torch.tensor([0, 1]), r"shape \(3,\)"), (torch.tensor([0.0, 1.0, 0.0]), "integer")]:
        with pytest.raises(ValueError, match=pattern):
            model.evaluate(x, cond=bad)
    strict = make(conditional=True, num_classes=2, label_dropout=0.0)
    with pytest.raises(ValueError, match="trained without label dropout"):
        strict.sample(2)
    assert strict.evaluate(x, cond=torch.tensor([0, 1, 1]))["nll_nats"].shape == (3,)


def linear_gaussian_cvae(D: int = 3, m: int = 2, K: int = 3, sigma: float = 0.3):
    """A conditional VAE made exact: decoder x = W z + b_c (+ sigma noise) and an encoder equal to the true
    posterior q(z | x, c) = N(S W^T (x - b_c) / sigma^2, S), S = (I + W^T W / sigma^2)^-1 (W has orthogonal
    columns, so S is diagonal). Then log p(x | c) = log N(x; b_c, W W^T + sigma^2 I), and every importance
    weight equals it. The class embedding is one-hot, so the decoder's weight on it holds the b_c (the null
    class: b = 0). Returns (vae, W W^T + sigma^2 I, b (K + 1, D))."""
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(D, m, generator=g, dtype=torch.float64))
    W = q * torch.tensor([1.5, 0.7], dtype=torch.float64)
    b = torch.cat([torch.randn(K, D, generator=g, dtype=torch.float64), torch.zeros(1, D, dtype=torch.float64)])
    model = VAE(data_shape=[D], latent_dim=m, decoder_std=sigma, conditional=True, num_classes=K).double()
    S = 1 / (1 + (W**2).sum(0) / sigma**2)
    A = S[:, None] * W.T / sigma**2  # posterior mean = A (x - b_c)
    B = torch.zeros(D, LABEL_DIM, dtype=torch.float64)
    B[:, : K + 1] = b.T
    head, dec = nn.Linear(D + LABEL_DIM, 2 * m).double(), nn.Linear(m + LABEL_DIM, D).double()
    with torch.no_grad():
        model.label.table.weight.copy_(torch.eye(K + 1, LABEL_DIM))
        head.weight.copy_(torch.cat([torch.cat([A, -A @ B], 1), torch.zeros(m, D + LABEL_DIM, dtype=torch.float64)]))
        head.bias.copy_(torch.cat([torch.zeros(m, dtype=torch.float64), 0.5 * torch.log(S)]))
        dec.weight.copy_(torch.cat([W, B], 1))
        dec.bias.zero_()
    model.encoder, model.decoder_net = nn.Sequential(nn.Identity(), head), dec
    return model, W @ W.T + sigma**2 * torch.eye(D, dtype=torch.float64), b


def test_conditional_vae_bound_is_exact_for_a_linear_gaussian_model():
    """The IWAE and ELBO of q(z | x, c) = p(z | x, c) equal -log p(x | c) for any K and chunking (E9, E13).
    Mutation: c not given to the encoder or the decoder, the labels of K draws repeated in the wrong order,
    or evaluate's chunks of examples paired with the wrong labels."""
    model, cov, b = linear_gaussian_cvae()
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 2, 2, 1, 0, 1])
    x = b[y] + torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), cov).sample((7,))
    nll = -torch.distributions.MultivariateNormal(b[y], cov).log_prob(x)
    for k, max_rows in [(1, 2048), (10, 3), (7, 20)]:
        ev = model.evaluate(x, cond=y, generator=g, k=k, max_rows=max_rows)
        torch.testing.assert_close(ev["nll_nats"], nll)
        torch.testing.assert_close(ev["elbo_nats"], nll)
    unconditional = -torch.distributions.MultivariateNormal(b[3], cov).log_prob(x)  # the null class: b = 0
    torch.testing.assert_close(model.evaluate(x, generator=g, k=5)["nll_nats"], unconditional)
    assert model.sample(4, cond=torch.tensor([0, 1, 2, 3]), generator=g).shape == (4, 3)


def test_conditional_vae_evaluate_depends_on_the_class():
    """Fresh: every class gives the same bound (zero class embedding). Trained on four labelled blobs: the
    true class gives a better bound than a wrong one. Mutation: labels not reaching the nets."""
    x, y = blobs(512, seed=1)
    model = vae(conditional=True, num_classes=4)
    model.eval()

    def nll(cond):
        return model.evaluate(x[:64], cond=cond, k=20, generator=torch.Generator().manual_seed(0))["nll_nats"]

    torch.testing.assert_close(nll(y[:64]), nll((y[:64] + 1) % 4), rtol=0, atol=0)
    adam_steps(model, x, y, steps=300, lr=3e-3)
    true, wrong = nll(y[:64]), nll((y[:64] + 1) % 4)
    assert (wrong - true).mean() > 1.0  # nats per example; the classes are 1.0 apart and 0.08 wide
