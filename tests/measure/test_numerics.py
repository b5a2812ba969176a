"""The accuracy verdict: every block of every tensor, and its scale along the truth, within twice the error of
the reference itself run in the same dtype (FlashAttention's discipline).

The two broken kernels below are the failures one relative L2 error over a whole tensor lets through: one head's
last 16 query rows zeroed (0.2% of the rows at T = 4096 and H = 2, less with more heads), and an output 1.01×
the truth. Both must fail
in bf16 and in fp16 at T = 4096 and T = 16384, while correct kernels (PyTorch's SDPA, the reference itself, the
truth rounded to the dtype) pass. The shapes keep H·d and B small so that the float64 reference stays quick at
the long T.
"""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.measure import numerics
from attnbench.measure.case import _check_numerics, measure_case
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Mode
from attnbench.mechanisms.softmax.sdpa import core as sdpa_core
from attnbench.suite.case import Case, Limits, TimingSettings

MHA = registry.get("mha")
# (T, H, d): the sequence lengths, few heads and narrow ones.
SHAPES = [(4096, 2, 8), (16384, 1, 8)]
ZEROED_ROWS = 16


def last_rows_zeroed(out: torch.Tensor) -> torch.Tensor:
    """A kernel that forgets the last 16 query rows of head 0 (a tail tile it never writes)."""
    broken = out.clone()
    broken[:, -ZEROED_ROWS:, 0] = 0
    return broken


def sdpa_rows_zeroed(problem, tensors):
    return last_rows_zeroed(sdpa_core(problem, tensors))


def scaled_truth(problem, tensors):
    """A kernel whose output is 1.01× the truth (a wrong normalisation), rounded to the inputs' dtype."""
    exact = MHA.reference(problem, {name: t.double() for name, t in tensors.items()})
    return (exact * 1.01).to(tensors["q"].dtype)


@pytest.fixture(scope="module")
def verdicts():
    """Every candidate's `Comparison` at each shape and dtype, the float64 reference run once per shape and dtype."""
    found = {}
    for T, H, d in SHAPES:
        problem = MHA.problem(B=1, T=T, H=H, d=d)
        for dtype in ("bf16", "fp16"):
            tensors = numerics.make_inputs(MHA, problem, dtype, "cpu", seed=T, requires_grad=False)
            truth = MHA.reference(problem, {name: t.double() for name, t in tensors.items()})
            low = MHA.reference(problem, tensors)
            fast = sdpa_core(problem, tensors)
            candidates = {
                "sdpa": fast,
                "reference": low,
                "rounded truth": truth.to(fast.dtype),
                "last rows zeroed": last_rows_zeroed(fast),
                "1.01x the truth": (truth * 1.01).to(fast.dtype),
            }
            for name, out in candidates.items():
                found[T, dtype, name] = numerics.judge_all(
                    {"out": out}, {"out": truth}, {"out": low}, dtype, MHA.tolerance(dtype)
                )
    return found


