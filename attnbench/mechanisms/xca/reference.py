"""XCA: cross-covariance attention (XCiT), written to mirror the authors' `xcit.py` class `XCA`.

Per head the tokens are the contracted axis: queries and keys are L2-normalised over tokens per channel,
their `d×d` cross-covariance, scaled by the learned temperature `τ_h`, is softmaxed over its last axis, and
the resulting channel-mixing map is applied to the values at every token.
"""

from __future__ import annotations

import torch

from attnbench.mechanisms.problem import Problem

# torch.nn.functional.normalize's default: q / max(‖q‖, eps).
EPS = 1e-12


def normalise(x: torch.Tensor) -> torch.Tensor:
    """`x [..., T]` divided by `max(‖x‖₂ over the last axis, 1e-12)`."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(EPS)


def xca(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """`q, k, v [B,T,H,d]`, `tau [H]` -> `[B,T,H,d]`.

    Half-precision inputs are computed in float32 (the Gram and the norms are sums over all T tokens, and
    `Σq²` overflows fp16 beyond a few thousand tokens of unit size); the result is cast back.
    """
    dtype = q.dtype
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    qc, kc, vc = (t.to(work).permute(0, 2, 3, 1) for t in (q, k, v))  # (B, H, d, T): channels x tokens
    logits = (normalise(qc) @ normalise(kc).transpose(-1, -2)) * tau.to(work).view(1, -1, 1, 1)  # (B, H, d, d)
    attn = logits.softmax(dim=-1)
    return (attn @ vc).permute(0, 3, 1, 2).to(dtype)  # (B, T, H, d)


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Core: `q, k, v [B,T,H,d]`, `tau [H]` -> `[B,T,H,d]`."""
    return xca(tensors["q"], tensors["k"], tensors["v"], tensors["tau"])
