"""Write a 2-D mixture a user might bring: anisotropic components, unequal weights, a small far mode.

    .venv/bin/python benchmarks/make_user_mixture.py OUT_PREFIX   # writes OUT_PREFIX.npy and OUT_PREFIX.json

The .npy holds 20,000 points (float64, shape (20000, 2)) in data space; the .json the exact mixture, for
benchmarks/recipe_vs_oracle.py --mixture.
"""

import json
import sys

import numpy as np
import torch

import dgm

SPEC = {
    "weights": [0.55, 0.3, 0.12, 0.03],
    "means": [[0.0, 0.0], [6.0, 3.0], [-4.0, 5.0], [25.0, -20.0]],  # the last one: small and far
    "covs": [
        [[4.0, 1.9], [1.9, 1.0]],   # long and tilted
        [[0.3, 0.0], [0.0, 2.5]],   # tall
        [[0.5, -0.45], [-0.45, 0.5]],  # thin diagonal
        [[0.2, 0.0], [0.0, 0.2]],   # the far mode
    ],
}


def main() -> None:
    prefix = sys.argv[1]
    gm = dgm.GaussianMixture(SPEC["weights"], SPEC["means"], SPEC["covs"])
    x = gm.sample(20_000, torch.Generator().manual_seed(0)).numpy()
    np.save(prefix + ".npy", x)
    with open(prefix + ".json", "w") as f:
        json.dump(SPEC, f, indent=1)
    print(f"wrote {prefix}.npy {x.shape} and {prefix}.json; exact entropy {gm.entropy(200_000):.4f} nats")


if __name__ == "__main__":
    main()
