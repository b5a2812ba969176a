"""AFT, the Attention Free Transformer (Zhai et al. 2021): one mechanism, four variants.

The math is per channel over `D' = H·d` channels; heads only group them (and, for conv, pick the key channel
and the kernel). Core tensors: `q, v [B,T,H,d]`, `k [B,T,H,d]` (conv: `k [B,T,H,1]`, one key channel per head
broadcast over its d value channels) and the variant's learned bias, all biases drawn N(0, 0.1²) (a zero bias
would make full equal simple):
- full:   `w_bias [t_max, t_max]`;
- simple: none;
- local:  `w_band [t_max, 2·window − 1]`, column j the offset `t' − t = j − window + 1`;
- conv:   `w_conv [H, window, window]`, tokens on a `side × side` grid (T = side²), non-causal only.
Layer tensors: `x [B,T,D]`, `W_q, W_v [D,D']`, `W_k [D,D']` (conv: `[D,H]`), `W_o [D',D]`, N(0, 1/fan_in), plus
the bias. README.md beside this file has the exact parameterisations and the cost models.
"""

from __future__ import annotations

import math

import torch

from attnbench.mechanisms.aft import decode
from attnbench.mechanisms.aft.reference import full_block_rows
from attnbench.mechanisms.common import COMPILE_IMPL, Draw, mode_bytes, projection_bytes, projection_flops
from attnbench.mechanisms.problem import Mode, Problem
from attnbench.mechanisms.registry import NO_FLOPS, FlopCount, Impl, Mechanism, Param, Unsupported

VARIANTS = ("full", "simple", "local", "conv")
BIAS = {"full": "w_bias", "local": "w_band", "conv": "w_conv"}  # the learned core bias of each variant
BIAS_STD = 0.1

PARAMS = {
    "variant": Param(
        default="simple",
        doc="full (T×T bias, quadratic), simple (no bias), local (band |t−t'| < window), conv (2-D grid kernel)",
        choices=VARIANTS,
    ),
    "window": Param(
        default=7,
        doc="local: the band is |t−t'| < window (1 <= window <= T); conv: the odd side of the window×window "
        "kernel (window <= 2·side − 1). Unused by full and simple.",
        minimum=1,
    ),
    "t_max": Param(
        default=None,
        doc="full and local: positions the learned bias covers (>= T; default T). Unused by simple and conv.",
        minimum=1,
    ),
}


def variant(problem: Problem) -> str:
    return problem.params["variant"]


def t_max(problem: Problem) -> int:
    return problem.params["t_max"] or problem.T


def key_channels(problem: Problem) -> int:
    """Channels of K: one per head for conv, D' otherwise."""
    return problem.H if variant(problem) == "conv" else problem.D


def grid_side(problem: Problem) -> int:
    return math.isqrt(problem.T)


def check(problem: Problem) -> None:
    name, T, window = variant(problem), problem.T, problem.params["window"]
    if name in ("full", "local") and t_max(problem) < T:
        raise ValueError(f"aft: t_max={t_max(problem)} must be >= T={T} (the bias covers t_max positions)")
    if name == "local" and window > T:
        raise ValueError(f"aft: window={window} must be <= T={T} for variant local")
    if name == "conv":
        if problem.causal:
            raise Unsupported("aft: variant conv is non-causal only (a 2-D image grid has no token order)")
        side = grid_side(problem)
        if side * side != T:
            raise ValueError(f"aft: T={T} must be a square (side × side tokens) for variant conv")
        if window % 2 == 0:
            raise ValueError(f"aft: window={window} must be odd for variant conv (a centred kernel)")
        if window > 2 * side - 1:
            raise ValueError(f"aft: window={window} must be <= 2·side − 1 = {2 * side - 1} for variant conv")


