"""Causal TSSA's tile-carry scan kernel and the launches of a causal forward and backward.

The carry scan turns per-tile sums into per-tile carries in place; it is checked against `torch.cumsum` on
fresh random sums, forward and reverse, with scan blocks shrunk so that one batch row spans several blocks of
tiles and several programs of features. The launch test counts what a causal forward and backward issue: only
Triton kernels and buffer allocations, no torch operation between them.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

triton = pytest.importorskip("triton")

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)

from triton.runtime.jit import KernelInterface  # noqa: E402

from attnbench.mechanisms import triton_common  # noqa: E402
from attnbench.mechanisms.tssa import reference, triton_tssa_carries, triton_tssa_causal  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Allocations are not launches of work: a buffer the kernels fill (`empty`), or an fp32 atomic accumulator
# (`zeros`, the gradients of temp and beta).
ALLOCATIONS = {"empty", "empty_strided", "zeros", "new_empty"}
# Operations that make views or detach, which launch nothing.
FREE = {"detach", "select", "slice", "view", "alias", "t"}


def _exclusive(x: torch.Tensor, reverse: bool) -> torch.Tensor:
    """Exclusive prefix (suffix if `reverse`) sum along dim 1 in float64: what every earlier (later) tile adds."""
    x = x.double().flip(1) if reverse else x.double()
    carry = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], dim=1).cumsum(dim=1)
    return carry.flip(1) if reverse else carry


@pytest.mark.parametrize("reverse", [False, True], ids=["prefix", "suffix"])
@pytest.mark.parametrize("scan_block", [(2, 4), (4, 16), triton_tssa_carries.SCAN_BLOCK])
@pytest.mark.parametrize("n_tiles", [1, 7])
def test_carry_scan_matches_cumsum(monkeypatch, reverse, scan_block, n_tiles, seed):
    monkeypatch.setattr(triton_tssa_carries, "SCAN_BLOCK", scan_block)
    generator = torch.Generator().manual_seed(seed)
    sums = torch.randn(2, n_tiles, 3, 5, generator=generator).abs() * 10.0 ** torch.randint(-3, 4, (2, n_tiles, 3, 1))
    mass = torch.randn(2, n_tiles, 3, generator=generator)
    x, y = sums.clone().to(DEVICE), mass.clone().to(DEVICE)
    triton_tssa_carries.scan_carries(x, y, reverse=reverse)
    torch.testing.assert_close(x.double().cpu(), _exclusive(sums, reverse), rtol=1e-6, atol=0)
    torch.testing.assert_close(y.double().cpu(), _exclusive(mass, reverse), rtol=1e-6, atol=1e-6)


def test_carry_scan_of_one_array_leaves_nothing_else(seed):
    generator = torch.Generator().manual_seed(seed)
    sums = torch.randn(3, 9, 11, generator=generator)
    x = sums.clone().to(DEVICE)
    triton_tssa_carries.scan_carries(x, reverse=True)
    torch.testing.assert_close(x.double().cpu(), _exclusive(sums, True), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scan_block", [(2, 4)])
def test_causal_spans_several_scan_blocks(monkeypatch, scan_block, seed):
    """A whole causal forward and backward whose carries cross scan blocks of tiles and of features."""
    monkeypatch.setattr(triton_common, "POISON", True)
    monkeypatch.setattr(triton_tssa_carries, "SCAN_BLOCK", scan_block)
    generator = torch.Generator().manual_seed(seed)
    B, T, H, d = 2, 45, 3, 10
    w = torch.randn(B, T, H, d, generator=generator).to(DEVICE).requires_grad_()
    temp = (1 + 0.1 * torch.randn(H, generator=generator)).to(DEVICE).requires_grad_()
    beta = (0.1 * torch.randn(H, 50, generator=generator)).to(DEVICE).requires_grad_()
    grad_out = torch.randn(B, T, H, d, generator=generator).to(DEVICE)
    out = triton_tssa_causal.tssa_causal(w, temp, beta, block_t=4)
    grads = torch.autograd.grad(out, (w, temp, beta), grad_out)
    exact = [t.detach().double().requires_grad_() for t in (w, temp, beta)]
    expected = reference.tssa(*exact, causal=True)
    expected_grads = torch.autograd.grad(expected, exact, grad_out.double())
    pairs = zip(("out", "dw", "dtemp", "dbeta"), (out, *grads), (expected, *expected_grads), strict=True)
    for name, actual, wanted in pairs:
        error = (actual.double() - wanted).norm() / wanted.norm()
        assert error <= 1e-5, f"{name}: relative error {error:.2e}"


class _CountLaunches(TorchDispatchMode):
    """Torch operations issued outside Triton launches (the interpreter's own copies inside a launch do not
    count), and the Triton launches, by name."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.torch_ops: list[str] = []
        self.triton_launches: list[str] = []
        self.inside = False
        original = KernelInterface.__getitem__

        def launch(kernel, grid):
            run = original(kernel, grid)
            self.triton_launches.append(kernel.__name__)

            def inside(*args, **kwargs):
                self.inside = True
                try:
                    return run(*args, **kwargs)
                finally:
                    self.inside = False

            return inside

        monkeypatch.setattr(KernelInterface, "__getitem__", launch)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.inside:
            self.torch_ops.append(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def test_causal_issues_only_triton_launches(monkeypatch, seed):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(2, 21, 3, 6, generator=generator).to(DEVICE).requires_grad_()
    temp = (1 + 0.1 * torch.randn(3, generator=generator)).to(DEVICE).requires_grad_()
    beta = (0.1 * torch.randn(3, 24, generator=generator)).to(DEVICE).requires_grad_()
    grad_out = torch.randn(2, 21, 3, 6, generator=generator).to(DEVICE)
    phases = {}
    with _CountLaunches(monkeypatch) as counter:
        out = triton_tssa_causal.tssa_causal(w, temp, beta, block_t=8)
        phases["forward"] = (counter.torch_ops[:], counter.triton_launches[:])
        counter.torch_ops.clear()
        counter.triton_launches.clear()
        out.backward(grad_out)
        phases["backward"] = (counter.torch_ops, counter.triton_launches)
    for phase, (torch_ops, launches) in phases.items():
        work = [name for name in torch_ops if name not in ALLOCATIONS | FREE]
        assert not work, f"{phase}: torch operations between the kernels: {work}"
        assert len(launches) == 5, f"{phase}: {launches}"
