"""AFT Triton kernels (`attnbench/mechanisms/aft/triton_aft.py`, `triton_aft_local.py`, both on the chunked scan
of `triton_aft_scan.py`) against the float64 reference, forward and backward (q, k, v and the local variant's
learned band bias).

On a CPU these run under TRITON_INTERPRET=1 (tests/conftest.py sets it), where tiles are 16 tokens × 16 channels
and tl.dot is exact in fp32. Shapes are small and awkward (odd T, d = 10, H = 3, B = 1 and 2, T = 1) and
`tiles_per_chunk` is forced small so that T = 37 or 70 spans several chunks: the chunk carries of the causal
scan, the reverse sums of its backward and the band reaching across tile and chunk edges are all exercised
(causal AFT-simple chains one program per tile, so there T = 37 is three tiles whatever the chunking).
Every buffer the kernels fill starts as NaN (`test_poison_*`), so an unwritten element fails the comparison. A
K drifting by ±3 a token checks the running-max rescaling far beyond fp32's exponent range.

Tolerances are the registry's per-dtype relative L2 errors against float64: fp32 1e-4 (the kernels keep every
sum in fp32; measured ~2e-7), fp16 4e-3 (inputs, outputs and gradients rounded to 11 bits, ≈5e-4 roundoff;
measured ~5e-4), bf16 3e-2 (8 bits, ≈4e-3 roundoff).
"""

from __future__ import annotations

import os

import pytest
import torch

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.aft import reference as ref
from attnbench.mechanisms.problem import Mode

triton = pytest.importorskip("triton")

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)

from attnbench.mechanisms import triton_common  # noqa: E402
from attnbench.mechanisms.aft import triton_aft, triton_aft_local, triton_aft_scan  # noqa: E402

AFT = registry.get("aft")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOLERANCE = registry.DEFAULT_TOLERANCES


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Every output and scratch buffer the kernels must fill starts as NaN."""
    monkeypatch.setattr(triton_common, "POISON", True)


def _inputs(B, T, H, d, dtype, seed, window=None):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    tensors = [torch.randn(B, T, H, d, device=DEVICE, generator=gen).to(dtype) for _ in range(3)]
    if window is not None:  # t_max = T + 3 > T: the kernel must use the first T rows only
        tensors.append((0.1 * torch.randn(T + 3, 2 * window - 1, device=DEVICE, generator=gen)).to(dtype))
    return tensors


def _run(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad_out.to(out.dtype))]


def _compare(inputs, causal, window, tiles_per_chunk, dtype_name, seed):
    """Kernel in the inputs' dtype against the reference in float64 on the same values: output and gradients."""
    grad_out = torch.randn(inputs[0].shape, device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(seed + 1))
    if window is None:
        names = ("out", "dq", "dk", "dv")
        got = _run(lambda *t: triton_aft.simple(*t, causal=causal, tiles_per_chunk=tiles_per_chunk), inputs, grad_out)
        want = _run(lambda *t: ref.simple(*t, causal=causal), [t.double() for t in inputs], grad_out.double())
    else:
        names = ("out", "dq", "dk", "dv", "dw_band")
        kernel = triton_aft_local.local
        got = _run(lambda *t: kernel(*t, window, causal, tiles_per_chunk=tiles_per_chunk), inputs, grad_out)
        want = _run(
            lambda *t: ref.local(*t, window=window, causal=causal), [t.double() for t in inputs], grad_out.double()
        )
    T = inputs[0].shape[1]
    for name, g, w in zip(names, got, want, strict=True):
        assert g.dtype == inputs[0].dtype and g.shape == w.shape, name
        assert torch.isfinite(g).all(), f"{name}: not finite (an unwritten buffer element?)"
        if T == 1 and name in ("dk", "dw_band"):
            # One token: Y = σ(Q)·V whatever K and w, so these gradients are exactly 0 (the reference's are roundoff).
            assert w.abs().max().item() < 1e-12 and not g.any(), name
            continue
        rel, _ = numerics.errors(g, w)
        assert rel <= TOLERANCE[dtype_name], f"{name}: relative error {rel:.2e} in {dtype_name}"


SIMPLE = [  # B, T, H, d, tiles per chunk, dtypes
    pytest.param(2, 37, 3, 10, 1, ("fp32", "fp16"), id="T37-3chunks"),
    pytest.param(1, 70, 2, 5, 2, ("fp32",), id="T70-3chunks-last-partial"),
    pytest.param(2, 17, 3, 10, None, ("fp16",), id="T17-default-chunking"),
    pytest.param(2, 1, 3, 10, None, ("fp32", "fp16"), id="T1"),
]


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize(("B", "T", "H", "d", "chunk", "dtypes"), SIMPLE)
def test_simple_matches_float64_reference(B, T, H, d, chunk, dtypes, causal, seed):
    for dtype_name in dtypes:
        _compare(_inputs(B, T, H, d, DTYPES[dtype_name], seed), causal, None, chunk, dtype_name, seed)


