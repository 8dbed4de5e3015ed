"""Default model and training settings per kind of data, so ``dgm train KIND --data DATA`` needs no flags.

Three families, told apart by the data's ``Scaling``: 2-D (or any D) ``vector`` data, ``small_image``
(side <= 16, e.g. the 8x8 digits) and ``image`` (e.g. 28x28 MNIST). ``TABLE`` holds one entry per model
kind and family; ``recipe`` looks one up and lets the model class fill in what depends on the data
(``complete_config``: shapes, bins, the net's input size).

Measured on gmm2d (``dgm train ddpm --data gmm2d --minutes 2``: the recipe's 10,000 steps in 93 s on one
thread), against the exact eps* of the mixture with the same schedule and sampler
(``benchmarks/recipe_vs_oracle.py``; SW1 of 20,000 samples averaged over 4 reference sets):

    sampler (NFE)      SW1 model   SW1 eps*   ratio
    ancestral (1000)      0.0165     0.0099    1.66
    ddim (50)             0.0183     0.0120    1.53
    dpm++2m (20)          0.0176     0.0109    1.61
    variational bound on the 2,000 held-out points, 4 paired noise draws: 1.5146 vs 1.4801 nats (model
    space), gap 0.0345 +- 0.0042 nats.

Earlier single-estimate runs of the same net predicting eps with the linear schedule (6000 steps) were
about 2x worse in SW1 with ddim and dpm++2m; see the note at DDPM_VECTOR.
"""

from __future__ import annotations

import copy

from dgm.models import MODEL_KINDS, model_class
from dgm.runs.device import bf16_is_fast

FAMILIES = ("vector", "small_image", "image")

