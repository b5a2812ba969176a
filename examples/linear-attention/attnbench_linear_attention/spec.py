"""Linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), registered with attnbench.

Core tensors: `q, k, v [B,T,H,d]` drawn N(0, 1). Layer tensors: `x [B,T,D]`, `W_qkv [D,3D]`, `b_qkv [3D]`,
`W_o [D,D]`, `b_o [D]`: the weights `N(0, 1/fan_in)` so that activations stay O(1) at every width, the biases
`N(0, 0.1²)` so that their use is tested too. The fused `qkv` projection is split `[B,T,3,H,d]`, q first.
The mechanism has no parameters of its own and both a non-causal and a causal form. README.md derives the cost
models below.
"""

from __future__ import annotations

import torch

from attnbench.mechanisms.common import COMPILE_IMPL, Draw, mode_bytes, projection_bytes, projection_flops
from attnbench.mechanisms.problem import Level, Mode, Problem
from attnbench.mechanisms.registry import FlopCount, Impl, Mechanism

NAME = "linear_attn"
# Element-wise FLOPs per element of q (README.md): φ of q and of k (2 each), the running sum of φ(k) (1), the
# normaliser's dot product φ(q)ᵀz (2) and the division (1).
ELEMENTWISE_FLOPS = 8


def make_tensors(problem: Problem, dtype: torch.dtype, device, generator) -> dict[str, torch.Tensor]:
    draw = Draw(dtype, device, generator)
    B, T, H, d, D = problem.B, problem.T, problem.H, problem.d, problem.D
    if problem.level is Level.CORE:
        return {"q": draw.normal(B, T, H, d), "k": draw.normal(B, T, H, d), "v": draw.normal(B, T, H, d)}
    tensors = {"x": draw.normal(B, T, D), "W_qkv": draw.weight(D, 3 * D), "b_qkv": draw.normal(3 * D, std=0.1)}
    return tensors | {"W_o": draw.weight(D, D), "b_o": draw.normal(D, std=0.1)}


def project(problem: Problem, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    qkv = (tensors["x"] @ tensors["W_qkv"] + tensors["b_qkv"]).view(problem.B, problem.T, 3, problem.H, problem.d)
    return {"q": qkv[:, :, 0], "k": qkv[:, :, 1], "v": qkv[:, :, 2]}


def output(problem: Problem, tensors: dict[str, torch.Tensor], core_out: torch.Tensor) -> torch.Tensor:
    return core_out.reshape(problem.B, problem.T, problem.D) @ tensors["W_o"] + tensors["b_o"]


def _projection_shapes(problem: Problem) -> list[tuple[int, int]]:
    return [(problem.D, 3 * problem.D), (problem.D, problem.D)]


def flops(problem: Problem) -> FlopCount:
    """Core, causal or not: building the states `Σ φ(k_j) v_jᵀ` and reading them with `φ(q_i)`, `2·B·T·D·d`
    each, so `matmul = 4·B·T·D·d`; `other = 8·B·T·D` element-wise. Layer: adds `W_qkv` and `W_o`, `8·B·T·D²`."""
    tokens = problem.B * problem.T
    matmul = 4 * tokens * problem.D * problem.d
    if problem.level is Level.LAYER:
        matmul += projection_flops(tokens, *_projection_shapes(problem))
    return FlopCount(matmul=matmul, other=ELEMENTWISE_FLOPS * tokens * problem.D)


def min_bytes(problem: Problem, mode: Mode, itemsize: int) -> int:
    """Fewest bytes of a fused kernel: forward `s·B·T·D·4`, backward `s·B·T·D·7` (README.md derives them).

    Forward: read q, k, v once and write the output; the per-head states (`d×(d+1)` numbers, or one per chunk
    causally) stay on chip. Backward: read q, k, v and the output gradient, write dq, dk, dv.
    """
    B, T, D = problem.B, problem.T, problem.D
    fwd = itemsize * B * T * D * 4
    bwd = itemsize * B * T * D * 7
    if problem.level is Level.LAYER:
        proj = projection_bytes(B * T, itemsize, *_projection_shapes(problem))
        fwd, bwd = fwd + proj, bwd + 2 * proj
    return mode_bytes(fwd, bwd, mode)


IMPLS = (
    Impl(
        "reference",
        "attnbench_linear_attention.reference:core",
        "plain PyTorch, the equations token by token (causal: a d×d state per token)",
    ),
    Impl(
        "matmul",
        "attnbench_linear_attention.matmul:core",
        "plain PyTorch: two matmuls; causal in chunks of 64 with the state carried across chunks",
    ),
    COMPILE_IMPL,
)

MECHANISMS = (
    Mechanism(
        name=NAME,
        title="Linear attention, elu+1 feature map (Transformers are RNNs)",
        paper="https://arxiv.org/abs/2006.16236",
        complexity="linear",
        make_tensors=make_tensors,
        reference=IMPLS[0].load(),
        project=project,
        output=output,
        flops=flops,
        min_bytes=min_bytes,
        impls=IMPLS,
        # Odd T, widths that are not powers of two, B = 1, a causal T spanning three chunks of the fast path (the
        # last one padded), one shorter than a chunk, and two tokens. Not T = 1: one token's output is
        # v·s/(s + ε) with s = φ(q)ᵀφ(k), so the q and k gradients are O(ε) and what a float32 run returns for them
        # is rounding, which a relative error cannot judge (tests/mechanisms/test_plugins.py checks T = 1's values).
        test_problems=(
            dict(B=2, T=37, H=3, d=12),
            dict(B=1, T=150, H=2, d=20, causal=True),
            dict(B=2, T=45, H=3, d=7, causal=True),
            dict(B=2, T=2, H=3, d=5, causal=True),
        ),
    ),
)
