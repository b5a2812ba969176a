"""The ceilings a run measures (copy bandwidth, matmul rate per dtype) and what a row makes of them: the matmul
fraction against the ceiling of the row's own dtype, FLOPs by the convention and as the implementation runs,
and flags on rates above a ceiling."""

from __future__ import annotations

import time

import pytest

from attnbench.measure import ceilings as ceilings_module
from attnbench.measure import rates
from attnbench.measure.case import measure_case
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Level, Mode
from attnbench.suite.case import Case, TimingSettings

MHA = registry.get("mha")
QUICK = TimingSettings(warmup_ms=1.0, rep_ms=5.0, min_reps=3, max_reps=20)


def test_the_cpu_measures_every_dtype_in_a_few_seconds():
    begin = time.perf_counter()
    measured = ceilings_module.measure_ceilings("cpu")
    assert time.perf_counter() - begin < 15  # a few seconds alone; a loaded shared machine stretches it
    by_dtype = measured["matmul_tflops_by_dtype"]
    assert set(by_dtype) == {"fp32", "tf32", "bf16", "fp16", "fp64"}
    assert all(rate > 0 for rate in by_dtype.values()) and measured["copy_gbps"] > 0
    assert by_dtype["tf32"] == by_dtype["fp32"] and "tf32 = fp32" in measured["method"]
    assert measured["matmul_dtype"] == "fp32" and measured["matmul_tflops"] == by_dtype["fp32"]


CEILINGS = {"copy_gbps": 100.0, "matmul_tflops_by_dtype": {"fp32": 1.0, "tf32": 8.0, "bf16": 16.0}}


@pytest.mark.parametrize(("dtype", "ceiling"), [("fp32", 1.0), ("tf32", 8.0), ("bf16", 16.0)])
def test_the_matmul_fraction_is_against_the_rows_own_dtype(dtype, ceiling):
    problem = MHA.problem(B=2, T=256, H=4, d=32, level=Level.LAYER)
    time_s = 1e-3
    fields, notes = rates.rate_fields(MHA, problem, "sdpa_math", Mode.FWD_BWD, dtype, time_s, 1.0, CEILINGS)
    performed = MHA.mode_flops(problem, Mode.FWD_BWD, "sdpa_math").matmul
    assert fields["impl_matmul_tflops"] == pytest.approx(performed / time_s / 1e12)
    assert fields["frac_matmul_peak"] == pytest.approx(performed / time_s / 1e12 / ceiling)
    assert fields["ceiling_dtype"] == dtype and fields["rate_flags"] == [] and notes == []


def test_a_dtype_without_a_ceiling_gets_no_fraction():
    problem = MHA.problem(B=1, T=64, H=2, d=8)
    fields, _ = rates.rate_fields(MHA, problem, "sdpa", Mode.FWD, "fp16", 1e-3, 1.0, CEILINGS)
    assert fields["frac_matmul_peak"] is None and fields["ceiling_dtype"] is None


def test_an_old_meta_with_one_matmul_ceiling_serves_its_own_dtype_only():
    old = {"copy_gbps": 100.0, "matmul_tflops": 700.0, "matmul_dtype": "bf16"}
    assert rates.matmul_ceiling(old, "bf16") == (700.0, "bf16")
    assert rates.matmul_ceiling(old, "fp32") == (None, None)


def test_flops_by_the_convention_and_as_the_implementation_runs():
    """`sdpa_math` keeps the scores: its attention backward is 2×, not the convention's 2.5×."""
    problem = MHA.problem(B=1, T=128, H=2, d=16)
    attention = 4 * 128**2 * 2 * 16
    fields, _ = rates.rate_fields(MHA, problem, "sdpa_math", Mode.BWD, "fp32", 1e-3, 1.0, CEILINGS)
    assert fields["flops_impl"] == 2 * attention and MHA.flops_for(problem, Mode.BWD) == 2.5 * attention
    assert fields["flop_convention"] == "bwd=2x;attention_core_bwd=2.5x"


@pytest.mark.parametrize(
    ("ceilings", "flag"),
    [
        ({"copy_gbps": 1e-6, "matmul_tflops_by_dtype": {"fp32": 1e6}}, "gbps_above_copy_ceiling"),
        ({"copy_gbps": 1e6, "matmul_tflops_by_dtype": {"fp32": 1e-9}}, "tflops_above_matmul_ceiling"),
    ],
)
def test_a_rate_above_its_ceiling_is_flagged_in_the_row_and_its_reason(ceilings, flag):
    case = Case(problem=MHA.problem(B=1, T=33, H=2, d=8), impl="sdpa", mode=Mode.FWD, dtype="fp32", timing=QUICK)
    row, fatal = measure_case(case, "cpu", ceilings)
    assert not fatal and row["status"] == "ok", row["reason"]
    assert row["rate_flags"] == [flag] and flag in row["reason"] and "not a real rate" in row["reason"]


def test_rates_within_the_ceilings_are_not_flagged():
    case = Case(problem=MHA.problem(B=1, T=33, H=2, d=8), impl="sdpa", mode=Mode.FWD, dtype="fp32", timing=QUICK)
    row, _ = measure_case(case, "cpu", {"copy_gbps": 1e6, "matmul_tflops_by_dtype": {"fp32": 1e6}})
    assert row["rate_flags"] == [] and row["frac_copy_bw"] < 1 and row["frac_matmul_peak"] < 1
    assert row["numerics_checked"] is True and row["numerics_ok"] is True
