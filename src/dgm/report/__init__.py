"""The HTML report: computations, per-run figures, plots, the page, and the demo job that writes one."""
