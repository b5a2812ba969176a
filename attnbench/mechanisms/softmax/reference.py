"""Softmax attention (MHA, GQA, MQA), written to mirror `softmax(Q Kᵀ · d^-1/2 + mask) V`.

Query blocks keep memory at `B·H·block·T` scores instead of `B·H·T²`; under autograd each block is
checkpointed, so the backward recomputes its scores instead of keeping all of them. That lets the float64
reference check fast paths at T = 16K on a GPU.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.registry import NO_FLOPS, FlopCount

# Scores materialised at once (elements): 2^27 is 1 GiB in float64.
SCORE_BUDGET = 1 << 27


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, scale: float | None = None
) -> torch.Tensor:
    """`q [B,T,H,d]`, `k, v [B,S,G,d]` with `H % G == 0` -> `[B,T,H,d]`.

    Query head `h` reads key/value head `h // (H/G)` (contiguous groups, as SDPA's `enable_gqa`). Causal is
    top-left aligned: query `i` sees keys `j <= i`.
    """
    B, T, H, d = q.shape
    S, G = k.shape[1], k.shape[2]
    scale = d**-0.5 if scale is None else scale
    qh = q.transpose(1, 2)  # (B, H, T, d)
    kh = k.transpose(1, 2).repeat_interleave(H // G, dim=1)  # (B, H, S, d)
    vh = v.transpose(1, 2).repeat_interleave(H // G, dim=1)  # (B, H, S, d)
    rows = block_rows(B, H, T, S)
    if rows >= T:
        return attend_block(qh, kh, vh, 0, causal, scale).transpose(1, 2)
    recompute = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    blocks = []
    for start in range(0, T, rows):
        q_block = qh[:, :, start : start + rows]
        if recompute:
            blocks.append(checkpoint(attend_block, q_block, kh, vh, start, causal, scale, use_reentrant=False))
        else:
            blocks.append(attend_block(q_block, kh, vh, start, causal, scale))
    return torch.cat(blocks, dim=2).transpose(1, 2)


def block_rows(B: int, H: int, T: int, S: int) -> int:
    """Query rows per block: all `T` when the `B·H·T·S` scores fit `SCORE_BUDGET`, fewer otherwise."""
    return max(1, min(T, SCORE_BUDGET // max(1, B * H * S)))


def recomputed_flops(problem: Problem, forward: FlopCount) -> FlopCount:
    """What this reference's backward computes again: with more than one query block, every block is
    checkpointed and its whole attention forward (QKᵀ and P·V) runs again; with one block, nothing."""
    if block_rows(problem.B, problem.H, problem.T, problem.T) >= problem.T:
        return NO_FLOPS
    return FlopCount(matmul=forward.attention, attention=forward.attention)


def attend_block(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int, causal: bool, scale: float):
    """Query rows `q [B,H,rows,d]` at positions `start ..` over all keys `k, v [B,H,S,d]` (causal: key `j` seen by
    the row at position `i` when `j <= i`); a decode step's rows start at the cache length."""
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, rows, S)
    if causal:
        rows, keys = scores.shape[-2], scores.shape[-1]
        query_pos = torch.arange(start, start + rows, device=q.device).unsqueeze(1)
        key_pos = torch.arange(keys, device=q.device).unsqueeze(0)
        scores = scores.masked_fill(key_pos > query_pos, -math.inf)
    return torch.softmax(scores, dim=-1) @ v  # (B, H, rows, d)


def core(problem: Problem, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Core: `q [B,T,H,d]`, `k, v [B,T,G,d]` -> `[B,T,H,d]`."""
    return attention(tensors["q"], tensors["k"], tensors["v"], causal=problem.causal)
