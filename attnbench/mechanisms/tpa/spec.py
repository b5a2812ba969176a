"""TPA: Tensor Product Attention (T6); README.md beside this file has the equations and the cost models.

Core tensors: the contextual factors `A_q [B,T,H,R_q]`, `B_q [B,T,R_q,d]`, `A_k [B,T,H,R_k]`, `B_k [B,T,R_k,d]`,
`A_v [B,T,H,R_v]`, `B_v [B,T,R_v,d]`, drawn N(0, 1). Layer tensors: `x [B,T,D]`, the six factor maps
`W_Aq [D,H·R_q]`, `W_Bq [D,R_q·d]` (likewise k, v), no biases, and `W_o [H·d,D]`, all `N(0, 1/fan_in)`: the
authors zero-initialise `W_o`, which would make every layer-level comparison pass.
"""

from __future__ import annotations

import torch

from attnbench.mechanisms.common import COMPILE_IMPL, Draw, mode_bytes, projection_bytes, projection_flops
from attnbench.mechanisms.problem import Level, Mode, Problem
from attnbench.mechanisms.registry import FlopCount, Impl, Mechanism, Param, flash_recompute
from attnbench.mechanisms.softmax.reference import recomputed_flops
from attnbench.mechanisms.tpa import decode

RANKS = ("R_q", "R_k", "R_v")


def _ranks(problem: Problem) -> tuple[int, int, int]:
    return tuple(problem.params[name] for name in RANKS)


def make_tensors(problem: Problem, dtype: torch.dtype, device, generator) -> dict[str, torch.Tensor]:
    draw = Draw(dtype, device, generator)
    B, T, H, d, D = problem.B, problem.T, problem.H, problem.d, problem.D
    if problem.level is Level.CORE:
        tensors = {}
        for part, rank in zip("qkv", _ranks(problem), strict=True):
            tensors[f"A_{part}"] = draw.normal(B, T, H, rank)
            tensors[f"B_{part}"] = draw.normal(B, T, rank, d)
        return tensors
    tensors = {"x": draw.normal(B, T, D)}
    for part, rank in zip("qkv", _ranks(problem), strict=True):
        tensors[f"W_A{part}"] = draw.weight(D, H * rank)
        tensors[f"W_B{part}"] = draw.weight(D, rank * d)
    tensors["W_o"] = draw.weight(H * d, D)
    return tensors


