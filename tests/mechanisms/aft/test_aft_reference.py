"""AFT's reference: every variant against a naive loop written from the formula (values and gradients), the
equivalences between the variants and forms, the blocked paths, and overflow of `exp(K + w)`."""

from __future__ import annotations

import math

import pytest
import torch
from float64_checks import assert_close_with_grads

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.aft import reference as ref
from attnbench.mechanisms.aft.spec import VARIANTS

AFT = registry.get("aft")
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _qkv(B, T, H, d, seed, key_width=None, dtype=F64):
    gen = _gen(seed)
    q, v = (torch.randn(B, T, H, d, generator=gen, dtype=dtype) for _ in range(2))
    k = torch.randn(B, T, H, key_width or d, generator=gen, dtype=dtype)
    return q, k, v


def naive(q, k, v, bias, causal: bool) -> torch.Tensor:
    """The formula as loops over batch, token, head, channel and key: `bias(t, t2, h)` is w_{t,t2} of head h
    (a scalar tensor, or 0.0 where there is no bias); `k [B,T,H,d]` or `[B,T,H,1]` (one key channel per head)."""
    B, T, H, d = q.shape
    out = []
    for b in range(B):
        for t in range(T):
            for h in range(H):
                for c in range(d):
                    num = den = 0.0
                    for t2 in range(t + 1 if causal else T):
                        weight = torch.exp(k[b, t2, h, c if k.shape[-1] > 1 else 0] + bias(t, t2, h))
                        num = num + weight * v[b, t2, h, c]
                        den = den + weight
                    out.append(torch.sigmoid(q[b, t, h, c]) * num / den)
    return torch.stack(out).view(B, T, H, d)


def full_bias(w):
    return lambda t, t2, h: w[t, t2]


def no_bias(t, t2, h):
    return 0.0


def band_bias(w_band, s):
    return lambda t, t2, h: w_band[t, t2 - t + s - 1] if abs(t2 - t) < s else 0.0


def conv_bias(w_conv, side):
    s = w_conv.shape[-1]

    def bias(t, t2, h):
        (row, col), (row2, col2) = divmod(t, side), divmod(t2, side)
        di, dj = row2 - row + s // 2, col2 - col + s // 2
        return w_conv[h, di, dj] if 0 <= di < s and 0 <= dj < s else 0.0

    return bias


def band_matrix(w_band, T, s):
    """The dense T×T bias of a band: w_band inside |t − t'| < s, 0 outside."""
    dense = torch.zeros(T, T, dtype=w_band.dtype)
    for t in range(T):
        for t2 in range(max(0, t - s + 1), min(T, t + s)):
            dense[t, t2] = w_band[t, t2 - t + s - 1]
    return dense


def _bias_tensor(shape, seed, std=0.3):
    # Larger than the benchmark's 0.1 so that a bias bug moves the output well past the tolerance.
    return (std * torch.randn(*shape, generator=_gen(seed), dtype=F64)).requires_grad_(True)


def _assert_close_with_grads(actual_fn, expected_fn, inputs):
    """`actual_fn(*inputs)` and `expected_fn(*inputs)` agree in value and in the gradient of every input (the shared
    float64 check, with the inputs named q, k, v and w in that order)."""
    tensors = dict(zip(("q", "k", "v", "w"), inputs, strict=False))
    assert_close_with_grads(lambda t: actual_fn(*t.values()), lambda t: expected_fn(*t.values()), tensors, seed=99)


