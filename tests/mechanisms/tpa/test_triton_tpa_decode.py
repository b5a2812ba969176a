"""TPA's decode kernel (`attnbench/mechanisms/tpa/triton_tpa_decode.py`) against float64 causal attention.

The expected output is built from TPA's own reference: `qkv` forms Q, K and V (with the rotary) from factors drawn
in the test dtype and promoted to float64, and the softmax reference's `attention` gives each new token's causal
row (its query over the keys up to its own position). The kernel gets the same A factors and B_v, B_k rotated by
the reference's `rotate` (what a factor cache stores) and the formed q, both rounded to the test dtype, and never
sees K or V.

On a CPU the kernels run under TRITON_INTERPRET=1 (set by conftest) with 16-token tiles, so L = 17, 290 and 301
span several tiles and, with the split counts below, several splits; H = 6 and 12 are padded to row blocks of
16 and 64 (q_len = 3). Every scratch buffer starts as NaN, so a row or split the kernels leave unwritten fails.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from attnbench.measure import numerics
from attnbench.mechanisms import registry, triton_common
from attnbench.mechanisms.registry import Unsupported
from attnbench.mechanisms.softmax.reference import attention
from attnbench.mechanisms.tpa.reference import qkv, rope_tables, rotate

HAS_CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or not (HAS_CUDA or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)
DEVICE = "cuda" if HAS_CUDA else "cpu"
TPA = registry.get("tpa")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Relative L2 error allowed per dtype (the suite's defaults). fp32: the interpreter's dots are exact fp32, so
# only fp32 rounding of the sums remains (about 1e-7 measured) against 1e-4. fp16: the cache and q are rounded
# to 2^-11 relative and p·A_v is rounded once more before its dot, errors that average over the keys to a few
# 1e-4 (measured up to 3e-4) against 4e-3. bf16 has 3 fewer mantissa bits (8× the rounding): 3e-2.
TOLERANCE = registry.DEFAULT_TOLERANCES


def _kernel():
    from attnbench.mechanisms.tpa import triton_tpa_decode

    return triton_tpa_decode


def _case(B, L, H, d, r_k, r_v, q_len, dtype, seed):
    """(kernel inputs in `dtype`, the float64 expected output `[B,q_len,H,d]`) for a cache of L tokens."""
    problem = TPA.problem(B=B, T=L, H=H, d=d, causal=True, R_q=2, R_k=r_k, R_v=r_v)
    generator = torch.Generator(device=DEVICE).manual_seed(seed)
    factors = TPA.make_tensors(problem, dtype, torch.device(DEVICE), generator)
    exact = {name: tensor.double() for name, tensor in factors.items()}
    q, k, v = qkv(problem, exact)
    # The causal rows of the new tokens: token i (position p = L - q_len + i) over the keys j <= p.
    rows = [slice(p, p + 1) for p in range(L - q_len, L)]
    expected = torch.cat([attention(q[:, p], k[:, : p.stop], v[:, : p.stop], causal=False) for p in rows], dim=1)
    cos, sin = rope_tables(L, d, base=10000, precision="exact", dtype=torch.float64, device=DEVICE)
    b_k = rotate(exact["B_k"], cos, sin).to(dtype)
    inputs = (q[:, L - q_len :].to(dtype), factors["A_k"], b_k, factors["A_v"], factors["B_v"])
    return inputs, expected


def _check(inputs, expected, dtype_name, num_splits=None):
    got = _kernel().tpa_decode(*inputs, scale=inputs[0].shape[-1] ** -0.5, num_splits=num_splits)
    assert got.dtype == inputs[0].dtype and got.shape == expected.shape
    rel, _ = numerics.errors(got, expected)
    assert rel <= TOLERANCE[dtype_name], f"relative error {rel:.2e} in {dtype_name}"


@pytest.fixture(autouse=True)
def _poisoned_scratch(monkeypatch):
    monkeypatch.setattr(triton_common, "POISON", True)


SHAPES = [  # B, L, H, d, R_k, R_v, q_len, splits (None: the kernel's own choice)
    pytest.param(1, 1, 6, 32, 1, 1, 1, None, id="L1"),
    pytest.param(3, 17, 12, 64, 2, 2, 1, None, id="L17-B3-H12-R2"),
    pytest.param(1, 301, 6, 32, 4, 4, 3, 5, id="L301-R4-qlen3-5splits"),
    pytest.param(3, 301, 12, 64, 1, 1, 3, None, id="L301-B3-H12-d64-default-splits"),
    # 19 one-tile splits: the last holds positions 288, 289 only, which the first new token (sees <= 287) never
    # sees, so that split's row carries no weight (log-sum-exp -inf) and the merge must skip it.
    pytest.param(2, 290, 6, 32, 2, 1, 3, 19, id="L290-Rk2-Rv1-split-without-visible-keys"),
    pytest.param(1, 3, 6, 32, 1, 2, 3, None, id="L3-only-new-tokens"),
    pytest.param(2, 37, 5, 10, 2, 1, 2, 3, id="L37-H5-d10-padded-head-width"),
]


@pytest.mark.parametrize("dtype_name", ["fp32", "fp16"])
@pytest.mark.parametrize(("B", "L", "H", "d", "r_k", "r_v", "q_len", "splits"), SHAPES)
def test_matches_float64_causal_attention(B, L, H, d, r_k, r_v, q_len, splits, dtype_name, seed):
    inputs, expected = _case(B, L, H, d, r_k, r_v, q_len, DTYPES[dtype_name], seed)
    _check(inputs, expected, dtype_name, splits)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("B", "L", "H", "d", "r_k", "r_v", "q_len"),
    [(1, 40001, 32, 128, 1, 1, 4), (4, 5000, 32, 64, 4, 4, 1), (3, 777, 12, 32, 2, 1, 3)],
)
def test_bf16_on_gpu(B, L, H, d, r_k, r_v, q_len, seed):
    """bf16 with the GPU's own tiles and splits (Triton's interpreter computes bf16 dots wrongly)."""
    inputs, expected = _case(B, L, H, d, r_k, r_v, q_len, torch.bfloat16, seed)
    _check(inputs, expected, "bf16")


def test_reads_a_slice_of_a_larger_cache_in_place(seed):
    """A cache preallocated for more tokens and sliced to the L filled ones (batch and token strides not those
    of a contiguous tensor) gives the same output as the contiguous copy, without a copy being made."""
    inputs, expected = _case(2, 45, 6, 32, 2, 2, 1, torch.float32, seed)
    sliced = [inputs[0]]
    for factor in inputs[1:]:
        room = torch.full((2, 64, *factor.shape[2:]), float("nan"), dtype=factor.dtype, device=DEVICE)
        room[:, :45] = factor
        sliced.append(room[:, :45])
    assert not sliced[1].is_contiguous()
    _check(sliced, expected, "fp32", num_splits=2)


def test_bad_inputs_are_named():
    inputs, _ = _case(1, 5, 6, 32, 1, 1, 1, torch.float32, 0)
    q, a_k, b_k, a_v, b_v = inputs
    with pytest.raises(ValueError, match=r"b_v has shape \(1, 5, 1, 16\), expected \(1, 5, 1, 32\)"):
        _kernel().tpa_decode(q, a_k, b_k, a_v, b_v[..., :16], scale=1.0)
    with pytest.raises(ValueError, match="q_len=6 must be between 1 and the cache length L=5"):
        _kernel().tpa_decode(q.expand(1, 6, 6, 32), a_k, b_k, a_v, b_v, scale=1.0)
    with pytest.raises(Unsupported, match="must share one of fp32/fp16/bf16"):
        _kernel().tpa_decode(q.half(), a_k, b_k, a_v, b_v, scale=1.0)
    with pytest.raises(Unsupported, match=r"q_len·H·d = 4·40·128 exceeds 16384"):
        wide = torch.randn(1, 4, 40, 128)
        cache = (torch.randn(1, 5, *shape) for shape in ((40, 1), (1, 128), (40, 1), (1, 128)))
        _kernel().tpa_decode(wide, *cache, scale=1.0)


@pytest.mark.parametrize("B", [1, 2, 3, 7, 66, 131, 132, 133, 1000])
@pytest.mark.parametrize("L", [1, 255, 257, 4096, 131072, 524288])
def test_splits_fill_the_gpu_with_long_runs(B, L):
    """On 132 SMs: B·splits covers every SM once the cache is long enough, no split is shorter than the minimum
    (except a single one), and the planned tiles cover the cache with no empty split."""
    module = _kernel()
    splits = module.choose_splits(B, L, 132)
    assert splits >= 1
    if L >= module.MIN_SPLIT_TOKENS * 132:
        assert B * splits >= 132
        assert B * (splits - 1) < 132  # no more than one wave of programs
    assert splits == 1 or L / splits >= module.MIN_SPLIT_TOKENS
    tiles, used = module.split_plan(L, splits, 64)
    assert used == min(splits, tiles) and (tiles - 1) * 64 < L <= tiles * 64
    shares = [(s + 1) * tiles // used - s * tiles // used for s in range(used)]  # the kernel's split bounds
    assert sum(shares) == tiles and min(shares) >= 1 and max(shares) - min(shares) <= 1


class _Recorder:
    """Stands in for a kernel: `kernel[grid](*args)` records the grid and arguments instead of running."""

    def __init__(self, calls: list):
        self.calls = calls

    def __getitem__(self, grid):
        return lambda *args, **meta: self.calls.append((grid, args))


@pytest.mark.parametrize(("B", "L", "q_len", "r_k", "r_v"), [(1, 131072, 1, 1, 1), (3, 4099, 4, 2, 1)])
def test_bytes_model_is_what_the_launches_touch(monkeypatch, B, L, q_len, r_k, r_v):
    """`bytes_moved` equals the bytes of every tensor the two launches receive (on meta tensors, sized for a
    132-SM GPU): each read or written once, the partials twice (written by the split pass, read by the merge).
    `cache_bytes` is the TPA spec's elements per token times the bytes of each."""
    module = _kernel()
    calls = []
    monkeypatch.setattr(module, "_split_kernel", _Recorder(calls))
    monkeypatch.setattr(module, "_merge_kernel", _Recorder(calls))
    H, d = 32, 64
    meta = torch.device("meta")
    shapes = [(B, q_len, H, d), (B, L, H, r_k), (B, L, r_k, d), (B, L, H, r_v), (B, L, r_v, d)]
    module.tpa_decode(*(torch.empty(shape, dtype=torch.bfloat16, device=meta) for shape in shapes), scale=0.125)
    (grid, split_args), (_, merge_args) = calls
    touched = sum(t.numel() * t.element_size() for t in (*split_args, *merge_args) if isinstance(t, torch.Tensor))
    assert touched == module.bytes_moved(B, L, H, d, q_len, r_k, r_v, 2, splits=grid[1])
    assert grid == (B, module.choose_splits(B, L, 132))
    problem = TPA.problem(B=B, T=L, H=H, d=d, causal=True, R_k=r_k, R_v=r_v)
    assert module.cache_bytes(B, L, H, d, r_k, r_v, 2) == 2 * B * L * TPA.derived(problem)["kv_cache_per_token"]
