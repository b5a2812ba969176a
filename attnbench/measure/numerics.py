"""Accuracy of one implementation against the float64 reference on the same inputs and parameters.

The implementation runs in the case's dtype; the reference runs in float64 on the same values (the
low-precision tensors upcast), so the error measured is the implementation's, not the rounding of its inputs.
For a backward the same random output gradient drives both, and every input and learned parameter's gradient
is compared.

The verdict follows FlashAttention's discipline: an implementation may be as far from the float64 truth as the
reference itself is when it runs in the same dtype, up to `ERROR_RATIO` times, and no further. One relative
error over a whole tensor would dilute a local error (one head's last rows zeroed is 0.2% of a tensor) and let
a small global one through (an output 1.01× the truth is inside a bf16 tolerance), so each compared tensor is
judged twice:

- block by block: the tensor, flattened, is cut into blocks of about `BLOCK_ELEMENTS`, and each block's RMS
  error must stay within `ERROR_RATIO` × the reference's RMS error on the same block, plus a floor
  (`ERROR_FLOOR[dtype]` × the RMS of the whole true tensor) for blocks the reference gets exactly right;
- along the truth: the error's component along the true tensor, `s = ⟨error, truth⟩ / ⟨truth, truth⟩` (an
  output scaled by 1 + ε has s = ε), must stay within `ERROR_RATIO` × the reference's own, plus
  `SCALE_FLOOR[dtype]` and the spread that random rounding errors give it (`SCALE_NOISE` standard deviations).
  Rounding is unbiased, so a correct kernel's s is tiny (1e-5 in bf16 at T = 4096), while a wrong scale,
  normalisation or rescaling shows up whole.

A tensor's score is its worst ratio of error to allowance over both tests: at most 1 passes; NaN fails. When
the reference cannot run in the dtype, the mechanism's fixed relative L2 tolerance decides instead.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from attnbench.mechanisms.common import generator_for
from attnbench.mechanisms.problem import DTYPES, Mode, Problem, torch_dtype
from attnbench.mechanisms.registry import Mechanism

Tensors = dict[str, torch.Tensor]

# How many times the reference's own error (in the same dtype, against float64) an implementation may make.
ERROR_RATIO = 2.0
# Elements per block of the block test: a block is small enough that a few wrong rows dominate its error, and
# large enough that its RMS rounding error is stable (±3% for 1024 elements).
BLOCK_ELEMENTS = 1024
# Per dtype, the floor of each block's allowance, relative to the RMS of the whole true tensor: well below the
# dtype's unit roundoff for bf16/fp16 and tf32, and above the summation-order differences of long fp32 reductions.
ERROR_FLOOR = {"fp64": 1e-12, "fp32": 1e-5, "tf32": 1e-3, "bf16": 2e-3, "fp16": 2.5e-4}
# Per dtype, the floor of the allowed component of the error along the truth (a scale error): an eighth of the
# unit roundoff for bf16/fp16/tf32, so that a 1% scale error fails in every dtype.
SCALE_FLOOR = {"fp64": 1e-12, "fp32": 2.5e-6, "tf32": 1.2e-4, "bf16": 5e-4, "fp16": 6e-5}
# Standard deviations of the scale component that random errors produce (`scale_spread`).
SCALE_NOISE = 4.0
# A true tensor that is zero, or nearly (the query weights' gradient when every query sees one key: its terms
# cancel exactly), takes its floor from this share of the largest RMS among the tensors compared: rounding
# leaves residues of the size of the terms that cancelled (about the other gradients' size), not of their sum.
CANCELLED_SHARE = 0.1


@dataclass(frozen=True)
class TensorVerdict:
    """How one compared tensor fared: its score (worst error over allowance; NaN when not finite) and why."""

    score: float
    detail: str

    @property
    def ok(self) -> bool:
        return self.score <= 1.0  # NaN compares False


@dataclass(frozen=True)
class Comparison:
    """The verdict over the output and (for a backward) every gradient.

    `rel_err`/`max_abs_err` are the worst relative L2 and max absolute errors (for the record); `per_tensor` maps
    each compared tensor (`out`, `d<input>`) to its relative L2 error and `verdicts` to its `TensorVerdict`;
    `worst` names the tensor with the highest score; `tolerance` is the fixed relative L2 tolerance, which decides
    only when the reference could not run in the dtype (`criterion` then says `tolerance`).
    """

    rel_err: float
    max_abs_err: float
    worst: str
    tolerance: float
    per_tensor: dict[str, float]
    verdicts: dict[str, TensorVerdict] = field(default_factory=dict)
    criterion: str = "reference"

    def tensor_ok(self, name: str) -> bool:
        return self.verdicts[name].ok

    @property
    def ok(self) -> bool:
        return all(verdict.ok for verdict in self.verdicts.values())

    @property
    def score(self) -> float:
        """The worst score over the tensors: at most 1 passes; NaN when an output or gradient is not finite."""
        scores = [verdict.score for verdict in self.verdicts.values()]
        return math.nan if any(math.isnan(x) for x in scores) else max(scores, default=0.0)

    def explain(self) -> str | None:
        """Why the comparison failed (one clause per failing tensor), or None when it passed."""
        failed = [f"{name}: {verdict.detail}" for name, verdict in self.verdicts.items() if not verdict.ok]
        return "; ".join(failed) or None


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


def block_rms(error: torch.Tensor, block: int = BLOCK_ELEMENTS) -> torch.Tensor:
    """RMS of `error` over consecutive blocks of its flattened elements: `max(1, n // block)` blocks of
    `n // blocks` elements, the last one taking the few left over."""
    flat = error.detach().double().reshape(-1).square()
    n = flat.numel()
    blocks = max(1, n // block)
    size = n // blocks
    sums = flat[: blocks * size].view(blocks, size).sum(dim=1)
    counts = torch.full((blocks,), float(size), dtype=torch.float64, device=flat.device)
    sums[-1] += flat[blocks * size :].sum()
    counts[-1] += n - blocks * size
    return (sums / counts).sqrt()


def scale_error(error: torch.Tensor, truth: torch.Tensor) -> float:
    """The error's component along the truth, `⟨error, truth⟩ / ⟨truth, truth⟩` (0 for an all-zero truth)."""
    norm = truth.square().sum().item()
    return (error * truth).sum().item() / norm if norm > 0 else 0.0