def make_tensors(problem: Problem, dtype: torch.dtype, device, generator) -> dict[str, torch.Tensor]:
    draw = Draw(dtype, device, generator)
    B, T, H, d, D = problem.B, problem.T, problem.H, problem.d, problem.D
    kc = key_channels(problem)
    if problem.level.value == "core":
        tensors = {"q": draw.normal(B, T, H, d), "k": draw.normal(B, T, H, kc // H), "v": draw.normal(B, T, H, d)}
    else:
        tensors = {
            "x": draw.normal(B, T, D),
            "W_q": draw.weight(D, D),
            "W_k": draw.weight(D, kc),
            "W_v": draw.weight(D, D),
            "W_o": draw.weight(D, D),
        }
    return tensors | _bias(problem, draw)


def _bias(problem: Problem, draw: Draw) -> dict[str, torch.Tensor]:
    name, window = variant(problem), problem.params["window"]
    if name == "full":
        return {"w_bias": draw.normal(t_max(problem), t_max(problem), std=BIAS_STD)}
    if name == "local":
        return {"w_band": draw.normal(t_max(problem), 2 * window - 1, std=BIAS_STD)}
    if name == "conv":
        return {"w_conv": draw.normal(problem.H, window, window, std=BIAS_STD)}
    return {}


def project(problem: Problem, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    x, B, T, H = tensors["x"], problem.B, problem.T, problem.H
    core = {
        "q": (x @ tensors["W_q"]).view(B, T, H, problem.d),
        "k": (x @ tensors["W_k"]).view(B, T, H, -1),
        "v": (x @ tensors["W_v"]).view(B, T, H, problem.d),
    }
    bias = BIAS.get(variant(problem))
    return core | ({bias: tensors[bias]} if bias else {})


def output(problem: Problem, tensors: dict[str, torch.Tensor], core_out: torch.Tensor) -> torch.Tensor:
    return core_out.reshape(problem.B, problem.T, problem.D) @ tensors["W_o"]


def _projection_shapes(problem: Problem) -> list[tuple[int, int]]:
    D = problem.D
    return [(D, D), (D, key_channels(problem)), (D, D), (D, D)]


def full_pairs(problem: Problem) -> int:
    """(t, t') pairs the full variant sums over: T², or T(T+1)/2 causal."""
    T = problem.T
    return T * (T + 1) // 2 if problem.causal else T * T


def band_pairs(problem: Problem) -> int:
    """(t, t') pairs inside the local band |t − t'| < s within the sequence (causal: t' <= t)."""
    T, s = problem.T, problem.params["window"]
    return s * T - s * (s - 1) // 2 if problem.causal else (2 * s - 1) * T - s * (s - 1)


def flops(problem: Problem) -> FlopCount:
    """Forward FLOPs. `matmul` is what FlopCounterMode counts on the non-causal reference: full's
    `exp(w) @ [e^K⊙V, e^K]` (`4·B·T²·D'`, causal `4·B·D'·T(T+1)/2` by the model) and conv's depthwise conv2d
    over `D' + H` channels (`2·B·T·s²·(D'+H)`); simple and local have none. `other` is the element-wise model:
    `8·B·T·D'` for the global sums and the output (exp, two multiply-adds, sigmoid, divide, multiply), plus two
    multiply-adds per band pair and channel for local, plus `2·T²` for `exp(w − max)` for full."""
    B, T, C, H = problem.B, problem.T, problem.D, problem.H
    name, s = variant(problem), problem.params["window"]
    matmul, other = 0, 8 * B * T * C
    if name == "full":
        matmul = 4 * B * C * full_pairs(problem)
        other += 2 * full_pairs(problem)
    elif name == "local":
        other += 4 * B * C * band_pairs(problem)
    elif name == "conv":
        matmul = 2 * B * T * s * s * (C + H)
    if problem.level.value == "layer":
        matmul += projection_flops(B * T, *_projection_shapes(problem))
    return FlopCount(matmul=matmul, other=other)


def min_bytes(problem: Problem, mode: Mode, itemsize: int) -> int:
    """Fewest bytes a fused kernel moves. Forward: read Q, K, V and the bias entries it uses, write Y
    (`4·s·B·T·D'` for simple). Backward: read Q, K, V, dY and the bias, write dQ, dK, dV and the bias gradient
    (`7·s·B·T·D'` for simple; the few fp32 statistics per channel that the forward keeps are left out).
    K has `H` channels instead of `D'` for conv."""
    B, T, C, H = problem.B, problem.T, problem.D, problem.H
    kc, name, s = key_channels(problem), variant(problem), problem.params["window"]
    bias = {"full": full_pairs(problem), "local": band_pairs(problem), "conv": H * s * s}.get(name, 0)
    fwd = itemsize * (B * T * (3 * C + kc) + bias)
    bwd = itemsize * (B * T * (5 * C + 2 * kc) + 2 * bias)
    if problem.level.value == "layer":
        proj = projection_bytes(B * T, itemsize, *_projection_shapes(problem))
        fwd, bwd = fwd + proj, bwd + 2 * proj
    return mode_bytes(fwd, bwd, mode)


def reference_recompute(problem: Problem, forward: FlopCount) -> FlopCount:
    """What the reference's backward computes again. Full: with more than one block of query rows, each block is
    checkpointed and its `exp(w)` rows and matmul run again. Local: the band's row blocks are always
    checkpointed, so its band terms run again; the prefix and suffix sums are kept."""
    B, T, C = problem.B, problem.T, problem.D
    name = variant(problem)
    if name == "full" and full_block_rows(B, T, C) < T:
        return FlopCount(matmul=4 * B * C * full_pairs(problem), other=2 * full_pairs(problem))
    if name == "local":
        return FlopCount(matmul=0, other=4 * B * C * band_pairs(problem))
    return NO_FLOPS


def triton_unsupported(problem: Problem) -> str | None:
    """Why the `triton` implementation does not run a problem: only simple and local have kernels."""
    name = variant(problem)
    if name == "full":
        return "aft triton: variant full has no Triton kernel (its matmul form is cuBLAS): use reference or compile"
    if name == "conv":
        return "aft triton: variant conv has no Triton kernel (it is a depthwise conv2d): use reference or compile"
    return None


def derived(problem: Problem) -> dict[str, int]:
    return {"grid_side": grid_side(problem)} if variant(problem) == "conv" else {}


IMPLS = (
    Impl(
        "reference",
        "attnbench.mechanisms.aft.reference:core",
        "plain PyTorch from the formulas: full as one cuBLAS matmul per query block, conv as one conv2d; "
        "decode (causal): simple a running state, local a window and a running state, full its K/V cache",
        recompute=reference_recompute,
        decode="attnbench.mechanisms.aft.decode:reference_decode",
    ),
    Impl(
        "triton",
        "attnbench.mechanisms.aft.triton_aft:core",
        "Triton, simple and local only: chunked running-max scans, the local band as tile matmuls",
        needs=("triton",),
        causal=(False, True),
        dtypes=frozenset({"fp32", "tf32", "bf16", "fp16"}),
        unsupported=triton_unsupported,
    ),
    COMPILE_IMPL,
)

# Every variant, causal and not, at small awkward shapes: odd T, widths that are not powers of two, B = 1, T = 1.
TEST_PROBLEMS = (
    dict(B=2, T=37, H=3, d=10, causal=False, variant="simple"),
    dict(B=1, T=33, H=2, d=12, causal=True, variant="simple"),
    dict(B=2, T=1, H=2, d=5, causal=True, variant="simple"),
    dict(B=2, T=37, H=3, d=6, causal=False, variant="full"),
    dict(B=1, T=29, H=2, d=5, causal=True, variant="full", t_max=40),
    dict(B=1, T=1, H=2, d=3, causal=False, variant="full"),
    dict(B=2, T=37, H=3, d=6, causal=False, variant="local", window=5),
    dict(B=1, T=33, H=2, d=5, causal=True, variant="local", window=7, t_max=40),
    dict(B=2, T=1, H=2, d=3, causal=True, variant="local", window=1),
    dict(B=2, T=25, H=3, d=6, causal=False, variant="conv", window=3),
    dict(B=1, T=49, H=2, d=5, causal=False, variant="conv", window=5),
    dict(B=1, T=1, H=2, d=3, causal=False, variant="conv", window=1),
)

MECHANISMS = (
    Mechanism(
        name="aft",
        title="Attention Free Transformer (full, simple, local, conv)",
        paper="https://arxiv.org/abs/2105.14103",
        complexity="linear",
        variant_complexity={"full": "quadratic"},
        make_tensors=make_tensors,
        reference=IMPLS[0].load(),
        project=project,
        output=output,
        flops=flops,
        min_bytes=min_bytes,
        impls=IMPLS,
        params=PARAMS,
        check=check,
        variant_param="variant",
        derived=derived,
        cache_model=decode.cache_model,
        test_problems=TEST_PROBLEMS,
        notes="complexity is per variant: simple, local and conv are linear in T, full is quadratic (T² bias).",
    ),
)
