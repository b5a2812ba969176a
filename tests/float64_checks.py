"""Checks shared by the reference tests: two float64 formulations agree in value and in every gradient.

Tests import this module by name (`from float64_checks import ...`): it stays at the top of `tests/`, which pytest
puts on `sys.path` for the `conftest.py` beside it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensors = dict[str, torch.Tensor]


def assert_close_with_grads(
    actual_fn: Callable[[Tensors], torch.Tensor],
    expected_fn: Callable[[Tensors], torch.Tensor],
    tensors: Tensors,
    seed: int,
    *,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    grad_rtol: float = 1e-9,
    grad_atol: float = 1e-12,
    nonzero_grads: bool = False,
) -> None:
    """Outputs agree to float64 rounding, and so do the gradients of every tensor in `tensors` under one random
    output gradient (fresh from `seed`).

    `tensors` are leaves that require grad; both functions take the whole dict. A tensor that one side does not
    use has a zero gradient there, so it is compared as zeros rather than skipped. `nonzero_grads` also demands
    that every gradient of `actual_fn` has a nonzero entry: a gradient that is zero everywhere would hide a
    wrong one on the other side only up to `grad_atol`.
    """
    actual, expected = actual_fn(tensors), expected_fn(tensors)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol)
    grad_out = torch.randn(actual.shape, dtype=actual.dtype, generator=torch.Generator().manual_seed(seed))
    got, want = _grads(actual, tensors, grad_out), _grads(expected, tensors, grad_out)
    for name in tensors:
        if nonzero_grads:
            assert got[name].abs().max() > 0, f"d{name} is zero: the test would not see a wrong gradient"
        torch.testing.assert_close(
            got[name], want[name], rtol=grad_rtol, atol=grad_atol, msg=lambda m, name=name: f"d{name}: {m}"
        )


def _grads(out: torch.Tensor, tensors: Tensors, grad_out: torch.Tensor) -> Tensors:
    """The gradient of `out` (weighted by `grad_out`) with respect to each tensor, zeros where it is unused."""
    grads = torch.autograd.grad(out, list(tensors.values()), grad_out, allow_unused=True)
    return {
        name: torch.zeros_like(tensor) if grad is None else grad
        for (name, tensor), grad in zip(tensors.items(), grads, strict=True)
    }
