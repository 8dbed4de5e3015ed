"""A trained DDPM on mixture data against the exact eps* of the same mixture (issue: recipes hold up).

    .venv/bin/python benchmarks/recipe_vs_oracle.py RUN [--mixture mixture.json] [--n 20000]

For each sampler, SW1 (model space) of n model samples and of n samples driven by the exact eps* (same
schedule, sampler and NFE) to n fresh draws of the true mixture (averaged over --refs reference sets), and
their ratio; then the full variational bound of the model and of eps* on the run's held-out points, paired
(the same noise for both, --seeds draws per point), and the gap with its standard error over points.
The mixture is the run's known density (gmm2d) or a JSON file {"weights", "means", "covs"} in data space.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import dgm
from dgm.data.spec import load_run_data
from dgm.evaluation.distances import sliced_wasserstein
from dgm.runs.checkpoint import load_model


def mixture_in_model_space(path: str, scaling) -> dgm.GaussianMixture:
    spec = json.loads(open(path).read())
    gm = dgm.GaussianMixture(spec["weights"], spec["means"], spec["covs"])
    shift = torch.as_tensor(scaling.shift, dtype=torch.float64)
    scale = torch.as_tensor(scaling.scale, dtype=torch.float64)
    return gm.affine(1 / scale, -shift / scale)  # x_model = (x - shift) / scale


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run")
    p.add_argument("--mixture", help="JSON mixture in data space (default: the run's known density)")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--refs", type=int, default=4, help="reference sets each SW1 is averaged over")
    p.add_argument("--seeds", type=int, default=4, help="noise draws per held-out point for the bound")
    p.add_argument("--samplers", default="ancestral,ddim,dpm++2m", help="comma-separated")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, config = load_model(args.run)
    data = load_run_data(config["data"])
    gm = mixture_in_model_space(args.mixture, data.scaling) if args.mixture else data.density
    if gm is None:
        raise SystemExit("the run's data has no known density: pass --mixture")
    s, n = model.schedule, args.n
    oracle = lambda x, i: gm.eps_star(s, x, i).to(x.dtype)  # noqa: E731
    refs = [gm.sample(n, torch.Generator().manual_seed(args.seed + 100 + k)).float() for k in range(args.refs)]
    proj = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    sw = lambda x: sum(sliced_wasserstein(x, r, generator=proj()) for r in refs) / len(refs)  # noqa: E731
    print(f"run {args.run}: schedule L={s.L}, {model.prediction}-prediction; n = {n}")
    print(f"{'sampler':<12} {'NFE':>5} {'SW1 model':>10} {'SW1 eps*':>10} {'ratio':>6} {'s':>6}")
    nfe = {"ancestral": None, "ddim": 50, "dpm++2m": 20}
    for name, steps in ((k, nfe[k]) for k in args.samplers.split(",")):
        t0 = time.time()
        g1, g2 = torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(args.seed)
        with torch.no_grad():
            x_model = dgm.sample(model.denoiser, s, (n, gm.D), sampler=name, steps=steps, generator=g1)
        x_star = dgm.sample(oracle, s, (n, gm.D), sampler=name, steps=steps, generator=g2)
        sw_m, sw_o = sw(x_model), sw(x_star)
        print(f"{name:<12} {steps or s.L:>5} {sw_m:>10.4f} {sw_o:>10.4f} {sw_m / sw_o:>6.2f} {time.time() - t0:>6.0f}")
    x0 = data.heldout
    b_model, b_star = torch.zeros(len(x0), dtype=torch.float64), torch.zeros(len(x0), dtype=torch.float64)
    for k in range(args.seeds):  # the same noise for both (vlb draws it in float64 whatever the dtype)
        with torch.no_grad():
            b_model += dgm.vlb(model.denoiser, s, x0, generator=torch.Generator().manual_seed(1 + k)) / args.seeds
        b_star += dgm.vlb(oracle, s, x0.double(), generator=torch.Generator().manual_seed(1 + k)) / args.seeds
    gap = b_model - b_star
    exact = -gm.log_prob(x0.double()).mean().item()
    print(f"bound on {len(x0)} held-out points x {args.seeds} noise draws (nats, model space): "
          f"model {b_model.mean():.4f}, eps* {b_star.mean():.4f}, "
          f"gap {gap.mean():.4f} +- {gap.std() / len(gap) ** 0.5:.4f}; exact NLL {exact:.4f}")


if __name__ == "__main__":
    main()
