"""Sanity check of the shipped feature space: metrics must rank real < blurred < noise.

    .venv/bin/python scripts/check_feature_net.py [--mnist-dir ../shared/data/mnist] [--write-card]

For each data set (scikit-learn digits, all 1797; MNIST t10k, all 10000 if the files are there) the
images are split at random (seed 0) into halves A and B, and A is compared with B (the floor), with B
blurred by a Gaussian of std 0.5 and 1 pixel, and with uniform noise in [-1, 1], all in the feature
space of dgm.evaluation.features. Prints a table; --write-card stores it under "sanity" in the asset card.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dgm.data.files import read_idx
from dgm.evaluation.distances import frechet_distance, kid, precision_recall
from dgm.evaluation.features import CARD_FILE, features

REPO = Path(__file__).resolve().parents[1]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur images x (N, 1, H, W) with a separable Gaussian of std ``sigma`` pixels (edges replicated)."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    g = torch.exp(-t.square() / (2 * sigma**2))
    g = g / g.sum()
    x = F.pad(x, (r, r, r, r), mode="replicate")
    x = F.conv2d(x, g.view(1, 1, 1, -1))
    return F.conv2d(x, g.view(1, 1, -1, 1))


def load(name: str, mnist_dir: Path) -> torch.Tensor | None:
    """All images of a data set in model space (N, 1, H, W), or None if the files are missing."""
    if name == "digits":
        from sklearn.datasets import load_digits

        return torch.as_tensor(load_digits().images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    path = mnist_dir / "t10k-images-idx3-ubyte.gz"
    return torch.from_numpy(read_idx(path)).float().unsqueeze(1) / 127.5 - 1.0 if path.is_file() else None


def sanity_table(x: torch.Tensor, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    half = x.shape[0] // 2
    a, b = x[perm[:half]], x[perm[half : 2 * half]]
    others = {
        "real B (floor)": b,
        "B blurred s=0.5": gaussian_blur(b, 0.5),
        "B blurred s=1": gaussian_blur(b, 1.0),
        "uniform noise": torch.rand(b.shape, generator=g) * 2 - 1,
    }
    fa = features(a)
    rows = []
    for label, other in others.items():
        fo = features(other)
        kid_mean, kid_std = kid(fa, fo, subsets=50, subset_size=min(1000, half), generator=g)
        p, r = precision_recall(fa, fo, k=3)
        rows.append({"vs real A": label, "n": half, "fd": frechet_distance(fa, fo), "kid": kid_mean,
                     "kid_std": kid_std, "precision": p, "recall": r})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-dir", type=Path, default=REPO / ".." / "shared" / "data" / "mnist")
    parser.add_argument("--write-card", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {}
    for name in ("digits", "mnist"):
        x = load(name, args.mnist_dir)
        if x is None:
            print(f"{name}: files not found, skipped")
            continue
        t0 = time.perf_counter()
        rows = sanity_table(x, args.seed)
        results[name] = rows
        print(f"\n{name} ({x.shape[0]} images, halves of {rows[0]['n']}; {time.perf_counter() - t0:.1f} s)")
        print(f"{'vs real A':<18}{'FD':>10}{'KID':>12}{'KID std':>10}{'precision':>11}{'recall':>8}")
        for r in rows:
            print(f"{r['vs real A']:<18}{r['fd']:>10.3f}{r['kid']:>12.5f}{r['kid_std']:>10.5f}"
                  f"{r['precision']:>11.3f}{r['recall']:>8.3f}")
    if args.write_card:
        card_path = REPO / "src" / "dgm" / "assets" / CARD_FILE
        card = json.loads(card_path.read_text())
        card.pop("sanity_previous_weights", None)
        card["sanity"] = {
            "command": "python scripts/check_feature_net.py --write-card",
            "protocol": __doc__.split("\n\n")[2].replace("\n", " "),
            "kid": "50 subsets of min(1000, n)", "precision_recall_k": 3,
            "results": {name: [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()}
                               for row in rows] for name, rows in results.items()},
        }
        card_path.write_text(json.dumps(card, indent=2) + "\n")
        print(f"\nwrote the table into {card_path}")


if __name__ == "__main__":
    main()
