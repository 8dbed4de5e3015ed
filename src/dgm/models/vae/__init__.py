"""Latent-variable models: the VAE and the hierarchical VAE, their likelihoods and the blur analysis."""

from dgm.models.vae.hvae import HVAE
from dgm.models.vae.vae import VAE

__all__ = ["VAE", "HVAE"]
