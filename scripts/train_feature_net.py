"""Train the shipped digit feature nets (dgm.evaluation.features) and write their weights and card.

    .venv/bin/python scripts/train_feature_net.py [--mnist-dir ../shared/data/mnist] [--seed 0]

Writes src/dgm/assets/feature_net.safetensors (tensors prefixed "digits8." / "mnist28.") and
src/dgm/assets/feature_net.json (architecture, data, seed, measured accuracies, the command).
Data: scikit-learn's 8x8 digits (first 1437 train, last 360 held out) and the MNIST t10k IDX files
(first 9000 train, last 1000 held out). Augmentation: random shifts of up to 1 pixel (8x8) or 2 pixels
(28x28), the border filled with background. Seeded and single-threaded, so reruns give the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from dgm.evaluation.features import (
    ARCHITECTURES,
    CARD_FILE,
    DIGITS_N_TRAIN,
    FEATURE_DIM,
    MNIST_N_TRAIN,
    WEIGHTS_FILE,
    DigitFeatureNet,
    training_data,
)

REPO = Path(__file__).resolve().parents[1]

# kind -> training recipe
RECIPES = {
    "digits8": {"epochs": 100, "batch_size": 64, "lr": 3e-3, "weight_decay": 1e-4, "max_shift": 1},
    "mnist28": {"epochs": 20, "batch_size": 64, "lr": 3e-3, "weight_decay": 1e-4, "max_shift": 2},
}


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of x (N, 1, H, W) by integer offsets in [-max_shift, max_shift]^2,
    filling the uncovered border with the background value -1."""
    n, _, h, w = x.shape
    m = max_shift
    padded = F.pad(x, (m, m, m, m), value=-1.0)
    dy = torch.randint(0, 2 * m + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * m + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, 1, h, w + 2 * m)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, 1, h, w)
    return out.gather(3, cols)


@torch.no_grad()
def accuracy(net: DigitFeatureNet, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    pred = torch.cat([net(chunk).argmax(1) for chunk in x.split(1000)])
    return float((pred == y).double().mean())


def train_one(kind: str, mnist_dir: Path, seed: int) -> tuple[DigitFeatureNet, dict]:
    recipe = RECIPES[kind]
    x_train, y_train, x_held, y_held = training_data(kind, mnist_dir)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    net = DigitFeatureNet(kind)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    n, bs = len(x_train), recipe["batch_size"]
    steps_per_epoch = math.ceil(n / bs)
    total = recipe["epochs"] * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / total)))
    t0 = time.perf_counter()
    for epoch in range(recipe["epochs"]):
        net.train()
        perm = torch.randperm(n, generator=generator)
        for idx in perm.split(bs):
            xb = random_shift(x_train[idx], recipe["max_shift"], generator)
            loss = F.cross_entropy(net(xb), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if epoch % max(1, recipe["epochs"] // 6) == 0 or epoch == recipe["epochs"] - 1:
            print(f"{kind} epoch {epoch + 1}/{recipe['epochs']} loss {loss.item():.4f} "
                  f"held-out acc {accuracy(net, x_held, y_held):.4f}", flush=True)
    net.eval()
    with torch.no_grad():
        hidden = torch.cat([net.hidden(net.conv(chunk)) for chunk in x_train.split(1000)])
        net.feature_scale.fill_(hidden.double().square().mean().rsqrt().item())
    report = {
        "train_accuracy": round(accuracy(net, x_train, y_train), 4),
        "heldout_accuracy": round(accuracy(net, x_held, y_held), 4),
        "n_train": len(x_train),
        "n_heldout": len(x_held),
        "train_seconds": round(time.perf_counter() - t0, 1),
        "recipe": recipe,
        "parameters": sum(p.numel() for p in net.parameters()),
        "feature_scale": net.feature_scale.item(),
        "architecture": ARCHITECTURES[kind] | {"input_shape": [1] + [ARCHITECTURES[kind]["side"]] * 2},
    }
    print(f"{kind}: train acc {report['train_accuracy']}, held-out acc {report['heldout_accuracy']}, "
          f"{report['train_seconds']} s", flush=True)
    return net, report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-dir", type=Path, default=REPO / ".." / "shared" / "data" / "mnist",
                        help="folder of t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    parser.add_argument("--out", type=Path, default=REPO / "src" / "dgm" / "assets")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    tensors, cards = {}, {}
    for kind in ARCHITECTURES:
        net, report = train_one(kind, args.mnist_dir, args.seed)
        tensors |= {f"{kind}.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
        cards[kind] = report
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / WEIGHTS_FILE
    save_file(tensors, str(weights), metadata={"format": "pt", "card": CARD_FILE})
    weights.chmod(0o644)  # safetensors creates it owner-only; it ships in the package

    card_path = args.out / CARD_FILE
    old = json.loads(card_path.read_text()) if card_path.is_file() else {}
    card = {
        "name": "dgm digit feature nets",
        "purpose": "offline feature space for FD/KID/precision-recall of generated digits (dgm.evaluation.metrics)",
        "weights": WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "feature_dim": FEATURE_DIM,
        "feature_layer": "penultimate: ReLU(Linear(flattened conv features)) feeding the 10-way classifier, "
                         "times feature_scale = 1 / RMS of those activations over the training images",
        "layers": "3x (Conv3x3 pad 1 + ReLU [+ MaxPool2]) -> Flatten -> Linear(64) + ReLU -> "
                  "Dropout(0.3) -> Linear(10)",
        "input": "model space: pixel values mapped linearly to [-1, 1] (background -1)",
        "data": {
            "digits8": f"scikit-learn load_digits (1797 8x8 images, values 0..16 -> x/8 - 1); "
                       f"first {DIGITS_N_TRAIN} train, the rest held out",
            "mnist28": f"MNIST t10k IDX files (10000 28x28 images, 0..255 -> x/127.5 - 1); "
                       f"first {MNIST_N_TRAIN} train, last {10000 - MNIST_N_TRAIN} held out",
        },
        "augmentation": "random integer shifts, up to 1 px (8x8) / 2 px (28x28), border = background",
        "optimizer": "AdamW, cosine learning-rate decay to 0, cross-entropy",
        "seed": args.seed,
        "threads": args.threads,
        "torch": torch.__version__,
        "command": shlex.join(["python", "scripts/train_feature_net.py",
                               *(sys.argv[1:] if argv is None else argv)]),
        "nets": cards,
    }
    if "sanity" in old:  # written by scripts/check_feature_net.py --write-card; stale once retrained
        card["sanity_previous_weights"] = old["sanity"]
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote {weights} ({weights.stat().st_size / 1024:.0f} KiB) and {card_path}")


if __name__ == "__main__":
    main()
