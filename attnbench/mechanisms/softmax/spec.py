"""Softmax attention: `mha` (G = H), `gqa` (G key/value heads) and `mqa` (G = 1); README.md beside this file
has the equations and the cost models.

Core tensors: `q [B,T,H,d]`, `k, v [B,T,G,d]`. Layer tensors: `x [B,T,D]`, `W_q [D,H·d]`, `W_k, W_v [D,G·d]`,
`W_o [H·d,D]`, all `N(0, 1/fan_in)`.
"""

from __future__ import annotations

import torch

from attnbench.mechanisms.common import COMPILE_IMPL, Draw, mode_bytes, projection_bytes, projection_flops
from attnbench.mechanisms.problem import Mode, Problem
from attnbench.mechanisms.registry import FlopCount, Impl, Mechanism, Param, flash_recompute
from attnbench.mechanisms.softmax import decode
from attnbench.mechanisms.softmax.reference import recomputed_flops

SDPA = "attnbench.mechanisms.softmax.sdpa:core"
DECODE = "attnbench.mechanisms.softmax.decode:"


def kv_heads(problem: Problem) -> int:
    return {"mha": problem.H, "mqa": 1}.get(problem.mechanism) or problem.params["G"]


def make_tensors(problem: Problem, dtype: torch.dtype, device, generator) -> dict[str, torch.Tensor]:
    draw = Draw(dtype, device, generator)
    B, T, H, d, D, G = problem.B, problem.T, problem.H, problem.d, problem.D, kv_heads(problem)
    if problem.level.value == "core":
        return {"q": draw.normal(B, T, H, d), "k": draw.normal(B, T, G, d), "v": draw.normal(B, T, G, d)}
    return {
        "x": draw.normal(B, T, D),
        "W_q": draw.weight(D, H * d),
        "W_k": draw.weight(D, G * d),
        "W_v": draw.weight(D, G * d),
        "W_o": draw.weight(H * d, D),
    }


def project(problem: Problem, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, B, T = tensors["x"], problem.B, problem.T
    return {
        "q": (x @ tensors["W_q"]).view(B, T, problem.H, problem.d),
        "k": (x @ tensors["W_k"]).view(B, T, -1, problem.d),
        "v": (x @ tensors["W_v"]).view(B, T, -1, problem.d),
    }


def output(problem: Problem, tensors: dict[str, torch.Tensor], core_out: torch.Tensor) -> torch.Tensor:
    return core_out.reshape(problem.B, problem.T, problem.D) @ tensors["W_o"]


def _projection_shapes(problem: Problem) -> list[tuple[int, int]]:
    D, Hd, Gd = problem.D, problem.D, kv_heads(problem) * problem.d
    return [(D, Hd), (D, Gd), (D, Gd), (Hd, D)]


def flops(problem: Problem) -> FlopCount:
    """Attention `4·B·H·T²·d` (half when causal), the FlashAttention convention: softmax work is not counted;
    the layer adds its four projections. Only the attention term's backward counts 2.5× (registry)."""
    attention = 4 * problem.B * problem.H * problem.T**2 * problem.d
    attention = attention // 2 if problem.causal else attention
    projections = 0
    if problem.level.value == "layer":
        projections = projection_flops(problem.B * problem.T, *_projection_shapes(problem))
    return FlopCount(matmul=attention + projections, attention=attention)


def min_bytes(problem: Problem, mode: Mode, itemsize: int) -> int:
    """Flash attention: forward reads Q, K, V and writes O plus an fp32 log-sum-exp per query row; backward
    reads Q, K, V, O, dO and the LSE and writes dQ, dK, dV."""
    B, T, H, d, G = problem.B, problem.T, problem.H, problem.d, kv_heads(problem)
    lse = 4 * B * H * T
    fwd = itemsize * B * T * d * (2 * H + 2 * G) + lse
    bwd = itemsize * B * T * d * (4 * H + 4 * G) + lse
    if problem.level.value == "layer":
        proj = projection_bytes(B * T, itemsize, *_projection_shapes(problem))
        fwd, bwd = fwd + proj, bwd + 2 * proj
    return mode_bytes(fwd, bwd, mode)


def check(problem: Problem) -> None:
    G = kv_heads(problem)
    if problem.H % G:
        raise ValueError(f"{problem.mechanism}: H={problem.H} must be divisible by G={G} (key/value heads)")


# The fused SDPA backends recompute the scores in their backward (`flash_recompute`); the math backend and the
# reference (while it runs as one query block) keep them, so their backward is 2× the forward.
FUSED = {"recompute": flash_recompute}
IMPLS = (
    Impl(
        "reference",
        "attnbench.mechanisms.softmax.reference:core",
        "plain PyTorch, query-blocked; decode: the KV cache through the same attention",
        recompute=recomputed_flops,
        decode=DECODE + "reference_decode",
    ),
    Impl(
        "sdpa",
        SDPA,
        "scaled_dot_product_attention, PyTorch's choice of backend; decode: the KV cache through SDPA",
        decode=DECODE + "sdpa_decode",
        **FUSED,
    ),
    Impl("sdpa_flash", SDPA, "SDPA, FlashAttention backend", needs=("cuda",), options={"backend": "flash"}, **FUSED),
    Impl(
        "sdpa_efficient",
        SDPA,
        "SDPA, memory-efficient backend",
        needs=("cuda",),
        options={"backend": "efficient"},
        **FUSED,
    ),
    Impl("sdpa_cudnn", SDPA, "SDPA, cuDNN backend", needs=("cuda",), options={"backend": "cudnn"}, **FUSED),
    Impl("sdpa_math", SDPA, "SDPA, math backend", options={"backend": "math"}),
    COMPILE_IMPL,
)


def _mechanism(name: str, title: str, paper: str, params: dict[str, Param], extra: dict | None = None) -> Mechanism:
    extra = extra or {}
    shapes = (
        dict(B=2, T=37, H=6, d=10, causal=False),
        dict(B=1, T=33, H=6, d=12, causal=True),
        dict(B=2, T=1, H=6, d=10, causal=True),
    )
    return Mechanism(
        name=name,
        title=title,
        paper=paper,
        complexity="quadratic",
        make_tensors=make_tensors,
        reference=IMPLS[0].load(),
        project=project,
        output=output,
        flops=flops,
        min_bytes=min_bytes,
        impls=IMPLS,
        params=params,
        check=check,
        derived=lambda problem: {"G": kv_heads(problem)},
        test_problems=tuple({**shape, **extra} for shape in shapes),
        cache_model=lambda problem, itemsize: decode.cache_model(problem, itemsize, kv_heads(problem)),
    )


MECHANISMS = (
    _mechanism("mha", "Multi-head softmax attention", "https://arxiv.org/abs/1706.03762", {}),
    _mechanism(
        "gqa",
        "Grouped-query attention",
        "https://arxiv.org/abs/2305.13245",
        {"G": Param(default=4, doc="key/value heads; H must be divisible by G", minimum=1)},
        {"G": 3},
    ),
    _mechanism("mqa", "Multi-query attention", "https://arxiv.org/abs/1911.02150", {}),
)
