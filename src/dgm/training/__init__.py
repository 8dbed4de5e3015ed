"""Training: the loop (fit), its configuration, several processes and their launch, and the default recipes."""
