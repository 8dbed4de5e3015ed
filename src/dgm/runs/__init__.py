"""The run directory: checkpoint protocol, log, loading a run and sampling from it, choosing the device."""
