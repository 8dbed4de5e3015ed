"""Training throughput of dgm's UNet against diffusers' UNet2DModel at equal parameter count.

One training step = forward + MSE loss + backward + AdamW step, on random images and random levels,
same batch size and thread count for all nets. Warm-up steps are excluded. The nets are timed in
interleaved repeats (the order rotates from one repeat to the next, so no net always runs first): each
repeat times ``--iters`` steps of every net back to back. Reported per net: WALL-CLOCK images/s as
min / median / max over the repeats (the figure to read) and, secondary, images per CPU-second of this
process. For dgm against each diffusers variant: the ratio of the median wall-clock rates and the range
(min..max) of the paired per-repeat ratios, which is what interleaving buys; a range that straddles 1
is parity within the noise of the machine. The load average (os.getloadavg) at start and end is printed.

    .venv/bin/python benchmarks/train_throughput.py --size 28 --batch 32 --threads 1 --repeats 7
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from dgm.nets import UNet

LEVELS = 1000  # levels are drawn from 0..LEVELS-1, as in a DDPM with L = 1000


def diffusers_unet(size: int, channels: int, base: int, groups: int, head_channels: int):
    """The diffusers UNet2DModel laid out like dgm's default: (1, 2) mults, attention at the low level."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=size, in_channels=channels, out_channels=channels, layers_per_block=2,
        block_out_channels=(base, 2 * base), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=groups,
        attention_head_dim=head_channels,
    )


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def make_step(net, forward, batch: int, channels: int, size: int, seed: int):
    """Return a closure doing one AdamW training step of ``net`` on a fixed random batch."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, size, size, generator=g)
    target = torch.randn(batch, channels, size, size, generator=g)
    i = torch.randint(0, LEVELS, (batch,), generator=g)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(forward(x, i), target)
        loss.backward()
        opt.step()

    return step


def images_per_second(step, iters: int, batch: int) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU second of this process) over ``iters`` steps."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(iters):
        step()
    return iters * batch / (time.perf_counter() - w0), iters * batch / (time.process_time() - c0)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def verdict(ours: list[float], other: list[float], paired: list[float]) -> str:
    """What the wall-clock spreads and the paired per-repeat ratios dgm / other support, in words."""
    overlap = min(ours) <= max(other) and min(other) <= max(ours)
    ranges = "min..max ranges overlap" if overlap else "min..max ranges disjoint"
    if min(paired) > 1:
        return f"{ranges}; dgm faster in every paired repeat"
    if max(paired) < 1:
        return f"{ranges}; dgm slower in every paired repeat"
    return f"{ranges}; paired ratios straddle 1: parity"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=28, help="image side (28 for MNIST, 8 for digits)")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--base", type=int, default=64, help="base channels of both nets")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per net before timing")
    ap.add_argument("--iters", type=int, default=3, help="timed steps per net per repeat")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats")
    args = ap.parse_args()
    load_start, t_start = load(), time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = UNet(in_channels=args.channels, base_channels=args.base, image_size=args.size)
    # diffusers' default attention_head_dim is 8 (16 heads at 128 channels); dgm uses 64-channel
    # heads, so diffusers is also timed with 64-channel heads: same parameters, same attention maths.
    theirs8 = diffusers_unet(args.size, args.channels, args.base, groups=8, head_channels=8)
    theirs64 = diffusers_unet(args.size, args.channels, args.base, groups=8, head_channels=64)
    ours_name = "dgm UNet (64-ch heads)"
    nets = {
        ours_name: (ours, ours.forward),
        "diffusers UNet2DModel (default, 8-ch heads)": (theirs8, lambda x, i: theirs8(x, i, return_dict=False)[0]),
        "diffusers UNet2DModel (64-ch heads)": (theirs64, lambda x, i: theirs64(x, i, return_dict=False)[0]),
    }
    steps = {name: make_step(net, fwd, args.batch, args.channels, args.size, seed=1)
             for name, (net, fwd) in nets.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    names = list(nets)
    rates = {name: [] for name in nets}
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order
            rates[name].append(images_per_second(steps[name], args.iters, args.batch))

    print(f"# {datetime.date.today()}  torch {torch.__version__}  {platform.processor() or platform.machine()}"
          f"  threads={args.threads}  input {args.batch}x{args.channels}x{args.size}x{args.size}"
          f"  warmup={args.warmup} iters={args.iters} repeats={args.repeats}")
    print(f"# load average (1, 5, 15 min): start {load_start}, end {load()};"
          f" {time.perf_counter() - t_start:.0f} s in all")
    print("| net | parameters | images / wall second: min / median / max | images / CPU-second (median) |")
    print("|---|---|---|---|")
    wall = {name: [w for w, _ in rates[name]] for name in nets}
    for name, (net, _) in nets.items():
        w = wall[name]
        cpu = statistics.median(c for _, c in rates[name])
        print(f"| {name} | {n_params(net):,} | {min(w):.2f} / {statistics.median(w):.2f} / {max(w):.2f}"
              f" | {cpu:.2f} |")
    for name in names[1:]:
        paired = [a / b for a, b in zip(wall[ours_name], wall[name], strict=True)]
        of_medians = statistics.median(wall[ours_name]) / statistics.median(wall[name])
        print(f"dgm / {name}: ratio of median wall rates {of_medians:.2f},"
              f" paired per-repeat ratios {min(paired):.2f}..{max(paired):.2f}"
              f" (median {statistics.median(paired):.2f}) -> {verdict(wall[ours_name], wall[name], paired)}")
    for name in names:
        print(f"# wall images/s, {name}, in repeat order: " + ", ".join(f"{w:.2f}" for w in wall[name]))


if __name__ == "__main__":
    main()
