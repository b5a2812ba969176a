"""TSSA: Token Statistics Self-Attention (ToST); README.md beside this file has the equations and the cost models.

Core tensors: `w [B,T,H,d]` (the projected input), `temp [H]` and, causal only, `beta [H, t_max]`. Layer
tensors: `x [B,T,D]`, `W_in [D,D]`, `b_in [D]`, `W_o [D,D]`, `b_o [D]`, `temp`, `beta`. `temp` is drawn as
`1 + 0.1·N(0,1)` and `beta` as `N(0, 0.1²)` (the authors initialise them to 1 and 0) so that no test sits at a
degenerate value; the biases are drawn `N(0, 0.1²)` for the same reason.
"""

from __future__ import annotations

import torch

from attnbench.mechanisms.common import COMPILE_IMPL, Draw, mode_bytes, projection_bytes, projection_flops
from attnbench.mechanisms.problem import Level, Mode, Problem
from attnbench.mechanisms.registry import FlopCount, Impl, Mechanism, Param
from attnbench.mechanisms.tssa import decode

# Element-wise FLOPs per element of w in the forward, an estimate (README.md): squares, the token norm, the
# head softmax, the weighted token sums and the output scaling.
ELEMENTWISE_FLOPS = 15


def t_max(problem: Problem) -> int:
    """Positions the causal bias `beta` holds: the `t_max` parameter, or T when it is None."""
    return problem.params["t_max"] or problem.T


def make_tensors(problem: Problem, dtype: torch.dtype, device, generator) -> dict[str, torch.Tensor]:
    draw = Draw(dtype, device, generator)
    B, T, H, d, D = problem.B, problem.T, problem.H, problem.d, problem.D
    if problem.level is Level.CORE:
        tensors = {"w": draw.normal(B, T, H, d)}
    else:
        tensors = {"x": draw.normal(B, T, D), "W_in": draw.weight(D, D), "b_in": draw.normal(D, std=0.1)}
        tensors |= {"W_o": draw.weight(D, D), "b_o": draw.normal(D, std=0.1)}
    tensors["temp"] = draw.normal(H, std=0.1, mean=1.0)
    if problem.causal:
        tensors["beta"] = draw.normal(H, t_max(problem), std=0.1)
    return tensors


def project(problem: Problem, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    w = tensors["x"] @ tensors["W_in"] + tensors["b_in"]  # (B, T, D)
    core = {"w": w.view(problem.B, problem.T, problem.H, problem.d), "temp": tensors["temp"]}
    if problem.causal:
        core["beta"] = tensors["beta"]
    return core


def output(problem: Problem, tensors: dict[str, torch.Tensor], core_out: torch.Tensor) -> torch.Tensor:
    return core_out.reshape(problem.B, problem.T, problem.D) @ tensors["W_o"] + tensors["b_o"]


def _projection_shapes(problem: Problem) -> list[tuple[int, int]]:
    return [(problem.D, problem.D), (problem.D, problem.D)]


def flops(problem: Problem) -> FlopCount:
    """Core: no matmul (every step is element-wise or a reduction), `15·B·T·D` element-wise, causal or not.
    Layer: adds the two `D×D` projections, `4·B·T·D²`, as matmul FLOPs."""
    tokens = problem.B * problem.T
    matmul = projection_flops(tokens, *_projection_shapes(problem)) if problem.level is Level.LAYER else 0
    return FlopCount(matmul=matmul, other=ELEMENTWISE_FLOPS * tokens * problem.D)


def min_bytes(problem: Problem, mode: Mode, itemsize: int) -> int:
    """Fewest bytes of a fused kernel (README.md derives them).

    Forward, causal or not: three reductions over tokens depend on each other (Σw², then Π-weighted sums, then
    the output), so `w` is read three times and the output written once, plus Π saved in fp32 for the
    backward: `s·B·T·D·4 + 4·B·H·T`. The causal chunk states (`2D + H` fp32 numbers per chunk) are left out.
    Backward: two more dependent reductions over tokens (Σ_t g·w·Π, then Σ_t ∂a·w²) before `dw` can be written,
    so `w` and the output gradient `g` are each read three times and `dw` written once, with Π read in each
    pass and one fp32 per-token-and-head intermediate written and read: `s·B·T·D·7 + 4·B·H·T·5`.
    """
    B, T, H, D = problem.B, problem.T, problem.H, problem.D
    fwd = itemsize * B * T * D * 4 + 4 * B * H * T
    bwd = itemsize * B * T * D * 7 + 4 * B * H * T * 5
    if problem.level is Level.LAYER:
        proj = projection_bytes(B * T, itemsize, *_projection_shapes(problem))
        fwd, bwd = fwd + proj, bwd + 2 * proj
    return mode_bytes(fwd, bwd, mode)


def check(problem: Problem) -> None:
    limit = problem.params["t_max"]
    if problem.causal and limit is not None and limit < problem.T:
        raise ValueError(f"tssa: t_max={limit} must be >= T={problem.T} (beta holds one bias per position)")


IMPLS = (
    Impl(
        "reference",
        "attnbench.mechanisms.tssa.reference:core",
        "plain PyTorch, the authors' formulation; decode (causal): the recurrent state of H·(2d+1) numbers",
        decode="attnbench.mechanisms.tssa.decode:reference_decode",
    ),
    Impl(
        "triton",
        "attnbench.mechanisms.tssa.triton_tssa:core",
        "Triton: three passes over w forward and backward, causal as chunked scans",
        needs=("triton",),
        causal=(False, True),
        dtypes=frozenset({"fp32", "tf32", "bf16", "fp16"}),
    ),
    COMPILE_IMPL,
)

MECHANISMS = (
    Mechanism(
        name="tssa",
        title="Token Statistics Self-Attention (ToST)",
        paper="https://arxiv.org/abs/2412.17810",
        complexity="linear",
        make_tensors=make_tensors,
        reference=IMPLS[0].load(),
        project=project,
        output=output,
        flops=flops,
        min_bytes=min_bytes,
        impls=IMPLS,
        params={
            "t_max": Param(
                default=None,
                doc="positions of the causal bias beta (None: T; the authors use 1024); must be >= T",
                minimum=1,
            )
        },
        check=check,
        cache_model=decode.cache_model,
        test_problems=(
            dict(B=2, T=37, H=3, d=12, causal=False),
            dict(B=1, T=45, H=5, d=24, causal=True),
            dict(B=2, T=19, H=4, d=6, causal=True, t_max=32),
            dict(B=2, T=1, H=3, d=10, causal=True),
        ),
    ),
)
