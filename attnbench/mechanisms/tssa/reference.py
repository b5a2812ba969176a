"""TSSA (Token Statistics Self-Attention), written to mirror the authors' PyTorch (README.md has the equations).

Non-causal is `AttentionTSSA` of `RobinWu218/ToST` `tost_vision/tost.py`; causal is `CausalSelfAttention_TSSA`
of `tost_lang/model_TSSA.py`. The layout here is `[B, T, H, d]` (the authors' is `[B, H, T, d]`), so the token
axis is dim 1 and the head softmax runs over the last axis of `[B, T, H]`. Half-precision inputs are computed
in fp32 (the token sums of `w²` overflow fp16) and the result is cast back.
"""

from __future__ import annotations

import torch

from attnbench.mechanisms.problem import Problem

NORM_EPS = 1e-12  # F.normalize's clamp on the token-axis L2 norm (non-causal)
PREFIX_EPS = 1e-12  # clamp on the prefix sum of w² (causal); note: on the square, not the norm
MASS_EPS = 1e-8  # added to the token mass Σ_t Π before it divides


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reference computes in: fp32 for fp16/bf16, the input's own dtype otherwise."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def memberships(w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor | None = None, *, causal: bool) -> torch.Tensor:
    """Π: each token's soft membership over the H heads, `[B, T, H]`, rows summing to 1.

    `w [B,T,H,d]`, `temp [H]`, `beta [H, t_max]` (causal only, `t_max >= T`). Computed in `compute_dtype`.
    Non-causal: `softmax_h(temp[h] · Σ_c ŵ²)` with `ŵ = w / max(‖w‖ over tokens, 1e-12)`. Causal: the norm
    becomes a prefix sum, `softmax_h(temp[h] · (Σ_c w_t² / max(Σ_{t'≤t} w_{t'}², 1e-12) + d·beta[h, t]))`.
    """
    _check(w, temp, beta, causal)
    acc = compute_dtype(w.dtype)
    w, temp = w.to(acc), temp.to(acc)
    if causal:
        w2 = w.square()  # (B, T, H, d)
        stats = (w2 / w2.cumsum(dim=1).clamp_min(PREFIX_EPS)).sum(dim=-1)  # (B, T, H)
        # The authors add beta[h, t] to every channel before the channel sum, so it enters d times.
        stats = stats + w.shape[-1] * beta[:, : w.shape[1]].to(acc).T
    else:
        norm = torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min(NORM_EPS)  # (B, 1, H, d)
        stats = (w / norm).square().sum(dim=-1)  # (B, T, H)
    return torch.softmax(stats * temp, dim=-1)  # (B, T, H): softmax over heads, not tokens


def tssa(w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor | None = None, *, causal: bool) -> torch.Tensor:
    """TSSA core: `w [B,T,H,d]`, `temp [H]`, `beta [H, t_max]` (causal only) -> `[B,T,H,d]` in `w.dtype`.

    `out = -w · Π / (1 + dots)` with `dots[h,c] = Σ_t Π[t,h] w[t,h,c]² / (Σ_t Π[t,h] + 1e-8)` (raw `w`, not the
    normalised one); causal replaces both token sums by prefix sums up to the current token.
    """
    pi = memberships(w, temp, beta, causal=causal)  # (B, T, H)
    out_dtype = w.dtype
    w = w.to(pi.dtype)
    w2 = w.square()  # (B, T, H, d)
    if causal:
        dots = (pi.unsqueeze(-1) * w2).cumsum(dim=1) / (pi.cumsum(dim=1) + MASS_EPS).unsqueeze(-1)  # (B, T, H, d)
    else:
        pi_tilde = pi / (pi.sum(dim=1, keepdim=True) + MASS_EPS)  # (B, T, H)
        dots = (pi_tilde.unsqueeze(-1) * w2).sum(dim=1, keepdim=True)  # (B, 1, H, d)
    return (-w * pi.unsqueeze(-1) / (1 + dots)).to(out_dtype)


def _check(w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor | None, causal: bool) -> None:
    if w.dim() != 4:
        raise ValueError(f"tssa: w must be [B, T, H, d], got shape {tuple(w.shape)}")
    T, H = w.shape[1], w.shape[2]
    if temp.shape != (H,):
        raise ValueError(f"tssa: temp must be [H] = [{H}], got shape {tuple(temp.shape)}")
    if not causal:
        return
    if beta is None or beta.dim() != 2 or beta.shape[0] != H:
        got = None if beta is None else tuple(beta.shape)
        raise ValueError(f"tssa: causal needs beta [H, t_max] with H = {H}, got {got}")
    if beta.shape[1] < T:
        raise ValueError(f"tssa: beta holds t_max = {beta.shape[1]} positions, fewer than T = {T}")


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Core: `w [B,T,H,d]`, `temp [H]`, causal also `beta [H, t_max]` -> `[B,T,H,d]`."""
    return tssa(tensors["w"], tensors["temp"], tensors.get("beta"), causal=problem.causal)
