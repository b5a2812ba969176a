"""Linear attention, written to mirror its equations token by token.

With the feature map `φ(x) = elu(x) + 1` (positive everywhere), each output token is

    out_i = φ(q_i)ᵀ S_i / (φ(q_i)ᵀ z_i + ε),   S_i = Σ_j φ(k_j) v_jᵀ  [d×d],   z_i = Σ_j φ(k_j)  [d],

per batch row and head, where the sums run over every token j (non-causal) or over j ≤ i (causal: prefix sums).
`ε = 1e-6` is the authors' guard on the normaliser. The causal form builds every `S_i` explicitly, one outer
product per token and a running sum over tokens, so it holds `B·T·H·d²` numbers: a reference for checking the
fast path (`matmul.py`), not a fast path itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnbench.mechanisms.problem import Problem

# Added to the normaliser φ(q_i)ᵀ z_i before it divides, as the authors' implementation does.
EPS = 1e-6


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """`φ(x) = elu(x) + 1`: positive, so every normaliser is a sum of positive terms."""
    return F.elu(x) + 1


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (sums over T tokens overflow fp16), the input's own dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """`q, k, v [B,T,H,d]` -> `[B,T,H,d]` in `q.dtype`, by the equations in the module docstring."""
    dtype = q.dtype
    work = compute_dtype(dtype)
    phi_q, phi_k, v = feature_map(q.to(work)), feature_map(k.to(work)), v.to(work)
    if causal:
        # S_i and z_i for every token i: the outer products φ(k_j) v_jᵀ summed up to j = i.
        outer = phi_k.unsqueeze(-1) @ v.unsqueeze(-2)  # (B, T, H, d, d)
        state, normaliser = outer.cumsum(dim=1), phi_k.cumsum(dim=1)  # (B, T, H, d, d), (B, T, H, d)
        numerator = (phi_q.unsqueeze(-2) @ state).squeeze(-2)  # φ(q_i)ᵀ S_i: (B, T, H, d)
    else:
        # One S and one z shared by every token: Σ_j φ(k_j) v_jᵀ is φ(K)ᵀ V over the token axis.
        state = phi_k.permute(0, 2, 3, 1) @ v.transpose(1, 2)  # (B, H, d, d)
        normaliser = phi_k.sum(dim=1, keepdim=True)  # (B, 1, H, d)
        numerator = (phi_q.transpose(1, 2) @ state).transpose(1, 2)  # (B, T, H, d)
    denominator = (phi_q * normaliser).sum(dim=-1, keepdim=True) + EPS  # φ(q_i)ᵀ z_i + ε: (B, T, H, 1)
    return (numerator / denominator).to(dtype)


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Core: `q, k, v [B,T,H,d]` -> `[B,T,H,d]`."""
    return linear_attention(tensors["q"], tensors["k"], tensors["v"], causal=problem.causal)
