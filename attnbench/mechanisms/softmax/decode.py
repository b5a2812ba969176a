"""Softmax attention decoding from a KV cache `[B, M + q_len, G, d]` (G key/value heads, stored once per group).

The cache is the keys and values as stored, G heads: GQA and MQA read it through SDPA's `enable_gqa` (no
expanded copy), MHA has G = H. A step writes the new tokens' keys and values at the cache's end and attends the
`q_len` new queries to the whole cache, new token `i` seeing positions `<= M + i` (bottom-right causal).
On a GPU, SDPA with one query row per head takes its flash-decoding path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnbench.mechanisms.decoding import CacheModel, Decoding, split_tokens
from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.softmax.reference import attend_block
from attnbench.mechanisms.softmax.sdpa import _backend


def kv_decoding(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cached: int, attend
) -> tuple[torch.Tensor, torch.Tensor, Decoding]:
    """A step on the cache `k, v [B, M+q_len, G, d]` (the tensors themselves: their first `cached` tokens are the
    prefill; the step rewrites the last `q_len` from copies of the new tokens) with queries `q [B, q_len, H, d]`.
    `attend(q, k, v, cached)` is the attention of the new queries over the whole cache."""
    new_k, new_v = (split_tokens(t, cached)[1].clone() for t in (k, v))

    def step() -> torch.Tensor:
        k[:, cached:] = new_k
        v[:, cached:] = new_v
        return attend(q, k, v, cached)

    return new_k, new_v, Decoding(step, {"k": k, "v": v}, {"q": q, "k_new": new_k, "v_new": new_v})


def sdpa_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cached: int, backend: str | None = None):
    """`q [B,q_len,H,d]` over `k, v [B,L,G,d]` through SDPA, new token `i` seeing positions `<= cached + i`."""
    q_len, H, G = q.shape[1], q.shape[2], k.shape[2]
    mask = None
    if q_len > 1:  # SDPA's is_causal is top-left aligned; a step's queries sit at the bottom right
        positions = torch.arange(k.shape[1], device=q.device)
        mask = positions[None, :] <= cached + torch.arange(q_len, device=q.device)[:, None]
    with _backend(backend):
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask, enable_gqa=G != H
        )
    return out.transpose(1, 2)


def reference_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cached: int) -> torch.Tensor:
    """The reference's attention block for the new queries (positions from `cached`), dtype-generic."""
    H, G = q.shape[2], k.shape[2]
    kh, vh = (t.transpose(1, 2).repeat_interleave(H // G, dim=1) for t in (k, v))
    return attend_block(q.transpose(1, 2), kh, vh, cached, True, q.shape[-1] ** -0.5).transpose(1, 2)


def sdpa_decode(problem: Problem, tensors: dict[str, torch.Tensor], q_len: int, backend: str | None = None):
    """Decode path of `sdpa`: the KV cache through `scaled_dot_product_attention`."""
    q = split_tokens(tensors["q"], problem.T)[1].clone()
    return kv_decoding(q, tensors["k"], tensors["v"], problem.T, lambda *a: sdpa_attend(*a, backend=backend))[2]


def reference_decode(problem: Problem, tensors: dict[str, torch.Tensor], q_len: int) -> Decoding:
    """Decode path of `reference`: the KV cache through the reference's attention (float64-runnable)."""
    q = split_tokens(tensors["q"], problem.T)[1].clone()
    return kv_decoding(q, tensors["k"], tensors["v"], problem.T, reference_attend)[2]


def cache_model(problem: Problem, itemsize: int, kv_heads: int) -> CacheModel:
    """Keys and values of G heads: `2·G·d·s` bytes per token and sequence (MHA G = H, MQA G = 1)."""
    per_token = 2 * kv_heads * problem.d * itemsize
    return CacheModel(per_token, 0, f"2·G·d·s = 2·{kv_heads}·{problem.d}·{itemsize} B per token", problem.B)
