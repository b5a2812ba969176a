"""TSSA Triton kernels against the float64 reference, forward and backward, on shapes that span several tiles.

On a CPU these run under TRITON_INTERPRET=1 (tests/conftest.py sets it), so the shapes stay tiny. Every output
and every scratch buffer a kernel must fully write starts as NaN (`triton_common.POISON`), so an element no
program wrote fails the comparison instead of passing with whatever memory held; `test_poison_catches_*` prove
that it does.
"""

from __future__ import annotations

import os

import pytest
import torch

from attnbench.measure import numerics
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import torch_dtype

triton = pytest.importorskip("triton")

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)

from attnbench.mechanisms import triton_common  # noqa: E402
from attnbench.mechanisms.tssa import reference, triton_tssa, triton_tssa_causal  # noqa: E402

MECH = registry.get("tssa")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(triton_common, "POISON", True)


def _run(w, temp, beta, causal: bool, block_t: int | None) -> torch.Tensor:
    if causal:
        return triton_tssa_causal.tssa_causal(w, temp, beta, block_t=block_t)
    return triton_tssa.tssa(w, temp, block_t=block_t)


def _compare(kwargs: dict, dtype: str, block_t: int | None, seed: int, device: str = DEVICE) -> None:
    """Kernel in `dtype` against the reference in float64 on the same values: output and every gradient."""
    problem = MECH.problem(**kwargs)
    tensors = numerics.make_inputs(MECH, problem, dtype, device, seed, requires_grad=True)
    exact = {name: t.detach().double().requires_grad_() for name, t in tensors.items()}
    out = _run(tensors["w"], tensors["temp"], tensors.get("beta"), problem.causal, block_t)
    assert out.dtype == torch_dtype(dtype) and out.shape == tensors["w"].shape
    expected = reference.tssa(exact["w"], exact["temp"], exact.get("beta"), causal=problem.causal)
    grad_out = numerics.output_grad(out, seed)
    grads = torch.autograd.grad(out, list(tensors.values()), grad_out)
    expected_grads = torch.autograd.grad(expected, list(exact.values()), grad_out.double())
    tolerance = MECH.tolerance(dtype)
    pairs = [("out", out, expected)]
    pairs += [(f"d{name}", g, e) for name, g, e in zip(tensors, grads, expected_grads, strict=True)]
    for name, actual, wanted in pairs:
        assert actual.dtype == torch_dtype(dtype), name
        rel, _ = numerics.errors(actual, wanted)
        assert rel <= tolerance, f"{problem.describe()} {dtype} block_t={block_t}: {name} rel err {rel:.2e}"


NONCAUSAL = [
    pytest.param(dict(B=2, T=37, H=3, d=12), 8, id="B2-T37-H3-d12-5tiles"),
    pytest.param(dict(B=1, T=29, H=2, d=24), 16, id="B1-T29-H2-d24-2tiles"),
    pytest.param(dict(B=1, T=1, H=3, d=24), None, id="B1-T1"),
]
CAUSAL = [
    pytest.param(dict(B=2, T=37, H=3, d=12), 8, id="B2-T37-H3-d12-5tiles"),
    pytest.param(dict(B=1, T=21, H=3, d=24, t_max=30), 8, id="B1-T21-d24-t_max30"),
    pytest.param(dict(B=2, T=1, H=3, d=12), None, id="B2-T1"),
]


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize(("kwargs", "block_t"), NONCAUSAL)
def test_noncausal_matches_reference(kwargs, block_t, dtype, seed):
    _compare({**kwargs, "causal": False}, dtype, block_t, seed)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
@pytest.mark.parametrize(("kwargs", "block_t"), CAUSAL)
def test_causal_matches_reference(kwargs, block_t, dtype, seed):
    _compare({**kwargs, "causal": True}, dtype, block_t, seed)


def test_causal_first_token_with_small_values_keeps_fp32_accuracy(seed):
    """At the first token ŵ² = w²/w² whatever w is, so nothing flows back through its prefix sum; summed as
    `∂s/den` plus the suffix sum of `∂C`, two terms of size `∂s/w²` cancel and leave fp32's rounding of them,
    which grows as w shrinks. First tokens 1000 times smaller than the rest (the rest at least 0.5 in size, so
    that no legitimately huge gradient of a near-zero later token sets the scale), six batch rows: dw there within
    1e-5 of dw's RMS (2e-7 to 1e-6 over 13 seeds; summed apart as the fp32 reference sums it, 3e-5 to 2e-4)."""
    problem = MECH.problem(B=6, T=21, H=3, d=12, causal=True)
    tensors = numerics.make_inputs(MECH, problem, "fp32", DEVICE, seed, requires_grad=False)
    w = tensors["w"].sign() * (0.5 + tensors["w"].abs())
    w[:, 0] *= 1e-3
    w.requires_grad_()
    exact = w.detach().double().requires_grad_()
    out = triton_tssa_causal.tssa_causal(w, tensors["temp"], tensors["beta"], block_t=8)
    grad_out = numerics.output_grad(out, seed)
    (dw,) = torch.autograd.grad(out, [w], grad_out)
    expected = reference.tssa(exact, tensors["temp"].double(), tensors["beta"].double(), causal=True)
    (truth,) = torch.autograd.grad(expected, [exact], grad_out.double())
    first = numerics.rms((dw.double() - truth)[:, 0]) / numerics.rms(truth)
    assert first < 1e-5, f"dw at the first token: RMS error {first:.2e} of dw's RMS"


