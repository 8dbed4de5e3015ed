"""The run directory: files written atomically, the checkpoint protocol, log.jsonl, sampling a loaded run and
writing the samples, choosing the device."""
