"""Stage 0, the mechanisms: one folder each (`spec.py`, `reference.py`, fast paths, `README.md`), the registry that
declares them (`registry.py`), what one problem is (`problem.py`) and the helpers they share.

This package's own import is free of torch and triton: the registry loads mechanism modules on first use.
"""

# Softmax MHA is the quadratic baseline: the analysis reports the length T* from which each linear-time mechanism
# beats it, in time and in memory.
CROSSOVER_BASELINE = "mha"
