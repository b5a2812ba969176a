"""AFT-local's Triton kernel at its edges: learned biases far below 0 (where a "global sums minus band" form
cancels to rounding noise), values about a large mean (where the backward's `ρ·(V − ȳ)` cancels), gradients
scaled as fp16 loss scaling scales them (ρ past fp16's range), and band offsets past 2³¹ at the longest
sequence the spec allows a window for.

Under TRITON_INTERPRET=1 (tests/conftest.py) on a CPU; fp32 and fp16 against the float64 reference on the same
values, forward and backward.
"""

from __future__ import annotations

import os

import pytest
import torch

from attnbench.measure import numerics
from attnbench.mechanisms.aft import reference as ref

triton = pytest.importorskip("triton")

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)

import triton.language as tl  # noqa: E402

from attnbench.mechanisms.aft import triton_aft_local  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
FP32_TOLERANCE = 1e-4  # the registry's fp32 relative L2 error against float64
FP16_TOLERANCE = 4e-3  # and its fp16 one


def _gradients(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad_out.to(out.dtype))]


@pytest.mark.parametrize("bias_mean", [-20.0, -40.0])
@pytest.mark.parametrize(
    ("T", "window"), [(37, 5), (23, 23)], ids=["band-inside-the-sequence", "band-covers-every-key"]
)
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_very_negative_bias_matches_float64(bias_mean, T, window, causal, seed):
    """With e^w ≈ 1e-9 or 4e-18 the band's own keys carry almost no weight; rows whose band holds every key they
    see (here the first `window` rows, and all rows when the window is T) are decided by those tiny weights alone,
    which the kernel must keep rather than recover as the difference of two O(1) sums."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q, k, v = (torch.randn(1, T, 2, 6, device=DEVICE, generator=gen) for _ in range(3))
    w_band = bias_mean + torch.randn(T, 2 * window - 1, device=DEVICE, generator=gen)
    grad_out = torch.randn(q.shape, device=DEVICE, generator=gen)
    got = _gradients(
        lambda *t: triton_aft_local.local(*t, window, causal, tiles_per_chunk=1), [q, k, v, w_band], grad_out
    )
    want = _gradients(
        lambda *t: ref.local(*t, window=window, causal=causal),
        [t.double() for t in (q, k, v, w_band)],
        grad_out.double(),
    )
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=False):
        rel, _ = numerics.errors(g, w)
        assert rel <= FP32_TOLERANCE, f"{name}: relative error {rel:.2e} at bias mean {bias_mean}"
    # dw: its entries scale with e^w, so compare against the largest reference entry rather than the L2 norm alone.
    rel, _ = numerics.errors(got[4], want[4])
    assert rel <= FP32_TOLERANCE, f"dw_band: relative error {rel:.2e} at bias mean {bias_mean}"


def _fp16_case(q, k, v, w_band, grad_out, window, causal):
    """Every output and gradient of the fp16 kernel against float64 on the same (fp16-rounded) values."""
    inputs = [t.half() for t in (q, k, v, w_band)]
    got = _gradients(lambda *t: triton_aft_local.local(*t, window, causal, tiles_per_chunk=1), inputs, grad_out)
    want = _gradients(
        lambda *t: ref.local(*t, window=window, causal=causal),
        [t.double() for t in inputs],
        grad_out.half().double(),
    )
    names = ("out", "dq", "dk", "dv", "dw")
    return {name: numerics.errors(g, w)[0] for name, g, w in zip(names, got, want, strict=True)}


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_values_about_a_large_mean_keep_fp16_accuracy(causal, seed):
    """V = 40 + noise: dK and the bias gradient are sums of `ρ·e^K·(V_t' − ȳ_t)`, about 1 where `ρ·e^K·V` is
    about 40. Band products taken about each tile's mean keep fp16's accuracy in the difference; formed as
    `V·ρ − ρ·ȳ` with fp16 operands they lose five bits of it (an error of about 40·2⁻¹¹ of the result)."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    T, window = 37, 5
    q, k, v = (torch.randn(2, T, 2, 8, device=DEVICE, generator=gen) for _ in range(3))
    w_band = 0.1 * torch.randn(T, 2 * window - 1, device=DEVICE, generator=gen)
    grad_out = torch.randn(q.shape, device=DEVICE, generator=gen)
    rel = _fp16_case(q, k, 40.0 + v, w_band, grad_out, window, causal)
    assert all(r <= FP16_TOLERANCE for r in rel.values()), rel  # NaN (non-finite output) fails too


def test_loss_scaled_gradients_do_not_overflow_fp16(seed):
    """fp16 training scales the loss (here by 2¹⁴) so that small gradients survive; with a first key far below
    the tile's largest, `ρ = dY·σ(Q)/den` of the first row is about 10⁷, past fp16's 65504. The band products
    scale their operands before rounding them to fp16, so every gradient stays finite and accurate."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    T, window = 37, 5
    q, k, v = (torch.randn(1, T, 2, 8, device=DEVICE, generator=gen) for _ in range(3))
    k[:, 0] = -6.0
    w_band = 0.1 * torch.randn(T, 2 * window - 1, device=DEVICE, generator=gen)
    grad_out = 2.0**14 * torch.randn(q.shape, device=DEVICE, generator=gen).clamp(-3, 3)
    rel = _fp16_case(q, k, v, w_band, grad_out, window, causal=True)
    assert all(r <= FP16_TOLERANCE for r in rel.values()), rel  # NaN (non-finite output) fails too


@triton.jit
def _offsets_kernel(p_out, W, T, S, t0, k0, BLOCK_T: tl.constexpr):
    """Writes the band offsets the AFT-local kernels form for one tile (no band buffer is touched)."""
    o_a, m_a = triton_aft_local.band_offsets(W, T, S, t0, k0, BLOCK_T)
    o = tl.arange(0, BLOCK_T)
    tl.store(p_out + o[:, None] * BLOCK_T + o[None, :], tl.where(m_a, o_a, -1))


@pytest.mark.parametrize("window", [8193, 65536], ids=["s8193-first-overflow", "s65536"])
def test_band_offsets_past_int32_at_T_128K(window):
    """At T = 131072 and s >= 8193, `T·(2s − 1) >= 2³¹`: the last rows' offsets into the `[T, 2s − 1]` band must
    be formed in 64 bits (computed by the kernels' own helper, without allocating the 4-16 GiB band)."""
    T, block = 131072, 16
    W = 2 * window - 1
    assert T * W >= 2**31
    t0 = T - block
    k0 = t0 - window + 1  # the tile of keys at the band's left edge
    out = torch.empty(block, block, dtype=torch.int64, device=DEVICE)
    _offsets_kernel[(1,)](out, W, T, window, t0, k0, BLOCK_T=block)
    rows = torch.arange(t0, t0 + block, dtype=torch.int64)[:, None]
    cols = torch.arange(k0, k0 + block, dtype=torch.int64)[None, :] - rows + window - 1
    want = torch.where((cols >= 0) & (cols < W), rows * W + cols, torch.tensor(-1, dtype=torch.int64))
    assert (want.max() >= 2**31).item()
    assert torch.equal(out.cpu(), want)
