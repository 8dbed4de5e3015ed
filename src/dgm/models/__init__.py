"""Models: the protocol they share, the DDPM, and the latent-variable models (VAE, HVAE)."""

from dgm.models.protocol import MODEL_CLASSES, MODEL_KINDS, GenerativeModel, build_model, model_class

__all__ = ["GenerativeModel", "MODEL_CLASSES", "MODEL_KINDS", "build_model", "model_class"]