# DDPM on 2-D vectors: a 3-block residual MLP predicting v (Salimans & Ho 2022), cosine schedule, L = 1000.
# v keeps x0_hat = alpha_bar x - sigma_bar v_hat bounded at level L, where eps-prediction divides its error
# by alpha_bar_L (5e-5 cosine, 6e-3 linear) in the first ddim / dpm++2m step. Figures: module docstring.
DDPM_VECTOR = {
    "model": {"net": {"kind": "mlp", "hidden": 128, "depth": 3, "emb_dim": 128}, "schedule": "cosine",
              "levels": 1000, "prediction": "v", "objective": "v", "weighting": "simple"},
    "train": {"steps": 10000, "batch_size": 256, "lr": 2e-3, "warmup_steps": 200, "ema_decay": 0.999,
              "lr_decay": "cosine"},
}
# DDPM on 8x8 digits: a small UNet (8 -> 4, attention at 4x4). Linear schedule: the cosine one puts a weight
# of ~500 on the eps error of its last 10 levels in the bound (E30), linear ~0.1. Dequantized (see DDPM): the
# 17 gray levels are 0.125 apart, so without it eps* at low noise is a sawtooth and the bound exceeds 4 bits/dim.
DDPM_SMALL_IMAGE = {
    "model": {"net": {"kind": "unet", "base_channels": 32, "channel_mults": [1, 2], "num_res_blocks": 1,
                      "attn_resolutions": [4], "groups": 8, "head_channels": 32},
              "schedule": "linear", "levels": 1000, "prediction": "eps", "objective": "eps",
              "weighting": "simple", "dequantize": True},
    "train": {"steps": 3000, "batch_size": 128, "lr": 1e-3, "warmup_steps": 200, "ema_decay": 0.999},
}
# DDPM on 28x28 images: a UNet on 2x2 patches (28x28x1 folded to 14x14x4, then 14 -> 7 -> 4, attention at 4x4).
# Issue 13 (benchmarks/RESULTS.md, "MNIST time to quality"): lr 1e-3 with 200 warm-up steps (was 2e-4 and 500, too slow
# for a 15-minute run); bfloat16 autocast where it is measured faster ("auto": CPUs with AMX or AVX-512 BF16, where a
# step takes 0.55-0.66 of the time); one residual block per level on the way down (was two: 1.5x the steps in 15
# minutes; FD at 300 steps 16.94 vs 16.60); min-SNR weighting (Hang et al. 2023: FD 3.58 vs 4.39 after 15 minutes;
# with one block per level too, 2.32); 2x2 patches at base width 48 (was 32 channels at 28x28: 4,180 steps in 15
# minutes instead of 2,426 on an AMD EPYC, FD 2.46 vs 3.23; widths 32 and 64 scored 2.73 and 3.23, 4x4 patches 5.31);
# a guide for autoguidance, the EMA of step 500 (Karras et al. 2024: with it, SDE-DPM-Solver++(2M) at 20 steps and
# w = 1 takes the 15-minute model from FD 1.32 and confident rate 0.885 to 0.77 and 0.935, three seeds; on one seed
# guides of steps 250, 450, 884 and 2,313 gave 0.82/0.946, 0.73/0.951, 0.74/0.926, 0.81/0.912; benchmarks/RESULTS.md,
# "Ninth session").
DDPM_IMAGE = {
    "model": {"net": {"kind": "unet", "base_channels": 48, "channel_mults": [1, 2, 2], "num_res_blocks": 1,
                      "attn_resolutions": [4], "groups": 8, "head_channels": 32, "patch_size": 2},
              "schedule": "linear", "levels": 1000, "prediction": "eps", "objective": "eps",
              "weighting": "min_snr", "dequantize": True, "guide_step": 500},
    "train": {"steps": 20000, "batch_size": 64, "lr": 1e-3, "warmup_steps": 200, "ema_decay": 0.9995,
              "mixed_precision": "auto"},
}
# The 28x28 recipe's net before the patches, for images whose sides are not multiples of the patch size.
FULL_RESOLUTION_NET = {"base_channels": 32, "attn_resolutions": [7], "patch_size": 1}
VAE_VECTOR = {
    "model": {"latent_dim": 2, "arch": "mlp", "hidden": [128, 128], "decoder": "gaussian",
              "decoder_std": "learned", "beta": 1.0, "kl_warmup_steps": 500},
    "train": {"steps": 4000, "batch_size": 512, "lr": 2e-3, "warmup_steps": 100, "ema_decay": 0.999},
}
VAE_SMALL_IMAGE = {
    "model": {"latent_dim": 16, "arch": "mlp", "hidden": [256, 256], "decoder": "discretized",
              "decoder_std": "learned", "beta": 1.0, "kl_warmup_steps": 500},
    "train": {"steps": 3000, "batch_size": 128, "lr": 1e-3, "warmup_steps": 100, "ema_decay": 0.999},
}
VAE_IMAGE = {
    "model": {"latent_dim": 32, "arch": "conv", "hidden": [32, 64], "decoder": "discretized",
              "decoder_std": "learned", "beta": 1.0, "kl_warmup_steps": 1000},
    "train": {"steps": 10000, "batch_size": 128, "lr": 1e-3, "warmup_steps": 200, "ema_decay": 0.999},
}
# LDM on images (Rombach et al. 2022; dgm.models.ldm): the VAE of the family for ``vae_steps`` steps, then a residual
# MLP DDPM on its standardized latents (v-prediction, cosine schedule, as on 2-D vectors). Issue 13 (benchmarks/
# RESULTS.md, "Latent diffusion"): on MNIST the conv VAE's reconstructions after about 1,200 steps are as good as
# real data in the feature net's space, so the latent DDPM's fit decides the samples.
LDM_LATENT_DDPM = {"net": {"kind": "mlp", "hidden": 512, "depth": 4, "emb_dim": 128}, "schedule": "cosine",
                   "levels": 1000, "prediction": "v", "objective": "v", "weighting": "simple"}


def _ldm(vae: dict, vae_steps: int, ddpm_steps: int) -> dict:
    """An LDM entry: the family's VAE for ``vae_steps``, then the latent DDPM for ``ddpm_steps``."""
    return {"model": {"vae": vae["model"], "ddpm": LDM_LATENT_DDPM, "vae_steps": vae_steps},
            "train": {"steps": vae_steps + ddpm_steps, "batch_size": 128, "lr": 1e-3, "warmup_steps": 200,
                      "ema_decay": 0.999}}


