"""TPA with Q, K, V formed in PyTorch and the attention done by `scaled_dot_product_attention`."""

from __future__ import annotations

import torch

from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.softmax.sdpa import sdpa_attention
from attnbench.mechanisms.tpa.reference import qkv


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Core: factors `A_* [B,T,H,R_*]`, `B_* [B,T,R_*,d]` -> `[B,T,H,d]`; PyTorch picks the SDPA backend."""
    q, k, v = qkv(problem, tensors)
    return sdpa_attention(q, k, v, causal=problem.causal, backend=None)
