"""The regression gate: two runs (or a run and a stored baseline) compared case by case. Reads only results."""