def project(problem: Problem, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' `CPLinear` maps: A viewed head-major `(H, R)`, B viewed `(R, d)`."""
    x, B, T = tensors["x"], problem.B, problem.T
    factors = {}
    for part, rank in zip("qkv", _ranks(problem), strict=True):
        factors[f"A_{part}"] = (x @ tensors[f"W_A{part}"]).view(B, T, problem.H, rank)
        factors[f"B_{part}"] = (x @ tensors[f"W_B{part}"]).view(B, T, rank, problem.d)
    return factors


def output(problem: Problem, tensors: dict[str, torch.Tensor], core_out: torch.Tensor) -> torch.Tensor:
    return core_out.reshape(problem.B, problem.T, problem.D) @ tensors["W_o"]


def _projection_shapes(problem: Problem) -> list[tuple[int, int]]:
    H, d, D = problem.H, problem.d, problem.D
    shapes = [shape for rank in _ranks(problem) for shape in ((D, H * rank), (D, rank * d))]
    return [*shapes, (H * d, D)]


def flops(problem: Problem) -> FlopCount:
    """Core: forming Q, K, V from the factors, `2·B·T·H·d·(R_q+R_k+R_v)`, plus the attention core as MHA,
    `4·B·H·T²·d` (half when causal; softmax and rotary work are not counted). Layer: adds the factor maps
    `2·B·T·D·(R_q+R_k+R_v)·(H+d)` and the output projection `2·B·T·H·d·D`."""
    B, T, H, d = problem.B, problem.T, problem.H, problem.d
    attention = 4 * B * H * T**2 * d
    attention = attention // 2 if problem.causal else attention
    matmul = attention + 2 * B * T * H * d * sum(_ranks(problem))
    if problem.level is Level.LAYER:
        matmul += projection_flops(B * T, *_projection_shapes(problem))
    return FlopCount(matmul=matmul, attention=attention)


def min_bytes(problem: Problem, mode: Mode, itemsize: int) -> int:
    """A fused kernel that forms Q, K, V from the factors on chip (as FlashTPA does) around a flash core.

    Forward: read the factors, `(R_q+R_k+R_v)·(H+d)` elements per token, write O and an fp32 log-sum-exp per
    query row and head. Backward: read the factors, O, dO and the log-sum-exp, write the factors' gradients.
    """
    B, T, H, d = problem.B, problem.T, problem.H, problem.d
    factors = B * T * sum(_ranks(problem)) * (H + d)
    out = B * T * H * d
    lse = 4 * B * H * T
    fwd = itemsize * (factors + out) + lse
    bwd = itemsize * (2 * factors + 2 * out) + lse
    if problem.level is Level.LAYER:
        proj = projection_bytes(B * T, itemsize, *_projection_shapes(problem))
        fwd, bwd = fwd + proj, bwd + 2 * proj
    return mode_bytes(fwd, bwd, mode)


def check(problem: Problem) -> None:
    if problem.d % 2:
        raise ValueError(f"tpa: d={problem.d} must be even (the rotary rotates the two halves of each head)")


def derived(problem: Problem) -> dict[str, int]:
    """Elements a factor KV cache holds per token and layer: `(R_k+R_v)·(H+d)` (MHA: `2·H·d`)."""
    return {"kv_cache_per_token": (problem.params["R_k"] + problem.params["R_v"]) * (problem.H + problem.d)}


DECODE = "attnbench.mechanisms.tpa.decode:"
IMPLS = (
    Impl(
        "reference",
        "attnbench.mechanisms.tpa.reference:core",
        "plain PyTorch: factor products, query-blocked; decode: K, V formed from the factor cache",
        recompute=recomputed_flops,
        decode=DECODE + "reference_decode",
    ),
    Impl(
        "sdpa",
        "attnbench.mechanisms.tpa.sdpa:core",
        "factor products in PyTorch, then SDPA (PyTorch's backend); decode: K, V formed, then SDPA",
        recompute=flash_recompute,
        decode=DECODE + "sdpa_decode",
    ),
    COMPILE_IMPL,
    Impl(
        "triton",
        DECODE + "triton_decode",
        "decode only: a split-cache Triton kernel on the factor cache (K and V never formed)",
        needs=("triton",),
        modes=frozenset(),
        causal=(True,),
        dtypes=frozenset({"fp32", "tf32", "bf16", "fp16"}),
        decode=DECODE + "triton_decode",
    ),
)

PARAMS = {
    "R_q": Param(default=6, doc="query rank", minimum=1),
    "R_k": Param(default=2, doc="key rank", minimum=1),
    "R_v": Param(default=2, doc="value rank", minimum=1),
    "rope_base": Param(default=10000, doc="rotary base", minimum=2),
    "rope_precision": Param(
        default="exact",
        doc="rotary tables: `exact` (float64, cast to the factors' dtype) or `authors` (fp32 rounded to bf16)",
        choices=("exact", "authors"),
    ),
}

MECHANISMS = (
    Mechanism(
        name="tpa",
        title="Tensor Product Attention (T6)",
        paper="https://arxiv.org/abs/2501.06425",
        complexity="quadratic",
        make_tensors=make_tensors,
        reference=IMPLS[0].load(),
        project=project,
        output=output,
        flops=flops,
        min_bytes=min_bytes,
        impls=IMPLS,
        params=PARAMS,
        check=check,
        derived=derived,
        cache_model=decode.cache_model,
        test_problems=(
            dict(B=2, T=37, H=6, d=10, causal=False, R_q=3, R_k=2, R_v=1),
            dict(B=1, T=33, H=5, d=12, causal=True),
            dict(B=2, T=1, H=3, d=10, causal=True, R_q=1, R_k=1, R_v=1),
            dict(B=1, T=19, H=4, d=6, causal=True, R_k=1, R_v=3, rope_precision="authors"),
        ),
    ),
)
