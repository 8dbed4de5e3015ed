"""Training steps per second of 28x28 DDPM nets on this CPU: the levers of the MNIST recipe, side by side.

    .venv/bin/python benchmarks/mnist_step_rate.py [--threads 2] [--repeats 5] [--iters 5] [--compile]

One step: a batch of 64 random 28x28 images, ``model.loss`` (dgm: dequantization, a level per image, the eps
loss) or diffusers' noise-prediction MSE, backward, AdamW. Rows: dgm's image UNet (base 32, multipliers 1, 2, 2,
attention at 7x7) with two residual blocks per level and with one (on the way down; the way up has one more), in
float32 and under bfloat16 autocast (``--mixed-precision bf16``), the first also in channels-last memory format;
diffusers' UNet2DModel of issue 13's peer recipe (1.1 M parameters) in float32 and under bfloat16 autocast;
UNets that fold 2x2 patches into channels first (``patch_size = 2``: they run at 14 -> 7 -> 4, attention at 4x4)
with base widths 32, 48 and 64 under bfloat16 autocast, and 48 in float32. The row of the recipe's net says so.
Each repeat runs every row for ``--iters`` steps after 2 untimed ones, the rows in a rotating order, so the
ratios compare rows measured within the same minute. Reports steps/s: median (min..max) over the repeats.
``--compile`` adds the recipe's net under ``torch.compile`` (inductor) with bfloat16 autocast, and prints how long
its first (compiling) step took.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from dgm.models import build_model
from dgm.models.ddpm import DDPM
from dgm.training.recipes import DDPM_IMAGE

NET_2 = {"kind": "unet", "base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 2,
         "attn_resolutions": [7], "groups": 8, "head_channels": 32}
NET_1 = {**NET_2, "num_res_blocks": 1}  # one residual block per level on the way down, two on the way up
PATCH_2 = {**NET_1, "patch_size": 2, "attn_resolutions": [4]}  # 2x2 patches into channels: 14x14 -> 7x7 -> 4x4


def dgm_row(net: dict, bf16: bool, channels_last: bool, compile_net: bool = False):
    model = build_model(DDPM.complete_config({**DDPM_IMAGE["model"], "net": net}, [1, 28, 28], 256))
    if compile_net:
        model.denoiser.net = torch.compile(model.denoiser.net, dynamic=False)
    x = torch.rand(64, 1, 28, 28) * 2 - 1
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)

    def loss():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model.loss(x, generator=g)[0].float()

    return model, loss


def diffusers_row(bf16: bool):
    import diffusers

    unet = diffusers.UNet2DModel(
        sample_size=28, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=32)
    x, t = torch.randn(64, 1, 28, 28), torch.randint(0, 1000, (64,))

    def loss():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return (unet(x, t).sample.float() - x).pow(2).mean()

    return unet, loss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="add a row: the recipe's net under torch.compile")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    recipe_net = DDPM_IMAGE["model"]["net"]

    def name(label: str, net: dict) -> str:
        return f"{label} (the recipe's)" if net == recipe_net else label

    patched = {width: {**PATCH_2, "base_channels": width} for width in (32, 48, 64)}
    rows = {
        name("dgm, 2 blocks/level", NET_2) + ", fp32": dgm_row(NET_2, False, False),
        "dgm, 2 blocks/level, bf16 autocast": dgm_row(NET_2, True, False),
        "dgm, 2 blocks/level, channels-last fp32": dgm_row(NET_2, False, True),
        "dgm, 2 blocks/level, channels-last bf16": dgm_row(NET_2, True, True),
        name("dgm, 1 block/level", NET_1) + ", fp32": dgm_row(NET_1, False, False),
        "dgm, 1 block/level, bf16 autocast": dgm_row(NET_1, True, False),
        name("dgm, 2x2 patches, base 48", patched[48]) + ", fp32": dgm_row(patched[48], False, False),
        **{name(f"dgm, 2x2 patches, base {w}", net) + ", bf16 autocast": dgm_row(net, True, False)
           for w, net in patched.items()},
        "diffusers peer UNet2DModel, fp32": diffusers_row(False),
        "diffusers peer UNet2DModel, bf16 autocast": diffusers_row(True),
    }
    if args.compile:
        rows[name("dgm, 2x2 patches, base 48", recipe_net) + ", bf16 autocast, torch.compile"] = dgm_row(
            recipe_net, True, False, compile_net=True)
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, (m, _) in rows.items()}

    def steps(name: str, n: int) -> float:
        _, loss = rows[name]
        t0 = time.perf_counter()
        for _ in range(n):
            value = loss()
            opts[name].zero_grad(set_to_none=True)
            value.backward()
            opts[name].step()
        return n / (time.perf_counter() - t0)

    names = list(rows)
    warm = {}
    for name in names:
        t0 = time.perf_counter()
        steps(name, 2)
        warm[name] = time.perf_counter() - t0
    rates = {name: [] for name in names}
    load0 = os.getloadavg()
    for r in range(args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            rates[name].append(steps(name, args.iters))
    load1 = os.getloadavg()
    base = statistics.median(rates[names[0]])
    print(f"threads {args.threads}, {args.repeats} repeats x {args.iters} steps, batch 64; load average "
          f"{load0[0]:.2f} -> {load1[0]:.2f}; torch {torch.__version__}\n")
    print("| net | parameters | steps/s median (min..max) | vs first row |\n|---|---|---|---|")
    for name in names:
        v = rates[name]
        n_par = sum(q.numel() for q in rows[name][0].parameters())
        print(f"| {name} | {n_par / 1e6:.2f} M | {statistics.median(v):.2f} ({min(v):.2f}..{max(v):.2f}) | "
              f"{statistics.median(v) / base:.2f} |")
    for name in names:
        if "torch.compile" in name:
            print(f"\n{name}: the first 2 steps (compiling) took {warm[name]:.0f} s")


if __name__ == "__main__":
    main()
