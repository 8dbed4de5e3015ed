"""Training: the loop (fit), its configuration, distributed launch and the default recipes."""