def test_reduction_programs_loop_over_several_tiles(monkeypatch, seed):
    """With few target programs each reduction program sums several tiles, the last ones past T."""
    monkeypatch.setattr(triton_tssa, "TARGET_PROGRAMS", 12)
    assert triton_tssa.tiles_per_program(5, 6) == 2
    _compare(dict(B=2, T=37, H=3, d=12), "fp32", 8, seed)


def test_half_inputs_do_not_overflow(seed):
    """|w| ≈ 300 squares past fp16's 65504: the kernels must sum w² in fp32, as the reference does."""
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    w = (300 * torch.randn(1, 20, 2, 12, device=DEVICE, generator=gen)).half()
    temp, beta = (
        torch.ones(2, device=DEVICE, dtype=torch.float16),
        torch.zeros(2, 20, device=DEVICE, dtype=torch.float16),
    )
    for causal in (False, True):
        out = _run(w, temp, beta, causal, 8)
        expected = reference.tssa(w.double(), temp.double(), beta.double(), causal=causal)
        assert numerics.errors(out, expected)[0] <= MECH.tolerance("fp16")


def test_noncontiguous_inputs(seed):
    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    w = torch.randn(2, 3, 11, 12, device=DEVICE, generator=gen).transpose(1, 2)  # (B, T, H, d), strided
    temp = 1 + 0.1 * torch.randn(3, device=DEVICE, generator=gen)
    beta = (0.1 * torch.randn(11, 3, device=DEVICE, generator=gen)).T  # (H, t_max), strided
    for causal in (False, True):
        out = _run(w, temp, beta, causal, 8)
        expected = reference.tssa(w.double(), temp.double(), beta.double(), causal=causal)
        assert numerics.errors(out, expected)[0] <= MECH.tolerance("fp32")


def test_causal_rejects_a_short_beta():
    w, temp = torch.randn(1, 9, 2, 4, device=DEVICE), torch.ones(2, device=DEVICE)
    with pytest.raises(ValueError, match="beta"):
        triton_tssa_causal.tssa_causal(w, temp, torch.zeros(2, 8, device=DEVICE))


def test_registered_impl_dispatches_on_causal(seed):
    impl = MECH.impl("triton").load()
    for causal in (False, True):
        problem = MECH.problem(B=1, T=9, H=2, d=6, causal=causal)
        tensors = numerics.make_inputs(MECH, problem, "fp32", DEVICE, seed, requires_grad=False)
        assert numerics.errors(impl(problem, tensors), MECH.reference(problem, tensors))[0] <= 1e-5


class _DropLastTile:
    """A kernel launched on its grid less the last token tile: the elements of that tile are never written."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        return self.kernel[(grid[0] - 1, *grid[1:])]


def test_poison_catches_an_unwritten_output(monkeypatch):
    monkeypatch.setattr(triton_tssa, "_output_kernel", _DropLastTile(triton_tssa._output_kernel))
    out = triton_tssa.tssa(torch.randn(1, 20, 2, 4, device=DEVICE), torch.ones(2, device=DEVICE), block_t=8)
    assert out[:, 16:].isnan().all() and not out[:, :16].isnan().any()


def test_poison_catches_an_unwritten_gradient(monkeypatch):
    monkeypatch.setattr(triton_tssa_causal, "_dw_kernel", _DropLastTile(triton_tssa_causal._dw_kernel))
    w = torch.randn(1, 20, 2, 4, device=DEVICE, requires_grad=True)
    out = triton_tssa_causal.tssa_causal(w, torch.ones(2, device=DEVICE), torch.zeros(2, 20, device=DEVICE), block_t=8)
    (dw,) = torch.autograd.grad(out, w, torch.ones_like(out))
    assert dw[:, 16:].isnan().all() and not dw[:, :16].isnan().any()


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    ("kwargs", "block_t"),
    [
        (dict(B=2, T=37, H=3, d=12), 8),
        (dict(B=1, T=1000, H=4, d=24), None),
        (dict(B=2, T=4099, H=16, d=128), None),
    ],
)
def test_bf16_on_gpu(kwargs, block_t, causal, seed):
    _compare({**kwargs, "causal": causal}, "bf16", block_t, seed, device="cuda")
