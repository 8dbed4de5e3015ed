"""Likelihood evaluation, sample-quality metrics (distances, their floors, the reference set, the feature nets,
Inception FID), and the numerical checks of ``dgm verify``."""
