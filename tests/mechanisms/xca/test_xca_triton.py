"""The XCA Triton kernels (`attnbench/mechanisms/xca/triton_xca.py`, `triton_xca_kernels.py`) against the float64
reference.

On a CPU these run under TRITON_INTERPRET=1 (set by conftest), where tl.dot is exact in fp32. Shapes are small
and awkward: odd T, d = 12, 24, 40 (padded to 16, 32, 64), H = 3, and chunks of 16 or 32 tokens so that one
head's token reduction is split over several programs.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from attnbench.measure import numerics
from attnbench.mechanisms import registry, triton_common
from attnbench.mechanisms.xca.reference import xca as reference

HAS_CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None or not (HAS_CUDA or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="needs triton and a GPU or TRITON_INTERPRET=1",
)
DEVICE = "cuda" if HAS_CUDA else "cpu"
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
TOLERANCE = registry.DEFAULT_TOLERANCES


def _kernel():
    from attnbench.mechanisms.xca import triton_xca

    return triton_xca


def _inputs(B, T, H, d, dtype, seed):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    q, k, v = (torch.randn(B, T, H, d, device=DEVICE, generator=gen).to(dtype) for _ in range(3))
    tau = (1 + 0.1 * torch.randn(H, device=DEVICE, generator=gen)).to(dtype)
    return q, k, v, tau


def _run(fn, inputs, grad_out):
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad_out.to(out.dtype))]


def _compare(inputs, tokens_per_chunk, dtype_name, seed):
    """Kernel in the inputs' dtype against the reference in float64 on the same values, forward and backward."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed + 1)
    grad_out = torch.randn(inputs[0].shape, device=DEVICE, generator=gen)
    got = _run(lambda *t: _kernel().xca(*t, tokens_per_chunk=tokens_per_chunk), inputs, grad_out)
    want = _run(reference, [t.double() for t in inputs], grad_out.double())
    T = inputs[0].shape[1]
    for name, g, w in zip(("out", "dq", "dk", "dv", "dtau"), got, want, strict=True):
        assert g.dtype == inputs[0].dtype and g.shape == w.shape, name
        if T == 1 and name in ("dq", "dk"):
            # One token: q̂ = sign(q) is locally constant, so the exact gradient is 0 and only roundoff remains,
            # of the two cancelling terms of size |∂L/∂q̂|/|q|: scaled by |q| (by |k| for dk) it is a few eps
            # (at most 2 over 40 seeds, unscaled up to 622 where an element of q is near 0).
            x = inputs[0] if name == "dq" else inputs[1]
            assert (g.abs().float() * x.abs().float()).max().item() < 100 * torch.finfo(g.dtype).eps, name
            continue
        rel, _ = numerics.errors(g, w)
        assert rel <= TOLERANCE[dtype_name], f"{name}: relative error {rel:.2e} in {dtype_name}"


SHAPES = [  # B, T, H, d, tokens per chunk
    pytest.param(2, 37, 3, 24, 16, id="T37-d24-3chunks"),
    pytest.param(1, 70, 3, 40, 32, id="T70-d40-3chunks-of-2blocks"),
    pytest.param(1, 45, 3, 12, None, id="T45-d12-default-chunking"),
    pytest.param(2, 1, 3, 12, 16, id="T1"),
]


@pytest.mark.parametrize("dtype_name", ["fp32", "fp16"])
@pytest.mark.parametrize(("B", "T", "H", "d", "chunk"), SHAPES)
def test_matches_float64_reference(B, T, H, d, chunk, dtype_name, seed):
    _compare(_inputs(B, T, H, d, DTYPES[dtype_name], seed), chunk, dtype_name, seed)


def test_every_buffer_is_written(monkeypatch, seed):
    """Every buffer the kernels write starts as NaN: a single unwritten element that is read or returned
    would show up as a NaN in the output or a gradient."""
    monkeypatch.setattr(triton_common, "POISON", True)
    inputs = _inputs(2, 37, 3, 12, torch.float32, seed)
    _compare(inputs, 16, "fp32", seed)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_poison_catches_an_unwritten_block(monkeypatch, seed):
    """The poisoning above is not vacuous: with one program too few per pass (programs are numbered head-major,
    so the last head loses its last chunk) the last head's output is NaN and the others are untouched."""
    kernel = _kernel()
    monkeypatch.setattr(triton_common, "POISON", True)
    monkeypatch.setattr(kernel, "_grid", lambda heads, chunks: (heads * chunks - 1,))
    out = kernel.xca(*_inputs(1, 37, 3, 12, torch.float32, seed), tokens_per_chunk=16)
    assert torch.isnan(out[:, :, -1]).all() and torch.isfinite(out[:, :, :-1]).all()


def test_zero_channel_takes_the_clamped_gradient(seed):
    """A channel of q (or k) that is zero over all tokens is divided by eps = 1e-12, not by its norm, and its
    gradient has no projection term: the reference's clamp, reproduced."""
    q, k, v, tau = _inputs(1, 20, 2, 12, torch.float32, seed)
    q[:, :, 1, 3] = 0.0
    k[:, :, 0, 5] = 0.0
    _compare((q, k, v, tau), 16, "fp32", seed)


def test_strided_views_of_a_fused_projection(seed):
    """Layer-level inputs are views of one `[B,T,3,H,d]` tensor (token stride 3·H·d): no copy is needed."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    qkv = torch.randn(2, 29, 3, 3, 12, device=DEVICE, generator=gen)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    assert not q.is_contiguous()
    tau = torch.full((3,), 0.9, device=DEVICE)
    _compare((q, k, v, tau), 16, "fp32", seed)


def test_repeated_runs_are_bitwise_equal(seed):
    """Chunk partials are added in a fixed order by the reduce kernels (no atomics)."""
    inputs = _inputs(1, 50, 3, 12, torch.float32, seed)
    first = _run(lambda *t: _kernel().xca(*t, tokens_per_chunk=16), inputs, torch.ones(1, 50, 3, 12, device=DEVICE))
    again = _run(lambda *t: _kernel().xca(*t, tokens_per_chunk=16), inputs, torch.ones(1, 50, 3, 12, device=DEVICE))
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)


def test_head_dim_beyond_the_register_tile_is_unsupported():
    q = torch.zeros(1, 2, 1, 129, device=DEVICE)
    with pytest.raises(registry.Unsupported, match="d=129"):
        _kernel().xca(q, q, q, torch.ones(1, device=DEVICE))


@pytest.mark.gpu
@pytest.mark.parametrize(("B", "T", "H", "d"), [(2, 1000, 4, 64), (1, 4097, 2, 48), (1, 65536, 2, 128)])
def test_bf16_on_gpu(B, T, H, d, seed):
    """Default chunking (about four programs per SM) on long sequences with few heads, in bf16."""
    _compare(_inputs(B, T, H, d, torch.bfloat16, seed), None, "bf16", seed)
