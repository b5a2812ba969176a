"""Tensor Product Attention (T6), written to mirror the authors' `model/T6.py` (`tensorgi/T6`; README.md).

Each token carries contextual factors: head factors `A [B,T,H,R]` and feature factors `B [B,T,R,d]`. Queries,
keys and values are their rank-R products, `Q_t = (1/R_q)·A_qᵀ RoPE_t(B_q)` and likewise for K (rank R_k) and
V (rank R_v, no rotary); then causal or non-causal softmax attention per head with scale `d^-1/2`.

The rotary acts on the B factors only (what the factor KV cache stores), in the authors' form: half-split
layout and the `−θ` rotation `y1 = x1·cos + x2·sin`, `y2 = −x1·sin + x2·cos`. Because the rotary is linear in
the feature axis, rotating B before the product equals rotating the formed Q or K. As in the authors'
`T6.py`, the query factors are rotated as well as the key factors: with the rotary on K alone the scores would
not depend on relative position only.
"""

from __future__ import annotations

import torch

from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.softmax.reference import attention

FACTORS = (("A_q", "B_q", "R_q"), ("A_k", "B_k", "R_k"), ("A_v", "B_v", "R_v"))


def rope_tables(
    T: int, d: int, *, base: int, precision: str, dtype: torch.dtype, device, start: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """`cos, sin [T, d/2]` for positions `start .. start+T-1`, frequencies `base^(-2i/d)`, cast to `dtype`.

    `exact` computes them in float64. `authors` computes them in float32 and rounds them to bfloat16, as the
    authors' `Rotary` caches them (about 2e-3 absolute error).
    """
    if precision == "authors":
        inv_freq = 1.0 / (base ** (torch.arange(0, d, 2, device=device).float() / d))
        freqs = torch.outer(torch.arange(start, start + T, device=device).float(), inv_freq)
        return freqs.cos().bfloat16().to(dtype), freqs.sin().bfloat16().to(dtype)
    exponent = torch.arange(0, d, 2, device=device, dtype=torch.float64) / d
    freqs = torch.outer(torch.arange(start, start + T, device=device, dtype=torch.float64), base**-exponent)
    return freqs.cos().to(dtype), freqs.sin().to(dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """`x [B,T,R,d]` rotated per position by `cos, sin [T, d/2]` (half-split, the authors' `−θ` sign)."""
    half = x.shape[-1] // 2
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]  # (1, T, 1, d/2)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def qkv(
    problem: Problem, tensors: dict[str, torch.Tensor], start: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q, K, V `[B,T,H,d]` from the six factors, tokens at positions `start .. start+T-1`."""
    B_q = tensors["B_q"]
    cos, sin = rope_tables(
        problem.T,
        problem.d,
        base=problem.params["rope_base"],
        precision=problem.params["rope_precision"],
        dtype=B_q.dtype,
        device=B_q.device,
        start=start,
    )
    formed = []
    for a_name, b_name, rank in FACTORS:
        factor = tensors[b_name]  # (B, T, R, d)
        if a_name != "A_v":
            factor = rotate(factor, cos, sin)
        # (B, T, H, R) @ (B, T, R, d): one (H, R) x (R, d) product per token, as the authors' bmm.
        formed.append((tensors[a_name] @ factor) / problem.params[rank])  # (B, T, H, d)
    q, k, v = formed
    return q, k, v


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Core: factors `A_* [B,T,H,R_*]`, `B_* [B,T,R_*,d]` -> `[B,T,H,d]`."""
    q, k, v = qkv(problem, tensors)
    return attention(q, k, v, causal=problem.causal)
