"""The HTML report: computations, plots, the page, and the demo job that writes one."""