@pytest.mark.parametrize("broken", ["last rows zeroed", "1.01x the truth"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("T", [T for T, _, _ in SHAPES])
def test_local_and_small_errors_fail(verdicts, T, dtype, broken):
    result = verdicts[T, dtype, broken]
    assert not result.ok and result.score > 3, result.explain()
    if broken == "1.01x the truth" and dtype == "bf16":
        assert result.rel_err <= MHA.tolerance(dtype), "one relative L2 error over the tensor would have passed it"


@pytest.mark.parametrize("correct", ["sdpa", "reference", "rounded truth"])
@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
@pytest.mark.parametrize("T", [T for T, _, _ in SHAPES])
def test_correct_kernels_pass(verdicts, T, dtype, correct):
    result = verdicts[T, dtype, correct]
    assert result.ok and result.score < 0.6, result.verdicts["out"].detail


def test_the_zeroed_block_and_the_scale_are_named(verdicts):
    zeroed = verdicts[4096, "bf16", "last rows zeroed"].explain()
    assert zeroed.startswith("out: block 64 of 64 ") and "RMS error" in zeroed, zeroed
    scaled = verdicts[4096, "bf16", "1.01x the truth"].explain()
    assert scaled.startswith("out: scaled by 1.01"), scaled


@pytest.mark.parametrize(
    ("dtype", "mode", "T"), [("bf16", Mode.FWD, 4096), ("fp16", Mode.FWD, 4096), ("bf16", Mode.FWD_BWD, 512)]
)
def test_broken_kernels_end_as_numerics_fail_in_a_row(dtype, mode, T):
    """Through the measurement's own check: the broken kernels' rows say `numerics_fail` and why, the correct
    kernel's row stays `ok` (with a backward, the gradients are judged as well)."""
    case = Case(problem=MHA.problem(B=1, T=T, H=1, d=8, causal=True), impl="sdpa", mode=mode, dtype=dtype)
    for core, status in ((sdpa_rows_zeroed, "numerics_fail"), (scaled_truth, "numerics_fail"), (sdpa_core, "ok")):
        row = {"status": "ok", "reason": None}
        _check_numerics(case, MHA, core, "cpu", row)
        assert row["status"] == status, (core.__name__, row["reason"])
        assert row["numerics_checked"] is True and row["numerics_T"] == T
        assert (row["reason"] is None) == (status == "ok")
        assert (row["numerics_score"] > 1) == (status == "numerics_fail")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("causal", [False, True])
def test_a_correct_bf16_kernel_passes_forward_and_backward_on_fresh_inputs(seed, causal):
    problem = MHA.problem(B=2, T=517, H=3, d=24, causal=causal)
    result = numerics.compare(MHA, sdpa_core, problem, "bf16", "cpu", mode=Mode.FWD_BWD, seed=seed)
    assert result.ok, result.explain()
    assert set(result.verdicts) == {"out", "dq", "dk", "dv"}


def test_a_check_at_a_smaller_t_says_so_and_an_unchecked_row_is_marked():
    problem = MHA.problem(B=1, T=64, H=2, d=8)
    small = Case(problem=problem, impl="sdpa", mode=Mode.FWD, dtype="fp32", limits=Limits(reference_max_elements=4000))
    row = {"status": "ok", "reason": None}
    _check_numerics(small, MHA, sdpa_core, "cpu", row)
    assert row["numerics_checked"] is True and row["numerics_T"] < 64 and "numerics checked at T=" in row["reason"]


def test_a_row_whose_numerics_are_not_checked_says_so():
    quick = TimingSettings(warmup_ms=1.0, rep_ms=5.0, min_reps=3, max_reps=20)
    case = Case(
        problem=MHA.problem(B=1, T=33, H=2, d=8),
        impl="sdpa",
        mode=Mode.FWD,
        dtype="fp32",
        timing=quick,
        limits=Limits(check_numerics=False),
    )
    row, _ = measure_case(case, "cpu", {})
    assert row["status"] == "ok" and row["numerics_checked"] is False and row["numerics_ok"] is None
    assert row["numerics_T"] is None and "numerics not checked" in row["reason"]


def test_nan_anywhere_fails(seed):
    problem = MHA.problem(B=1, T=9, H=2, d=6)

    def poisons_one_element(problem, tensors):
        out = MHA.reference(problem, tensors)
        poison = torch.zeros_like(out).flatten()
        poison[3] = math.nan
        return out + poison.view_as(out)

    result = numerics.compare(MHA, poisons_one_element, problem, "fp32", "cpu", mode=Mode.FWD_BWD, seed=seed)
    assert not result.ok and math.isnan(result.rel_err) and math.isnan(result.score)
    assert "not finite" in result.explain()


def test_near_zero_gradients_pass_when_the_reference_itself_is_no_better(seed):
    """XCA at T = 1: q̂ = sign(q), so the exact dq is ~0 and any rounding is a huge relative error; the reference
    in fp32 makes the same error, so the allowance scales with it."""
    mechanism = registry.get("xca")
    problem = mechanism.problem(B=1, T=1, H=3, d=12)
    result = numerics.compare(mechanism, mechanism.reference, problem, "fp32", "cpu", mode=Mode.FWD_BWD, seed=seed)
    assert result.per_tensor["dq"] > result.tolerance
    assert result.ok, result.explain()


def test_without_a_reference_in_the_dtype_the_fixed_tolerance_decides():
    truth = torch.linspace(1.0, 2.0, 50, dtype=torch.float64)
    close, far = truth * (1 + 1e-3), truth * (1 + 1e-1)
    for actual, ok in ((close, True), (far, False)):
        result = numerics.judge_all({"out": actual}, {"out": truth}, {}, "bf16", 3e-2)
        assert result.ok is ok and result.criterion == "tolerance"


def test_block_rms_covers_every_element_once():
    error = torch.arange(1.0, 2502.0, dtype=torch.float64)  # 2501 elements: 2 blocks, the last one longer
    blocks = numerics.block_rms(error)
    assert blocks.shape == (2,)
    first, second = error[:1250], error[1250:]
    torch.testing.assert_close(blocks, torch.stack([first.square().mean().sqrt(), second.square().mean().sqrt()]))


def test_errors_are_relative_l2_and_max_abs():
    expected = torch.tensor([3.0, 4.0], dtype=torch.float64)
    rel, abs_err = numerics.errors(torch.tensor([3.0, 4.5]), expected)
    assert math.isclose(rel, 0.1) and math.isclose(abs_err, 0.5)


def test_the_scale_spread_counts_a_few_large_true_elements_as_few_samples(rng):
    """Relative rounding errors on a truth whose energy sits in a few elements (a first token's gradient ten
    times the rest): `scale_spread` matches the spread of the scale component over 2000 draws, where the
    per-element formula `rms(e)/(rms(t)·√n)` understates it several times. For errors that do not grow with the
    truth, the two agree."""
    n, draws = 4096, 2000
    for concentrated in (True, False):
        truth = torch.from_numpy(rng.normal(size=n))
        noise = torch.from_numpy(rng.normal(scale=3e-4, size=(draws, n)))
        if concentrated:
            truth[:8] *= 10.0
        errors = noise * truth if concentrated else noise
        spread = (errors @ truth / truth.square().sum()).std().item()
        robust = math.sqrt(sum(numerics.scale_spread(e, truth) ** 2 for e in errors[:200]) / 200)
        even = numerics.rms(errors[0]) / numerics.rms(truth) / math.sqrt(n)
        assert robust == pytest.approx(spread, rel=0.15), (concentrated, robust, spread)
        assert (even < spread / 3) if concentrated else even == pytest.approx(spread, rel=0.15), (even, spread)
