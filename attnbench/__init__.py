"""attnbench: a benchmark suite for attention mechanisms.

Importing the package is cheap and safe on any machine: it loads neither torch nor triton. The mechanism
registry (`attnbench.mechanisms.registry`), the runner and the CLI import torch when they are used.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
