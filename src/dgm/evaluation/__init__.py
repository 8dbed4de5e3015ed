"""Likelihood evaluation, sample-quality metrics and their feature nets, and ``dgm verify``."""
