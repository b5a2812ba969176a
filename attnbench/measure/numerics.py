"""Accuracy of one implementation against the float64 reference on the same inputs and parameters.

The implementation runs in the case's dtype; the reference runs in float64 on the same values (the
low-precision tensors upcast), so the error measured is the implementation's, not the rounding of its inputs.
For a backward the same random output gradient drives both, and every input and learned parameter's gradient
is compared.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnbench.mechanisms.common import generator_for
from attnbench.mechanisms.problem import DTYPES, Mode, Problem, torch_dtype
from attnbench.mechanisms.registry import Mechanism

Tensors = dict[str, torch.Tensor]


# A tensor whose error exceeds the dtype's fixed tolerance still passes when it stays within this multiple of
# the error of the reference itself run in the same dtype (FlashAttention's discipline): that covers quantities
# whose exact value is near zero (an XCA gradient at T = 1), where any rounding is a large relative error.
REFERENCE_ERROR_RATIO = 2.0


@dataclass(frozen=True)
class Comparison:
    """Worst relative L2 error and max absolute error over the output and (for a backward) every gradient.

    `per_tensor` maps each compared tensor (`out`, `d<input>`) to its relative L2 error; `reference_errors`
    holds, for tensors above the tolerance, the error of the reference run in the same dtype.
    """

    rel_err: float
    max_abs_err: float
    worst: str
    tolerance: float
    per_tensor: dict[str, float]
    reference_errors: dict[str, float]

    def tensor_ok(self, name: str) -> bool:
        # NaN compares False, so a NaN anywhere fails.
        rel = self.per_tensor[name]
        if rel <= self.tolerance:
            return True
        reference = self.reference_errors.get(name, float("nan"))
        return rel <= REFERENCE_ERROR_RATIO * reference

    @property
    def ok(self) -> bool:
        return all(self.tensor_ok(name) for name in self.per_tensor)

    def explain(self) -> str | None:
        """Why the comparison failed, or how it passed when the fixed tolerance alone would have failed it."""
        above = [name for name, rel in self.per_tensor.items() if not rel <= self.tolerance]
        if not above:
            return None
        parts = []
        for name in above:
            reference = self.reference_errors.get(name)
            versus = f" (the reference in this dtype: {reference:.3g})" if reference is not None else ""
            verdict = "within" if self.tensor_ok(name) else "beyond"
            parts.append(
                f"{name}: relative L2 error {self.per_tensor[name]:.3g} > tolerance {self.tolerance:.3g}{versus}, "
                f"{verdict} {REFERENCE_ERROR_RATIO:g}x the reference's own error"
            )
        return "; ".join(parts)


def make_inputs(
    mechanism: Mechanism, problem: Problem, dtype: str, device: str, seed: int, requires_grad: bool
) -> Tensors:
    """Fresh random tensors for the problem, leaves that require grad when a backward will run."""
    tensors = mechanism.make_tensors(problem, torch_dtype(dtype), device, generator_for(device, seed))
    return {name: t.requires_grad_(requires_grad) for name, t in tensors.items()}


@contextlib.contextmanager
def matmul_precision(dtype: str):
    """TF32 matmuls for `tf32`, exact fp32 matmuls otherwise; restored on exit."""
    allow = DTYPES[dtype][2]
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def output_grad(out: torch.Tensor, seed: int) -> torch.Tensor:
    gen = generator_for(out.device, seed + 7919)
    return torch.randn(out.shape, dtype=out.dtype, device=out.device, generator=gen)


def run(
    mechanism: Mechanism,
    core: Callable[[Problem, Tensors], torch.Tensor],
    problem: Problem,
    tensors: Tensors,
    grad_out: torch.Tensor | None,
) -> Tensors:
    """Output (and with `grad_out`, the gradient of every tensor) of `core` at the problem's level."""
    out = mechanism.apply(core, problem, tensors)
    results = {"out": out.detach()}
    if grad_out is not None:
        grads = torch.autograd.grad(out, list(tensors.values()), grad_out.to(out.dtype), allow_unused=True)
        for name, grad in zip(tensors, grads, strict=True):
            results[f"d{name}"] = torch.zeros_like(tensors[name]) if grad is None else grad
    return results


def errors(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(relative L2 error, max absolute error) of `actual` against `expected`, in float64."""
    actual, expected = actual.detach().double(), expected.detach().double()
    diff = actual - expected
    norm = expected.norm().item()
    rel = diff.norm().item() / norm if norm > 0 else diff.norm().item()
    if not torch.isfinite(actual).all():
        return float("nan"), float("nan")
    return rel, diff.abs().max().item() if diff.numel() else 0.0


def compare(
    mechanism: Mechanism,
    core: Callable[[Problem, Tensors], torch.Tensor],
    problem: Problem,
    dtype: str,
    device: str,
    *,
    mode: Mode = Mode.FWD,
    seed: int = 0,
) -> Comparison:
    """Run `core` in `dtype` and the reference in float64 on the same inputs; compare outputs and gradients."""
    backward = Mode(mode).needs_grad
    tensors = make_inputs(mechanism, problem, dtype, device, seed, backward)
    reference_inputs = {k: v.detach().double().requires_grad_(backward) for k, v in tensors.items()}
    with matmul_precision(dtype), torch.set_grad_enabled(backward):
        actual = run(mechanism, core, problem, tensors, None)
        grad_out = output_grad(actual["out"], seed) if backward else None
        if backward:
            actual = run(mechanism, core, problem, tensors, grad_out)
    with torch.set_grad_enabled(backward):
        expected = run(mechanism, mechanism.reference, problem, reference_inputs, grad_out)
    tolerance = mechanism.tolerance(dtype)
    per_tensor, worst, worst_rel, worst_abs = {}, "out", -1.0, 0.0
    for name, ref in expected.items():
        rel, abs_err = errors(actual[name], ref)
        per_tensor[name] = rel
        if not math.isnan(worst_rel) and not rel <= worst_rel:  # a NaN becomes the worst and stays so
            worst, worst_rel = name, rel
        worst_abs = max(worst_abs, abs_err) if abs_err == abs_err else float("nan")
    reference_errors = {}
    if any(not rel <= tolerance for rel in per_tensor.values()) and dtype != "fp64":
        reference_errors = _reference_errors(mechanism, problem, tensors, grad_out, expected, dtype)
    return Comparison(worst_rel, worst_abs, worst, tolerance, per_tensor, reference_errors)


def _reference_errors(mechanism, problem, tensors, grad_out, expected, dtype) -> dict[str, float]:
    """Relative errors of the reference itself in `dtype` against the float64 reference."""
    backward = grad_out is not None
    inputs = {k: v.detach().clone().requires_grad_(backward) for k, v in tensors.items()}
    try:
        with matmul_precision(dtype), torch.set_grad_enabled(backward):
            low = run(mechanism, mechanism.reference, problem, inputs, grad_out)
    except Exception:  # the reference may not run in this dtype at all; the fixed tolerance then decides alone
        return {}
    return {name: errors(low[name], ref)[0] for name, ref in expected.items()}