LOCAL = [  # B, T, H, d, window, tiles per chunk, dtypes
    pytest.param(2, 37, 3, 6, 5, 1, ("fp32", "fp16"), id="T37-s5-3chunks"),
    pytest.param(1, 70, 1, 10, 20, 2, ("fp32",), id="T70-s20-band-wider-than-a-tile"),
    pytest.param(1, 17, 3, 2, 17, None, ("fp16",), id="T17-s17-window-is-T"),
    pytest.param(2, 1, 2, 3, 1, None, ("fp32", "fp16"), id="T1-s1"),
    # One row tile: the band gradient's (row tile, key tile) pairs alone would not fill the (stand-in) GPU, so its
    # batch rows run in groups whose partial sums are added afterwards.
    pytest.param(3, 9, 2, 4, 3, None, ("fp32", "fp16"), id="T9-B3-band-gradient-in-batch-groups"),
]


@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize(("B", "T", "H", "d", "window", "chunk", "dtypes"), LOCAL)
def test_local_matches_float64_reference(B, T, H, d, window, chunk, dtypes, causal, seed):
    for dtype_name in dtypes:
        inputs = _inputs(B, T, H, d, DTYPES[dtype_name], seed, window=window)
        _compare(inputs, causal, window, chunk, dtype_name, seed)


@pytest.mark.parametrize("trend", [3.0, -3.0], ids=["rising", "falling"])
@pytest.mark.parametrize("window", [None, 5], ids=["simple", "local"])
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_running_max_spans_hundreds(trend, window, causal, seed):
    """K drifts by ±3 a token (±210 over T = 70, past fp32's e^±88): each tile and chunk rescales its carry by
    factors that underflow to 0 (rising) or keeps a carry that dwarfs every later tile (falling)."""
    q, k, v, *w = _inputs(1, 70, 1, 4, torch.float32, seed, window=window)
    k = k + trend * torch.arange(70, device=DEVICE, dtype=k.dtype)[None, :, None, None]
    _compare([q, k, v, *w], causal, window, 1, "fp32", seed)


def test_poison_catches_an_unwritten_chunk(monkeypatch, seed):
    """The poisoning is not vacuous: with the last chunk's programs dropped, its tokens come out NaN (causal: the
    earlier chunks' carries do not read it; non-causal, the NaN would reach every token through the total)."""
    monkeypatch.setattr(
        triton_aft_scan.Layout,
        "grid",
        lambda self, meta: (triton.cdiv(self.C, meta["BLOCK_C"]), self.nchunk - 1, self.B),
    )
    q, k, v = _inputs(1, 37, 1, 4, torch.float32, seed)
    out = triton_aft.simple(q, k, v, causal=True, tiles_per_chunk=1)
    assert torch.isnan(out[:, 32:]).all() and torch.isfinite(out[:, :32]).all()


def test_window_beyond_T_is_rejected_by_the_spec():
    with pytest.raises(ValueError, match="window=6 must be <= T=5"):
        AFT.problem(B=1, T=5, H=1, d=2, variant="local", window=6)


@pytest.mark.parametrize(
    ("kwargs", "form"),
    [(dict(variant="full"), "cuBLAS"), (dict(variant="conv", window=3), "conv2d")],
    ids=["full", "conv"],
)
def test_full_and_conv_are_unsupported(kwargs, form):
    """No Triton kernel for full (a matmul) or conv (a conv2d): declared, and raised if called anyway."""
    impl = AFT.impl("triton")
    problem = AFT.problem(B=1, T=9, H=2, d=3, **kwargs)
    assert form in impl.unsupported_reason(problem, Mode.FWD_BWD, "fp32")
    tensors = numerics.make_inputs(AFT, problem, "fp32", DEVICE, seed=0, requires_grad=False)
    with pytest.raises(registry.Unsupported, match=form):
        impl.load()(problem, tensors)
    local = AFT.problem(B=1, T=9, H=2, d=3, variant="local", window=3)
    assert impl.unsupported_reason(local, Mode.FWD_BWD, "fp32") is None


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
@pytest.mark.parametrize(
    ("B", "T", "H", "d", "window"),
    [(2, 1000, 4, 64, None), (1, 4097, 2, 48, None), (2, 1000, 4, 64, 33), (1, 4097, 2, 48, 7)],
)
def test_bf16_on_gpu(B, T, H, d, window, causal, seed):
    """Default tiles and chunking (several chunks at B = 1) on longer sequences, in bf16."""
    _compare(_inputs(B, T, H, d, torch.bfloat16, seed, window=window), causal, window, None, "bf16", seed)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True], ids=["noncausal", "causal"])
def test_local_backward_is_the_same_run_to_run_on_gpu(causal, seed):
    """The band gradient is summed inside its programs (no atomics), so two backwards from one forward give the
    same bits: gradients of q, k, v and the learned band, at a window spanning several key tiles."""
    inputs = [t.requires_grad_() for t in _inputs(2, 4097, 2, 48, torch.bfloat16, seed, window=100)]
    out = triton_aft_local.local(*inputs, 100, causal)
    grad_out = torch.randn_like(out)
    first = torch.autograd.grad(out, inputs, grad_out, retain_graph=True)
    again = torch.autograd.grad(out, inputs, grad_out)
    for name, a, b in zip(("dq", "dk", "dv", "dw_band"), first, again, strict=True):
        assert torch.equal(a, b), name
