"""Training throughput of dgm's UNet against diffusers' UNet2DModel at about equal parameter count.

One training step = forward + MSE loss + backward + AdamW step, on random images and random levels,
same batch size and thread count for both nets. Warm-up steps are excluded; the two nets are timed in
interleaved repeats and the median images/s of each is reported, with the ratio dgm / diffusers.

    .venv/bin/python benchmarks/train_throughput.py --size 28 --batch 32 --threads 2
"""

from __future__ import annotations

import argparse
import datetime
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=28, help="image side (28 for MNIST, 8 for digits)")
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--base", type=int, default=64, help="base channels of both nets")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per net before timing")
    ap.add_argument("--iters", type=int, default=5, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repeats; the median is reported")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    ours = UNet(in_channels=args.channels, base_channels=args.base, image_size=args.size)
    # diffusers' default attention_head_dim is 8 (16 heads at 128 channels); dgm uses 64-channel
    # heads, so diffusers is also timed with 64-channel heads: same parameters, same attention maths.
    theirs8 = diffusers_unet(args.size, args.channels, args.base, groups=8, head_channels=8)
    theirs64 = diffusers_unet(args.size, args.channels, args.base, groups=8, head_channels=64)
    nets = {
        "dgm UNet (64-ch heads)": (ours, ours.forward),
        "diffusers UNet2DModel (default, 8-ch heads)": (theirs8, lambda x, i: theirs8(x, i, return_dict=False)[0]),
        "diffusers UNet2DModel (64-ch heads)": (theirs64, lambda x, i: theirs64(x, i, return_dict=False)[0]),
    }
    steps = {name: make_step(net, fwd, args.batch, args.channels, args.size, seed=1)
             for name, (net, fwd) in nets.items()}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    rates = {name: [] for name in nets}
    for _ in range(args.repeats):
        for name, step in steps.items():
            rates[name].append(images_per_second(step, args.iters, args.batch))

    print(f"# {datetime.date.today()}  torch {torch.__version__}  {platform.processor() or platform.machine()}"
          f"  threads={args.threads}  input {args.batch}x{args.channels}x{args.size}x{args.size}")
    print("| net | parameters | images/s, wall (median) | images/s per CPU-second (median) | wall, all repeats |")
    print("|---|---|---|---|---|")
    medians = {}
    for name, (net, _) in nets.items():
        wall = [w for w, _ in rates[name]]
        cpu = [c for _, c in rates[name]]
        medians[name] = statistics.median(wall), statistics.median(cpu)
        runs = ", ".join(f"{r:.1f}" for r in wall)
        print(f"| {name} | {n_params(net):,} | {medians[name][0]:.2f} | {medians[name][1]:.2f} | {runs} |")
    ours_wall, ours_cpu = medians["dgm UNet (64-ch heads)"]
    for name, (wall, cpu) in list(medians.items())[1:]:
        print(f"ratio dgm / {name}: wall {ours_wall / wall:.2f}, CPU {ours_cpu / cpu:.2f}")


if __name__ == "__main__":
    main()