HVAE_LATENTS = {"vector": [2, 2], "small_image": [16, 8], "image": [32, 16]}  # (m_1, m_2), z_1 next to x


def _hvae(vae: dict, latents: list[int]) -> dict:
    """An HVAE entry: the VAE's, with two latent layers in place of one."""
    model = {k: v for k, v in vae["model"].items() if k != "latent_dim"} | {"latent_dims": latents}
    return {"model": model, "train": vae["train"]}


TABLE = {
    ("ddpm", "vector"): DDPM_VECTOR, ("ddpm", "small_image"): DDPM_SMALL_IMAGE, ("ddpm", "image"): DDPM_IMAGE,
    ("vae", "vector"): VAE_VECTOR, ("vae", "small_image"): VAE_SMALL_IMAGE, ("vae", "image"): VAE_IMAGE,
    ("hvae", "vector"): _hvae(VAE_VECTOR, HVAE_LATENTS["vector"]),
    ("hvae", "small_image"): _hvae(VAE_SMALL_IMAGE, HVAE_LATENTS["small_image"]),
    ("hvae", "image"): _hvae(VAE_IMAGE, HVAE_LATENTS["image"]),
    ("ldm", "small_image"): _ldm(VAE_SMALL_IMAGE, 3000, 10000), ("ldm", "image"): _ldm(VAE_IMAGE, 1500, 20000),
}
assert {kind for kind, _ in TABLE} == set(MODEL_KINDS), "a recipe for every model kind"


def family(scaling) -> str:
    """"vector", "small_image" (largest side <= 16) or "image" for a data set's ``Scaling``."""
    if scaling.kind == "vector":
        return "vector"
    elif scaling.kind == "image":
        return "small_image" if max(scaling.shape[-2:]) <= 16 else "image"
    else:
        raise ValueError(f"unknown data kind {scaling.kind!r}; expected 'vector' or 'image'")


def recipe(kind: str, scaling, device="auto") -> tuple[dict, dict]:
    """(model config, train settings) for a model ``kind`` (one of ``MODEL_KINDS``) on data with ``scaling``,
    training on ``device`` (it decides a ``mixed_precision`` of "auto": ``resolve_precision``).

    The model config is complete (``build_model`` takes it); the train settings are ``TrainConfig`` keys.
    """
    cls = model_class(kind)  # ValueError naming an unknown kind
    if (kind, family(scaling)) not in TABLE:
        raise ValueError(f"an {kind} models images; this data is {family(scaling)} data of shape "
                         f"{list(scaling.shape)}")
    entry = copy.deepcopy(TABLE[kind, family(scaling)])
    net = entry["model"].get("net", {})
    if any(side % net.get("patch_size", 1) for side in scaling.shape[-2:]):  # e.g. 29x29: no 2x2 patches
        net |= FULL_RESOLUTION_NET
    train = entry["train"]
    if "mixed_precision" in train:
        train["mixed_precision"] = resolve_precision(train["mixed_precision"], device)
    return cls.complete_config(entry["model"], list(scaling.shape), scaling.bins), train


def resolve_precision(value: str, device) -> str:
    """A recipe's (or --mixed-precision's) ``"auto"``: "bf16" where bfloat16 autocast is measured faster on
    ``device`` (``dgm.runs.device.bf16_is_fast``), else "no"; any other value unchanged. config.json records the
    result, so a resumed run keeps it on any machine."""
    if value != "auto":
        return value
    return "bf16" if bf16_is_fast(device) else "no"


def default_threads(scaling) -> int | None:
    """CPU threads for training: 1 for vectors and small images (their tensors are too small to gain from
    intra-op threads, and on a busy machine extra threads cost up to 30x), None (torch's default) else."""
    return 1 if family(scaling) in ("vector", "small_image") else None
