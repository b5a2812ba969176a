"""A measured case's row says how it was timed: method, batch, kernels (CPU operators here), contention evidence
and flags; a method the device cannot run is `unsupported`, with the reason."""

from __future__ import annotations

import pytest

from attnbench.measure.case import measure_case
from attnbench.mechanisms import registry
from attnbench.mechanisms.problem import Mode
from attnbench.results.files import ROW_FIELDS
from attnbench.suite.case import Case, Limits, TimingSettings

TIMED_FIELDS = ("timing_method", "calls_per_sample", "launch_bound", "kernels", "noisy", "contention", "energy_j")


def _case(method: str, mode: Mode = Mode.FWD) -> Case:
    mechanism = registry.get("mha")
    problem = mechanism.problem(B=1, T=24, H=2, d=8, causal=False, level="core")
    timing = TimingSettings(warmup_ms=2, rep_ms=10, min_reps=3, max_reps=50, method=method)
    return Case(problem, "reference", mode, "fp32", timing=timing, limits=Limits(check_numerics=False))


@pytest.mark.parametrize("method", ["cold", "back_to_back"])
@pytest.mark.parametrize("mode", [Mode.FWD, Mode.BWD])
def test_a_cpu_row_records_how_it_was_timed(method, mode):
    row, fatal = measure_case(_case(method, mode), "cpu", None)
    assert row["status"] == "ok" and not fatal, row["reason"]
    assert set(TIMED_FIELDS) <= set(ROW_FIELDS) and set(TIMED_FIELDS) <= set(row)
    assert row["timing_method"] == method and row["calls_per_sample"] >= 1
    assert row["launch_bound"] is None and row["energy_j"] is None  # CUDA only
    assert row["kernels"] and all(name.startswith("aten::") for name in row["kernels"])
    assert any("bmm" in name or "matmul" in name for name in row["kernels"]), row["kernels"]
    assert "aten::view" not in row["kernels"]
    assert row["contention"]["cores"] >= 1 and 0 < row["contention"]["probe_ratio"] <= 1
    assert row["noisy"] is None or all(isinstance(reason, str) for reason in row["noisy"])


def test_graph_replay_on_the_cpu_is_unsupported():
    row, _ = measure_case(_case("graph"), "cpu", None)
    assert row["status"] == "unsupported" and "CUDA device" in row["reason"]
