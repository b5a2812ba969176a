"""Causal TSSA decoding: a recurrent state of `H·(2d + 1)` numbers per sequence, whatever the cache length.

Every token sum of the causal operator (README.md, "Decoding") is a prefix sum, so after `M` tokens the state is
`P1 = Σ w² [B,H,d]` (the membership's normaliser), `P2 = Σ Π w² [B,H,d]` and `P3 = Σ Π [B,H]`. A new token t adds
its own terms and reads them back:

    P1 += w_t²;  Π_t = softmax_h(temp · (Σ_c w_t² / max(P1, 1e-12) + d·beta[:, t]))
    P2 += Π_t w_t²;  P3 += Π_t;  out_t = −w_t Π_t / (1 + P2 / (P3 + 1e-8))

The state is held in the reference's compute dtype (fp32 for fp16/bf16 inputs, as its prefix sums are).
"""

from __future__ import annotations

import torch

from attnbench.mechanisms.decoding import CacheModel, Decoding, split_tokens
from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.tssa.reference import MASS_EPS, PREFIX_EPS, compute_dtype, memberships


def prefill(w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor) -> dict[str, torch.Tensor]:
    """The state after the tokens of `w [B,M,H,d]`: their prefix sums at the last token."""
    acc = compute_dtype(w.dtype)
    pi = memberships(w, temp, beta, causal=True)  # (B, M, H)
    w2 = w.to(acc).square()
    return {"P1": w2.sum(dim=1), "P2": (pi.unsqueeze(-1) * w2).sum(dim=1), "P3": pi.sum(dim=1)}


def advance(
    state: dict[str, torch.Tensor], w: torch.Tensor, temp: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Outputs `[B,q,H,d]` of the new tokens `w [B,q,H,d]` (with their bias columns `beta [H,q]`) and the state
    after them; `state` itself is left as it was."""
    acc = state["P1"].dtype
    wc = w.to(acc)
    w2 = wc.square()  # (B, q, H, d)
    p1 = state["P1"].unsqueeze(1) + w2.cumsum(dim=1)
    stats = (w2 / p1.clamp_min(PREFIX_EPS)).sum(dim=-1) + w.shape[-1] * beta.to(acc).T  # (B, q, H)
    pi = torch.softmax(stats * temp.to(acc), dim=-1)
    p2 = state["P2"].unsqueeze(1) + (pi.unsqueeze(-1) * w2).cumsum(dim=1)
    p3 = state["P3"].unsqueeze(1) + pi.cumsum(dim=1)
    out = -wc * pi.unsqueeze(-1) / (1 + p2 / (p3 + MASS_EPS).unsqueeze(-1))
    return out.to(w.dtype), {"P1": p1[:, -1], "P2": p2[:, -1], "P3": p3[:, -1]}


def reference_decode(problem: Problem, tensors: dict[str, torch.Tensor], q_len: int) -> Decoding:
    """Decode path of `reference`: the state after `M = problem.T` tokens, a step over the `q_len` new ones."""
    M = problem.T
    cached, new = split_tokens(tensors["w"], M)
    temp, beta = tensors["temp"], tensors["beta"]
    state = prefill(cached, temp, beta[:, :M])
    new, beta_new = new.clone(), beta[:, M : M + q_len].clone()

    def step() -> torch.Tensor:
        return advance(state, new, temp, beta_new)[0]

    return Decoding(step, state, {"w": new, "temp": temp, "beta": beta_new})


def state_elements(problem: Problem) -> int:
    """Numbers in the state of one sequence: `H·(2d + 1)`."""
    return problem.H * (2 * problem.d + 1)


def cache_model(problem: Problem, itemsize: int) -> CacheModel:
    """A fixed state of `B·H·(2d+1)` numbers in the compute dtype (fp64 for fp64, else fp32), none per token."""
    acc = 8 if itemsize == 8 else 4
    count = problem.B * state_elements(problem)
    formula = f"state H·(2d+1) = {state_elements(problem)} numbers × {acc} B per sequence, independent of M"
    return CacheModel(0, count * acc, formula, problem.B)
