"""One folder per mechanism: `spec.py` (declaration), `reference.py` (plain PyTorch), fast paths beside them."""
