"""TPA decoding from the factor cache: `A_k [B,L,H,R_k]`, `B_k [B,L,R_k,d]` (rotated when cached), `A_v [B,L,H,R_v]`,
`B_v [B,L,R_v,d]` for the `L = M + q_len` tokens, `(R_k + R_v)·(H + d)` elements per token instead of MHA's
`2·H·d`.

A step rotates the new tokens' `B_k` at their positions and writes the new factors at the cache's end, forms
the new queries `Q = (1/R_q)·A_qᵀ RoPE(B_q)`, then either materialises K and V from the whole factor cache and
runs softmax attention (`reference`, `sdpa`: what a framework without a TPA kernel does), or hands the factors to
the Triton kernel (`triton`, `triton_tpa_decode.tpa_decode`), which never forms K or V.
"""

from __future__ import annotations

import torch

from attnbench.mechanisms.decoding import CacheModel, Decoding, split_tokens
from attnbench.mechanisms.problem import Problem
from attnbench.mechanisms.softmax.decode import reference_attend, sdpa_attend
from attnbench.mechanisms.tpa.reference import rope_tables, rotate


def _tables(problem: Problem, like: torch.Tensor, count: int, start: int):
    params = problem.params
    return rope_tables(
        count,
        problem.d,
        base=params["rope_base"],
        precision=params["rope_precision"],
        dtype=like.dtype,
        device=like.device,
        start=start,
    )


def factor_decoding(problem: Problem, tensors: dict[str, torch.Tensor], q_len: int, attend) -> Decoding:
    """The factor cache prefilled from the first `M = problem.T` tokens and a step on it: `attend(q, cache)`
    returns the new queries' outputs `[B, q_len, H, d]` from `q [B, q_len, H, d]` and the factor cache."""
    M = problem.T
    new = {name: split_tokens(tensors[name], M)[1].clone() for name in ("A_q", "B_q", "A_k", "B_k", "A_v", "B_v")}
    b_k = torch.empty_like(tensors["B_k"])
    b_k[:, :M] = rotate(tensors["B_k"][:, :M], *_tables(problem, b_k, M, 0))  # the prefill, untimed
    cache = {"A_k": tensors["A_k"], "B_k": b_k, "A_v": tensors["A_v"], "B_v": tensors["B_v"]}
    cos, sin = _tables(problem, b_k, q_len, M)
    R_q = problem.params["R_q"]

    def step() -> torch.Tensor:
        cache["A_k"][:, M:] = new["A_k"]
        cache["B_k"][:, M:] = rotate(new["B_k"], cos, sin)
        cache["A_v"][:, M:] = new["A_v"]
        cache["B_v"][:, M:] = new["B_v"]
        q = (new["A_q"] @ rotate(new["B_q"], cos, sin)) / R_q  # (B, q_len, H, d)
        return attend(q, cache)

    return Decoding(step, cache, new)


def _materialised(problem: Problem, cache: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V `[B, L, H, d]` formed from the whole factor cache (what the Triton kernel avoids)."""
    k = (cache["A_k"] @ cache["B_k"]) / problem.params["R_k"]
    v = (cache["A_v"] @ cache["B_v"]) / problem.params["R_v"]
    return k, v


def reference_decode(problem: Problem, tensors: dict[str, torch.Tensor], q_len: int) -> Decoding:
    """Decode path of `reference`: K, V formed from the factors, the reference's attention (float64-runnable)."""
    M = problem.T
    return factor_decoding(
        problem, tensors, q_len, lambda q, cache: reference_attend(q, *_materialised(problem, cache), M)
    )


def sdpa_decode(problem: Problem, tensors: dict[str, torch.Tensor], q_len: int) -> Decoding:
    """Decode path of `sdpa`: K, V formed from the factors, then `scaled_dot_product_attention`."""
    M = problem.T
    return factor_decoding(problem, tensors, q_len, lambda q, cache: sdpa_attend(q, *_materialised(problem, cache), M))


def triton_decode(problem: Problem, tensors: dict[str, torch.Tensor], q_len: int) -> Decoding:
    """Decode path of `triton`: the factor cache read by the Triton kernel, K and V never formed."""
    from attnbench.mechanisms.tpa.triton_tpa_decode import tpa_decode

    scale = problem.d**-0.5

    def attend(q: torch.Tensor, cache: dict[str, torch.Tensor]) -> torch.Tensor:
        return tpa_decode(q, cache["A_k"], cache["B_k"], cache["A_v"], cache["B_v"], scale=scale)

    return factor_decoding(problem, tensors, q_len, attend)


def cache_model(problem: Problem, itemsize: int) -> CacheModel:
    """The factor cache: `(R_k + R_v)·(H + d)·s` bytes per token and sequence."""
    R_k, R_v, H, d = problem.params["R_k"], problem.params["R_v"], problem.H, problem.d
    per_token = (R_k + R_v) * (H + d) * itemsize
    formula = f"(R_k+R_v)(H+d)·s = ({R_k}+{R_v})({H}+{d})·{itemsize} B per token"
    return CacheModel(per_token, 0, formula, problem.B)