def scale_spread(error: torch.Tensor, truth: torch.Tensor) -> float:
    """The standard deviation that independent per-element errors of the sizes seen give `scale_error`,
    `sqrt(Σ e²t²) / Σ t²` (the heteroscedasticity-robust error of a regression through the origin). Each element
    counts by its own truth: where a few large true elements hold most of the tensor's energy (a first token's
    gradient), their rounding errors are a few samples, not `numel` of them, and `rms(e) / (rms(t)·√numel)`
    would understate the spread. For errors of even size it equals that."""
    error, truth = error.detach().double(), truth.detach().double()
    norm = truth.square().sum().item()
    return (error * truth).square().sum().sqrt().item() / norm if norm > 0 else 0.0


def rms(x: torch.Tensor) -> float:
    """Root mean square of `x` in float64 (0 for an empty tensor)."""
    return x.detach().double().square().mean().sqrt().item() if x.numel() else 0.0


def judge(
    actual: torch.Tensor, truth: torch.Tensor, reference: torch.Tensor | None, dtype: str, scale: float = 0.0
) -> TensorVerdict:
    """The block test and the scale test of `actual` against the float64 `truth`, each allowance scaled by the
    error of `reference` (the reference run in `dtype`; None when `dtype` is fp64: the truth itself). The floors
    are relative to the truth's RMS, or to `CANCELLED_SHARE` × `scale` (the largest RMS compared) if larger."""
    truth = truth.detach().double()
    error = actual.detach().double() - truth
    if not torch.isfinite(error).all():
        return TensorVerdict(math.nan, "not finite (NaN or infinity)")
    own = torch.zeros_like(error) if reference is None else reference.detach().double() - truth
    truth_rms = rms(truth)
    floor_base = max(truth_rms, CANCELLED_SHARE * scale)
    allowed = ERROR_RATIO * block_rms(own) + ERROR_FLOOR[dtype] * floor_base
    blocks = block_rms(error)
    ratios = blocks / allowed.clamp(min=torch.finfo(torch.float64).tiny)
    worst = int(ratios.argmax())
    block_score = ratios[worst].item()
    scale, own_scale = scale_error(error, truth), scale_error(own, truth)
    noise = SCALE_NOISE * scale_spread(error, truth)
    scale_allowed = ERROR_RATIO * abs(own_scale) + SCALE_FLOOR[dtype] + noise
    scale_score = abs(scale) / scale_allowed
    if block_score >= scale_score:
        detail = (
            f"block {worst + 1} of {len(blocks)} (~{BLOCK_ELEMENTS} elements each) has RMS error "
            f"{blocks[worst].item():.3g}, allowed {allowed[worst].item():.3g} ({ERROR_RATIO:g} x the reference's "
            f"{block_rms(own)[worst].item():.3g} in {dtype} + floor {ERROR_FLOOR[dtype] * floor_base:.3g})"
        )
    else:
        detail = (
            f"scaled by {1 + scale:.6g} against the truth, allowed 1 ± {scale_allowed:.3g} ({ERROR_RATIO:g} x the "
            f"reference's {abs(own_scale):.3g} in {dtype} + floor {SCALE_FLOOR[dtype]:g} + noise {noise:.3g})"
        )
    return TensorVerdict(max(block_score, scale_score), detail)


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
    """Run `core` in `dtype`, the reference in float64 and in `dtype` on the same inputs; judge outputs and
    gradients (see the module's docstring)."""
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
    low = None if dtype == "fp64" else _reference_in_dtype(mechanism, problem, tensors, grad_out, dtype)
    return judge_all(actual, expected, low, dtype, mechanism.tolerance(dtype))


