"""Sample-quality metrics between a real and a generated sample, each with its finite-sample floor.

``quality_metrics`` takes images or vectors in model space; images (digits) are first mapped to the
feature space of the shipped digit net (``dgm.evaluation.features``), vectors are compared as they are, with
the distances of ``dgm.evaluation.distances``.

Every metric estimated from finite samples is nonzero even between two samples of the SAME
distribution, so ``quality_metrics`` reports, beside each metric, its **floor**: the same metric between
two disjoint halves of the real data, at the same sample sizes. A model is indistinguishable from the
data (by that metric, at that sample size) when its value reaches the floor.

``inception_fd`` is the standard FID with pytorch-fid's Inception weights from a local file.

Never a silent NaN: samples holding a NaN or an infinity, or a metric that comes out non-finite (features that
overflow), are a one-line FloatingPointError naming them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from dgm.evaluation.distances import (
    as_vectors,
    frechet_distance,
    kid,
    mmd_rbf,
    precision_recall,
    sliced_wasserstein,
)

__all__ = ["DEFAULT_METRICS", "KINDS", "METRICS", "inception_fd", "quality_metrics"]

METRICS = ("fd", "kid", "precision", "recall", "sw", "mmd")
DEFAULT_METRICS = ("fd", "kid", "precision", "recall")
KINDS = ("image", "vector")
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_NAME}"


# ---------------------------------------------------------------------------------- all together


def _metric_values(name: str, ref: torch.Tensor, other: torch.Tensor, generator, opts: dict) -> dict:
    if name == "fd":
        return {"fd": frechet_distance(ref, other)}
    elif name == "kid":
        mean, std = kid(ref, other, subsets=opts["kid_subsets"], subset_size=opts["kid_subset_size"],
                        generator=generator)
        return {"kid": mean, "kid_std": std}
    elif name in ("precision", "recall"):
        p, r = precision_recall(ref, other, k=opts["k"])
        return {"precision": p, "recall": r}
    elif name == "sw":
        return {"sw": sliced_wasserstein(ref, other, n_projections=opts["n_projections"],
                                         generator=generator)}
    elif name == "mmd":
        return {"mmd": mmd_rbf(ref, other)}
    else:
        raise ValueError(f"unknown metric {name!r}; choose from {METRICS}")


def quality_metrics(real, fake, *, kind: str = "image", names: Sequence[str] = DEFAULT_METRICS,
                    generator: torch.Generator | None = None, k: int = 3, kid_subsets: int = 100,
                    kid_subset_size: int = 1000, n_projections: int = 128) -> dict[str, float]:
    """Sample-quality metrics of ``fake`` against ``real``, each with its floor.

    real (N, ...), fake (M, ...): same shape per example, in model space. kind="image": images
    (N, 1, 8, 8) or (N, 1, 28, 28), compared in the feature space of the shipped digit net
    (``dgm.evaluation.features``); kind="vector": vectors (N, D), compared as they are.
    names: any of ("fd", "kid", "precision", "recall", "sw", "mmd").

    Protocol: the real features are split at random (``generator``) into disjoint halves A and B;
    with n = min(|B|, M), metric = m(A, fake[:n]) and floor = m(A, B[:n]), so both use the same
    reference set and the same sample sizes (FD and KID variances depend on them). Returns
    {"fd": .., "fd_floor": .., "kid": .., "kid_std": .., "kid_floor": .., "kid_std_floor": ..,
     "precision": .., "precision_floor": .., ..., "n_reference": |A|, "n_compared": n}.
    The precision/recall "floor" is the value reached by real data (below 1 at finite N).
    """
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"unknown metric(s) {unknown or list(names)}; choose from {METRICS}")
    real, fake = torch.as_tensor(real), torch.as_tensor(fake)
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and fake differ in shape: {tuple(real.shape[1:])} vs {tuple(fake.shape[1:])}")
    for what, x in (("reference examples", real), ("generated samples", fake)):
        _require_finite(x, what)
    if kind == "image":
        from dgm.evaluation.features import features

        real_f, fake_f = features(real), features(fake)
    elif kind == "vector":
        real_f = as_vectors(real.reshape(real.shape[0], -1), "real")
        fake_f = as_vectors(fake.reshape(fake.shape[0], -1), "fake")
    else:
        raise ValueError(f"unknown kind {kind!r}; choose from {KINDS}")
    min_n = max(k + 1, 2)
    if real_f.shape[0] < 2 * min_n or fake_f.shape[0] < min_n:
        raise ValueError(f"too few examples for quality metrics: {real_f.shape[0]} real (need "
                         f">= {2 * min_n}), {fake_f.shape[0]} generated (need >= {min_n})")
    perm = torch.randperm(real_f.shape[0], generator=generator)
    half = (real_f.shape[0] + 1) // 2
    ref, held = real_f[perm[:half]], real_f[perm[half:]]
    n = min(held.shape[0], fake_f.shape[0])
    opts = {"k": k, "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size,
            "n_projections": n_projections}
    out: dict[str, float] = {}
    for name in dict.fromkeys("precision" if nm == "recall" else nm for nm in names):
        try:
            value = _metric_values(name, ref, fake_f[:n], generator, opts)
            floor = _metric_values(name, ref, held[:n], generator, opts)
        except torch.linalg.LinAlgError as err:  # eigh of a covariance that overflowed or is degenerate
            raise FloatingPointError(f"the metric {name} could not be computed ({_first_line(err)})") from None
        for key in value:
            if key in ("precision", "recall") and key not in names:
                continue
            out[key], out[key + "_floor"] = value[key], floor[key]
    out["n_reference"], out["n_compared"] = half, n
    for key, value in out.items():  # a metric that overflowed or failed is an error, never a silent NaN
        if not math.isfinite(value):
            raise FloatingPointError(f"the metric {key} is {value} (the features are too large or degenerate)")
    return out


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _require_finite(x: torch.Tensor, what: str) -> None:
    """FloatingPointError naming how many of the examples ``x`` (N, ...) hold a NaN or an infinity."""
    bad = ~torch.isfinite(x.reshape(len(x), -1)).all(dim=1) if len(x) else torch.zeros(0, dtype=torch.bool)
    if bad.any():
        first = int(bad.nonzero()[0])
        raise FloatingPointError(f"{int(bad.sum())} of the {len(x)} {what} hold a NaN or an infinity (the first: "
                                 f"number {first}); no metric computed")


# --------------------------------------------------------------------------------- Inception FID


def inception_fd(real_images, fake_images, weights_path, *, batch_size: int = 50) -> float:
    """Standard FID with pytorch-fid's Inception v3 weights from a LOCAL file (dgm never downloads).

    real_images (N, C, H, W), fake_images (M, C, H, W) (or (N, H, W) for one channel): dgm's model
    space [-1, 1], C = 1 (repeated to RGB) or 3, N, M >= 2. They are clamped to [-1, 1] (as saving them
    as 8-bit images would), mapped to [0, 1] and fed to ``dgm.evaluation.inception`` -- pytorch-fid's network
    and preprocessing (bilinear resize to 299x299, pool3 features) -- and the Frechet distance of the
    two feature sets is returned (unbiased covariances, as pytorch-fid's ``np.cov``).
    Errors: missing file -> FileNotFoundError (with where to get it); not pytorch-fid's Inception state
    dict -> ValueError naming the first wrong key.
    FID depends strongly on the sample size (biased upward at small N): compare values at equal N,
    pytorch-fid's convention is 50k generated images.
    """
    from dgm.evaluation.inception import fid_features, load_fid_inception

    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"Inception FID weights not found at {path}: download {FID_WEIGHTS_URL} "
                                f"(pytorch-fid's {FID_WEIGHTS_NAME}, 91 MB) and pass its local path")
    model = load_fid_inception(path)
    feats = []
    for name, images in (("real_images", real_images), ("fake_images", fake_images)):
        x = torch.as_tensor(images).detach().cpu()
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{name}: expected images (N, C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        feats.append(fid_features(model, (x.float().clamp(-1, 1) + 1) / 2, batch_size=batch_size))
    return frechet_distance(*feats)
