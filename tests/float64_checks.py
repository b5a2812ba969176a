"""Checks shared by the reference tests: two float64 formulations agree in value and in every gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensors = dict[str, torch.Tensor]


def assert_close_with_grads(
    actual_fn: Callable[[Tensors], torch.Tensor],
    expected_fn: Callable[[Tensors], torch.Tensor],
    tensors: Tensors,
    seed: int,
) -> None:
    """Outputs agree to float64 rounding, and so do the gradients of every input and learned parameter under one
    random output gradient (fresh from `seed`)."""
    actual, expected = actual_fn(tensors), expected_fn(tensors)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    grad_out = torch.randn(actual.shape, dtype=actual.dtype, generator=torch.Generator().manual_seed(seed))
    leaves = list(tensors.values())
    got = torch.autograd.grad(actual, leaves, grad_out)
    want = torch.autograd.grad(expected, leaves, grad_out)
    for name, g, w in zip(tensors, got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12, msg=lambda m, name=name: f"d{name}: {m}")