def judge_all(actual: Tensors, expected: Tensors, low: Tensors | None, dtype: str, tolerance: float) -> Comparison:
    """The `Comparison` of every tensor of `actual` against `expected` (float64), the allowances scaled by `low`
    (the reference in `dtype`; None for fp64, or with the fixed `tolerance` deciding when the reference failed
    to run in `dtype`, given as an empty dict)."""
    per_tensor, verdicts, worst_abs = {}, {}, 0.0
    scale = max((rms(truth) for truth in expected.values()), default=0.0)
    for name, truth in expected.items():
        rel, abs_err = errors(actual[name], truth)
        per_tensor[name] = rel
        worst_abs = max(worst_abs, abs_err) if abs_err == abs_err else math.nan
        if low == {}:
            verdicts[name] = TensorVerdict(
                rel / tolerance, f"relative L2 error {rel:.3g} against the tolerance {tolerance:.3g}"
            )
        else:
            verdicts[name] = judge(actual[name], truth, None if low is None else low[name], dtype, scale)
    worst = max(verdicts, key=lambda name: math.inf if math.isnan(verdicts[name].score) else verdicts[name].score)
    worst_rel = math.nan if any(math.isnan(r) for r in per_tensor.values()) else max(per_tensor.values())
    criterion = "tolerance" if low == {} else "reference"
    return Comparison(worst_rel, worst_abs, worst, tolerance, per_tensor, verdicts, criterion)


def _reference_in_dtype(mechanism, problem, tensors, grad_out, dtype) -> Tensors:
    """The reference itself run in `dtype` on the same inputs (outputs and gradients), or `{}` when it cannot run
    there (the fixed tolerance then decides)."""
    backward = grad_out is not None
    inputs = {k: v.detach().clone().requires_grad_(backward) for k, v in tensors.items()}
    try:
        with matmul_precision(dtype), torch.set_grad_enabled(backward):
            return run(mechanism, mechanism.reference, problem, inputs, grad_out)
    except Exception:  # the reference may not run in this dtype at all; the fixed tolerance then decides alone
        return {}


def record(row: dict[str, Any], result: Comparison, checked: int, asked: int, axis: str = "T") -> None:
    """Write a comparison into a row: the errors, the verdict (`numerics_fail` when it failed), `numerics_T` the
    length it was checked at and, when that is not the case's own (`asked`), a reason saying so."""
    row.update(
        rel_err=result.rel_err,
        max_abs_err=result.max_abs_err,
        numerics_ok=result.ok,
        numerics_worst=result.worst,
        numerics_T=checked,
        tolerance=result.tolerance,
        numerics_checked=True,
        numerics_score=result.score,
    )
    if result.explain():
        add_reason(row, result.explain())
    if checked != asked:
        add_reason(row, f"numerics checked at {axis}={checked}: the float64 reference at {axis}={asked} is too large")
    if not result.ok:
        row["status"] = "numerics_fail"


def add_reason(row: dict[str, Any], note: str) -> None:
    """Append `note` to the row's reason (clauses separated by "; ")."""
    row["reason"] = f"{row['reason']}; {note}" if row.get("reason") else note
