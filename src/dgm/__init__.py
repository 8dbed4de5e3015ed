"""dgm: deep generative modeling from VAEs to DDPMs, in the notation of *The Principles of Diffusion Models*.

The public API of shared/SPEC.md. Levels i = 0..L, level 0 is the data; beta_i is a standard deviation.
"""

from dgm.core.bound import bits_per_dim, vlb
from dgm.core.forward import prior_kl, q_sample, q_step
from dgm.core.guidance import class_denoiser, class_eps_star, class_mixture, guided_eps_star, sample_tilted
from dgm.core.losses import loss_ddpm, loss_simple
from dgm.core.oracle import GaussianMixture
from dgm.core.parameterization import (
    Denoiser,
    autoguided_denoiser,
    eps_to_mean,
    eps_to_score,
    eps_to_v,
    eps_to_x0,
    guided_denoiser,
    v_to_eps,
    v_to_x0,
    x0_to_eps,
)
from dgm.core.reverse import posterior
from dgm.core.schedule import Schedule
from dgm.evaluation.ode import ode_nll
from dgm.models.vae.analysis import blur_floor, optimal_decoder
from dgm.samplers import SAMPLERS, ddim_step, sample, sample_inverse

__version__ = "0.1.0"

__all__ = [
    "Schedule",
    "q_step",
    "q_sample",
    "posterior",
    "prior_kl",
    "eps_to_x0",
    "x0_to_eps",
    "eps_to_mean",
    "eps_to_v",
    "v_to_eps",
    "v_to_x0",
    "eps_to_score",
    "Denoiser",
    "autoguided_denoiser",
    "guided_denoiser",
    "loss_simple",
    "loss_ddpm",
    "vlb",
    "ode_nll",
    "bits_per_dim",
    "sample",
    "ddim_step",
    "SAMPLERS",
    "sample_inverse",
    "GaussianMixture",
    "class_mixture",
    "class_eps_star",
    "class_denoiser",
    "guided_eps_star",
    "sample_tilted",
    "optimal_decoder",
    "blur_floor",
]
