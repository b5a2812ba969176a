"""The fast path of linear attention in plain PyTorch: the same function as `reference.py`, reassociated.

Non-causal, `φ(Q) (φ(K)ᵀ [V, 1])` is two matmuls: the column of ones appended to V makes the last output column
the normaliser `φ(q_i)ᵀ Σ_j φ(k_j)`, so numerator and normaliser come out of the same two calls. Causal, the
tokens are cut into chunks of C: inside a chunk, the masked `C×C` product `tril(φ(Q_c) φ(K_c)ᵀ) [V_c, 1]`; across
chunks, the state `Σ φ(K)ᵀ [V, 1]` of every earlier chunk, carried into the chunk as an exclusive prefix sum over
chunks and read by `φ(Q_c)`. That holds `B·H·T·C` masked products and `B·H·(T/C)·d²` carried states, where
the reference holds a `d×d` state for every token, `B·H·T·d²`. Half-precision inputs are computed in float32 (the
token sums overflow fp16) and the result is cast back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnbench.mechanisms.problem import Problem
from attnbench_linear_attention.reference import EPS, compute_dtype, feature_map

# Tokens per chunk of the causal form: the intra-chunk product costs C per token, the carried state d² per chunk.
CHUNK = 64


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, chunk: int = CHUNK):
    """`q, k, v [B,T,H,d]` -> `[B,T,H,d]` in `q.dtype`: the function of `reference.linear_attention`, reassociated.

    `chunk` is the causal form's chunk length; the result does not depend on it beyond rounding.
    """
    dtype = q.dtype
    work = compute_dtype(dtype)
    phi_q = feature_map(q.to(work)).transpose(1, 2)  # (B, H, T, d)
    phi_k = feature_map(k.to(work)).transpose(1, 2)
    values = v.to(work).transpose(1, 2)
    values = torch.cat([values, values.new_ones((*values.shape[:-1], 1))], dim=-1)  # [V, 1]: (B, H, T, d+1)
    both = _causal(phi_q, phi_k, values, chunk) if causal else phi_q @ (phi_k.transpose(-1, -2) @ values)
    numerator, normaliser = both[..., :-1], both[..., -1:]
    return (numerator / (normaliser + EPS)).transpose(1, 2).to(dtype)


def _causal(phi_q: torch.Tensor, phi_k: torch.Tensor, values: torch.Tensor, chunk: int) -> torch.Tensor:
    """`φ(q), φ(k) [B,H,T,d]`, `[V, 1] [B,H,T,e]` -> `Σ_{j≤i} φ(q_i)ᵀφ(k_j) [v_j, 1]`, `[B,H,T,e]`, chunk by chunk."""
    B, H, T, _ = phi_q.shape
    size = min(chunk, T)
    chunks = -(-T // size)
    # The last chunk is padded with zero features: a padded key adds nothing to any sum, and the padded queries
    # are cut off at the end. Padding comes after every real token, so no real token's causal window sees it.
    pad = chunks * size - T
    phi_q, phi_k, values = (F.pad(t, (0, 0, 0, pad)).view(B, H, chunks, size, -1) for t in (phi_q, phi_k, values))
    within = (phi_q @ phi_k.transpose(-1, -2)).tril() @ values  # keys j <= i of the same chunk
    contribution = phi_k.transpose(-1, -2) @ values  # each chunk's Σ φ(k_j) [v_j, 1]ᵀ: (B, H, chunks, d, e)
    # The state carried into chunk c sums the chunks before it: shift by one chunk, then a running sum (no
    # subtraction, so no cancellation between large partial sums).
    carried = F.pad(contribution[:, :, :-1], (0, 0, 0, 0, 1, 0)).cumsum(dim=2)
    return (within + phi_q @ carried).reshape(B, H, chunks * size, -1)[:, :, :T]


def core(problem: Problem, tensors: dict[str, torch.Tensor], chunk: int = CHUNK) -> torch.Tensor:
    """Core: `q, k, v [B,T,H,d]` -> `[B,T,H,d]`."""
    return linear_attention(tensors["q"], tensors["k"], tensors["v"], causal=problem.causal, chunk=chunk)
