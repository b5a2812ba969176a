"""XCA: cross-covariance attention (XCiT); README.md beside this file has the equations and the cost models.

Core tensors: `q, k, v [B,T,H,d]` drawn N(0, 1) and the learned temperature `tau [H]`, drawn `1 + 0.1·N(0,1)`
(the authors initialise it to 1) so that no test sits at a degenerate value. Layer tensors: `x [B,T,D]`,
`W_qkv [D,3D]`, `b_qkv [3D]`, `W_proj [D,D]`, `b_proj [D]` and `tau`. XCiT initialises the weights
trunc-normal with std 0.02 and the biases to 0; here weights are `N(0, 1/fan_in)` so that activations stay
O(1) at every width (the benchmark numerics compare relative errors of O(1) values), and biases `N(0, 0.1²)`
so that their forward use is tested too. The fused `qkv` output is split as the authors do:
`[B,T,3,H,d]`, q first, heads major.

XCA has no causal form in the paper; a causal request is `Unsupported`.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from attnbench.mechanisms.common import COMPILE_IMPL, Draw, mode_bytes, projection_bytes, projection_flops
from attnbench.mechanisms.problem import Level, Mode, Problem
from attnbench.mechanisms.registry import FlopCount, Impl, Mechanism


def make_tensors(problem: Problem, dtype: torch.dtype, device, generator) -> dict[str, torch.Tensor]:
    draw = Draw(dtype, device, generator)
    B, T, H, d, D = problem.B, problem.T, problem.H, problem.d, problem.D
    if problem.level is Level.CORE:
        tensors = {"q": draw.normal(B, T, H, d), "k": draw.normal(B, T, H, d), "v": draw.normal(B, T, H, d)}
    else:
        tensors = {"x": draw.normal(B, T, D), "W_qkv": draw.weight(D, 3 * D), "b_qkv": draw.normal(3 * D, std=0.1)}
        tensors |= {"W_proj": draw.weight(D, D), "b_proj": draw.normal(D, std=0.1)}
    tensors["tau"] = draw.normal(H, std=0.1, mean=1.0)
    return tensors


def project(problem: Problem, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    qkv = (tensors["x"] @ tensors["W_qkv"] + tensors["b_qkv"]).view(problem.B, problem.T, 3, problem.H, problem.d)
    return {"q": qkv[:, :, 0], "k": qkv[:, :, 1], "v": qkv[:, :, 2], "tau": tensors["tau"]}


def output(problem: Problem, tensors: dict[str, torch.Tensor], core_out: torch.Tensor) -> torch.Tensor:
    return core_out.reshape(problem.B, problem.T, problem.D) @ tensors["W_proj"] + tensors["b_proj"]


def _projection_shapes(problem: Problem) -> list[tuple[int, int]]:
    return [(problem.D, 3 * problem.D), (problem.D, problem.D)]


def flops(problem: Problem) -> FlopCount:
    """Core: the per-head `d×d` Gram over T tokens and the map applied to v, `2·B·T·D·d` each, `4·B·T·D·d`
    (norms, softmax and temperature are not counted). Layer: adds `W_qkv` and `W_proj`, `8·B·T·D²`."""
    matmul = 4 * problem.B * problem.T * problem.D * problem.d
    if problem.level is Level.LAYER:
        matmul += projection_flops(problem.B * problem.T, *_projection_shapes(problem))
    return FlopCount(matmul=matmul)


def min_bytes(problem: Problem, mode: Mode, itemsize: int) -> int:
    """Fewest bytes of a fused kernel (README.md).

    Forward: `q̂ k̂ᵀ = diag(1/‖q‖)(q kᵀ)diag(1/‖k‖)`, so one pass reads q and k for the Gram and the norms and a
    second reads v and writes O: `s·B·T·D·4`. Backward: `dA = dO vᵀ` is a reduction over tokens that the
    q and k gradients need, and `dv = Aᵀ dO` needs only the saved A, so one pass reads dO and v (writing dv)
    and a second reads q and k (writing dq, dk): `s·B·T·D·7`, every input and gradient touched once.
    The `B·H·d²` fp32 statistics (A, the normalised Gram) are left out: a kernel that keeps one head's
    passes in one program holds them on chip.
    """
    B, T, D = problem.B, problem.T, problem.D
    fwd = itemsize * B * T * D * 4
    bwd = itemsize * B * T * D * 7
    if problem.level is Level.LAYER:
        proj = projection_bytes(B * T, itemsize, *_projection_shapes(problem))
        fwd, bwd = fwd + proj, bwd + 2 * proj
    return mode_bytes(fwd, bwd, mode)


NON_CAUSAL = (False,)
IMPLS = (
    Impl("reference", "attnbench.mechanisms.xca.reference:core", "plain PyTorch, as the authors' XCA", causal=(False,)),
    replace(COMPILE_IMPL, causal=NON_CAUSAL),
    Impl(
        "triton",
        "attnbench.mechanisms.xca.triton_xca:core",
        "Triton: Gram and norms in one pass over q, k; A v in a second (README.md)",
        needs=("triton",),
        causal=NON_CAUSAL,
        dtypes=frozenset({"fp32", "tf32", "bf16", "fp16"}),
    ),
)

MECHANISMS = (
    Mechanism(
        name="xca",
        title="Cross-covariance attention (XCiT)",
        paper="https://arxiv.org/abs/2106.09681",
        complexity="linear",
        make_tensors=make_tensors,
        reference=IMPLS[0].load(),
        project=project,
        output=output,
        flops=flops,
        min_bytes=min_bytes,
        impls=IMPLS,
        causal=NON_CAUSAL,
        # At T = 1 with d > 1, q̂ = sign(q) is locally constant: ∂O/∂q = ∂O/∂k = 0 exactly, and what any
        # finite-precision kernel returns is roundoff, which a relative error cannot judge. The T = 1 case
        # here has d = 1 (A = 1, O = v, every q/k/τ gradient exactly 0); the Triton kernel's own tests check
        # T = 1 with d = 12 by absolute error.
        test_problems=(
            dict(B=2, T=37, H=3, d=24),
            dict(B=1, T=50, H=2, d=12),
            dict(B=2, T=1, H=3, d=1),
        ),
        notes="No causal form exists in the paper.",
    ),
)
