"""Stage 3, measuring one case inside a worker process: timing, peak memory, numerics, the device's ceilings."""