# Tiny shapes for the loops: B=1 and 2, odd T, T=1, d not a power of two.
SHAPES = [(2, 5, 2, 3), (1, 7, 1, 5), (1, 1, 2, 3), (2, 4, 3, 1)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_simple_matches_naive_loop(shape, causal):
    B, T, H, d = shape
    inputs = [t.requires_grad_(True) for t in _qkv(B, T, H, d, seed=1)]
    _assert_close_with_grads(
        lambda q, k, v: ref.simple(q, k, v, causal=causal), lambda q, k, v: naive(q, k, v, no_bias, causal), inputs
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_full_matmul_form_equals_double_loop(shape, causal):
    B, T, H, d = shape
    q, k, v = (t.requires_grad_(True) for t in _qkv(B, T, H, d, seed=2))
    w = _bias_tensor((T + 2, T + 2), seed=3)  # t_max > T: only the top-left T×T is used
    _assert_close_with_grads(
        lambda q, k, v, w: ref.full(q, k, v, w, causal=causal),
        lambda q, k, v, w: naive(q, k, v, full_bias(w), causal),
        [q, k, v, w],
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("shape", "window"), [((2, 5, 2, 3), 2), ((1, 7, 1, 5), 3), ((1, 1, 2, 3), 1), ((2, 4, 3, 1), 4)]
)
def test_local_matches_naive_loop(shape, window, causal):
    B, T, H, d = shape
    q, k, v = (t.requires_grad_(True) for t in _qkv(B, T, H, d, seed=4))
    w_band = _bias_tensor((T + 1, 2 * window - 1), seed=5)
    _assert_close_with_grads(
        lambda q, k, v, w: ref.local(q, k, v, w, window=window, causal=causal),
        lambda q, k, v, w: naive(q, k, v, band_bias(w, window), causal),
        [q, k, v, w_band],
    )


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias_mean", [-20.0, -40.0])
def test_local_is_exact_for_very_negative_biases(bias_mean, causal):
    """A learned band bias far below 0 makes the band's keys count e^w ≈ 2e-9 (mean −20) or 4e-18 (−40) times
    less than the keys outside it. Rows whose keys all lie in the band (the first rows, and every row of a short
    sequence) depend on the band alone; the others on everything outside it. A form that subtracts the band from
    a global sum loses every digit there (1e-7 relative error at −20, NaN at −40); the reference must match the
    naive loop to float64 rounding, gradients included."""
    B, T, H, d, s = 2, 11, 2, 2, 4
    q, k, v = (t.requires_grad_(True) for t in _qkv(B, T, H, d, seed=16))
    w_band = (_bias_tensor((T, 2 * s - 1), seed=17, std=1.0).detach() + bias_mean).requires_grad_(True)
    _assert_close_with_grads(
        lambda q, k, v, w: ref.local(q, k, v, w, window=s, causal=causal),
        lambda q, k, v, w: naive(q, k, v, band_bias(w, s), causal),
        [q, k, v, w_band],
    )


@pytest.mark.parametrize(
    ("shape", "window"), [((2, 9, 2, 2), 3), ((1, 16, 1, 3), 5), ((1, 1, 2, 3), 1), ((1, 4, 2, 1), 3)]
)
def test_conv_equals_direct_2d_loop(shape, window):
    B, T, H, d = shape
    q, k, v = (t.requires_grad_(True) for t in _qkv(B, T, H, d, seed=6, key_width=1))
    w_conv = _bias_tensor((H, window, window), seed=7)
    side = math.isqrt(T)
    _assert_close_with_grads(
        lambda q, k, v, w: ref.conv(q, k, v, w),
        lambda q, k, v, w: naive(q, k, v, conv_bias(w, side), causal=False),
        [q, k, v, w_conv],
    )


@pytest.mark.parametrize("causal", [False, True])
def test_local_band_form_equals_the_direct_formula(causal):
    """The three-part form (prefix sums before the band, the band, suffix sums after it) equals the direct
    formula with the band written out as a dense T×T bias, 0 outside the band."""
    B, T, H, d, s = 2, 23, 2, 3, 4
    q, k, v = (t.requires_grad_(True) for t in _qkv(B, T, H, d, seed=8))
    w_band = _bias_tensor((T, 2 * s - 1), seed=9)
    _assert_close_with_grads(
        lambda q, k, v, w: ref.local(q, k, v, w, window=s, causal=causal),
        lambda q, k, v, w: ref.full(q, k, v, band_matrix(w, T, s), causal=causal),
        [q, k, v, w_band],
    )


@pytest.mark.parametrize("causal", [False, True])
def test_full_with_zero_bias_equals_simple(causal):
    q, k, v = (t.requires_grad_(True) for t in _qkv(2, 19, 3, 4, seed=10))
    zero = torch.zeros(19, 19, dtype=F64)
    _assert_close_with_grads(
        lambda q, k, v: ref.full(q, k, v, zero, causal=causal),
        lambda q, k, v: ref.simple(q, k, v, causal=causal),
        [q, k, v],
    )


def test_causal_simple_cumsum_equals_causal_full_with_zero_bias_across_chunks():
    """Causal simple runs as chunked cumulative sums; with chunks of 4 tokens over T=150 the carries between
    chunks matter, and K jumps by 60 between chunks so that each chunk's stabiliser differs."""
    B, T, H, d = 2, 150, 2, 3
    q, k, v = _qkv(B, T, H, d, seed=11)
    k = k + 60.0 * (torch.arange(T, dtype=F64) // 4 % 3)[None, :, None, None]
    q, k, v = (t.requires_grad_(True) for t in (q, k, v))
    zero = torch.zeros(T, T, dtype=F64)
    _assert_close_with_grads(
        lambda q, k, v: ref.simple(q, k, v, causal=True, chunk=4),
        lambda q, k, v: ref.full(q, k, v, zero, causal=True),
        [q, k, v],
    )


def test_causal_scan_rescales_carries_across_a_jump_of_k_in_fp32():
    """K rises by 100 halfway through: in fp32 the earlier chunks' sums, rescaled to the new maximum, would
    underflow to 0 and their ratio to NaN; the carry is rescaled in float64 and the result matches float64."""
    B, T, H, d = 1, 40, 2, 3
    q, k, v = _qkv(B, T, H, d, seed=15, dtype=torch.float32)
    k = k + 100.0 * (torch.arange(T) >= T // 2)[None, :, None, None]
    out = ref.simple(q, k, v, causal=True, chunk=4)
    expected = ref.simple(q.double(), k.double(), v.double(), causal=True, chunk=4)
    assert numerics.errors(out, expected)[0] < 1e-6


@pytest.mark.parametrize("variant", ["full", "local"])
def test_blocked_rows_equal_one_block(variant, monkeypatch):
    """Query-row blocks (checkpointed under autograd) give what one block gives, gradients included."""
    B, T, H, d, s = 2, 21, 2, 3, 3
    inputs = [*_qkv(B, T, H, d, seed=12), _bias_tensor((T, T) if variant == "full" else (T, 2 * s - 1), seed=13)]

    def run_with_grads():
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        q, k, v, w = leaves
        out = ref.full(q, k, v, w, causal=True) if variant == "full" else ref.local(q, k, v, w, window=s, causal=True)
        grad = torch.randn(out.shape, generator=_gen(1), dtype=F64)
        return [out, *torch.autograd.grad(out, leaves, grad)]

    expected = run_with_grads()
    monkeypatch.setattr(ref, "FULL_BUDGET", 4 * T)  # 4 rows a block
    monkeypatch.setattr(ref, "BAND_BUDGET", 5 * B * H * d * s)  # 5 rows a block
    for got, want in zip(run_with_grads(), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _overflow_inputs(variant: str, causal: bool, offset: float, dtype=torch.float32):
    problem = AFT.problem(B=2, T=36, H=2, d=3, causal=causal, variant=variant, window=3)
    tensors = numerics.make_inputs(AFT, problem, "fp32", "cpu", seed=5, requires_grad=False)
    tensors["k"] = tensors["k"] * 3.0 + offset
    return problem, {name: t.to(dtype) for name, t in tensors.items()}


@pytest.mark.parametrize("offset", [100.0, -120.0])
@pytest.mark.parametrize(
    ("variant", "causal"), [(v, c) for v in VARIANTS for c in (False, True) if not (v == "conv" and c)]
)
def test_large_keys_stay_finite_in_fp32(variant, causal, offset):
    """K ~ ±100 overflows (or underflows) `exp(K)` in fp32; the stabilised reference stays finite and matches
    float64."""
    problem, tensors = _overflow_inputs(variant, causal, offset)
    out = ref.core(problem, tensors)
    assert torch.isfinite(out).all()
    expected = ref.core(problem, {name: t.double() for name, t in tensors.items()})
    rel, _ = numerics.errors(out, expected)
    assert rel < 1e-5


def test_naive_fp32_overflows_where_the_reference_does_not():
    """The test above bites: without the max subtraction, fp32 AFT-simple is NaN at K ~ 100."""
    _, tensors = _overflow_inputs("simple", False, 100.0)
    q, k, v = (ref.channels(tensors[n], torch.float32) for n in ("q", "k", "v"))
    e = torch.exp(k)
    plain = torch.sigmoid(q) * (e * v).sum(1, keepdim=True) / e.sum(1, keepdim=True)
    assert not torch.isfinite(plain).all()


def test_reference_casts_back_to_the_input_dtype():
    q, k, v = _qkv(1, 9, 2, 4, seed=14, dtype=torch.float16)
    out = ref.simple(q, k, v, causal=True)
    assert out.dtype == torch.float16
    expected = ref.simple(q.double(), k.double(), v.double(), causal=True)
    assert numerics.errors(out, expected)[0] < 2e-3
