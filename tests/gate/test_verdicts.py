"""The gate's verdicts beyond timing: broken numerics and statuses fail, one-sided cases are listed, and
different environments warn (runs from timed_runs.py)."""

from __future__ import annotations

from timed_runs import derive, invoke, scaled, verdicts

from attnbench.gate.settings import EXIT_CLEAN, EXIT_REGRESSION, GateSettings
from attnbench.gate.verdicts import compare_paths


def test_a_numerics_break_fails_whatever_the_speed(runs, tmp_path):
    def broken(row):
        if row["impl"] == "sdpa":
            row.update(status="numerics_fail", numerics_ok=False, reason="relative L2 error 0.3 > tolerance")
            return scaled(0.5)(row)  # twice as fast, and wrong
        return row

    head = derive(runs[0], tmp_path / "broken", rows=broken)
    comparison = compare_paths(runs[0], head, GateSettings(max_regressions=5, ignore=("*",)))
    assert verdicts(comparison)["sdpa"] == "numerics_broke"
    assert comparison.exit_code == EXIT_REGRESSION
    crashed = derive(runs[0], tmp_path / "crashed", rows=lambda row: {**row, "status": "crash", "reason": "boom"})
    assert set(verdicts(compare_paths(runs[0], crashed)).values()) == {"broke"}
    # A case failing on both sides is listed, not a new failure; fixed is good news.
    assert set(verdicts(compare_paths(crashed, crashed)).values()) == {"failing"}
    assert compare_paths(crashed, runs[0]).exit_code == EXIT_CLEAN


def test_cases_on_one_side_only_are_listed(runs, tmp_path):
    head = derive(runs[0], tmp_path / "fewer", rows=lambda row: row if row["impl"] == "sdpa" else None)
    comparison = compare_paths(runs[0], head)
    assert [case.base["impl"] for case in comparison.only_base] == ["reference"]
    assert not comparison.only_head and comparison.exit_code == EXIT_CLEAN
    assert any("only in BASE" in line for line in comparison.warnings)
    result = invoke("compare", head, runs[0])
    assert "only in HEAD" in result.output and "mha[] core" in result.output


def test_different_drivers_and_versions_on_one_device_model_warn_loudly(runs, tmp_path):
    def elsewhere(meta):
        meta["device"]["name"] = "Same CPU (2 threads, torch uses 1)"  # the same class, another thread setting
        meta["device"]["driver"] = "550.54"
        meta["versions"]["torch"] = "9.9.9"
        meta["timer"]["rep_ms"] = 999
        return meta

    head = derive(runs[0], tmp_path / "elsewhere", meta=elsewhere)
    warnings = "\n".join(compare_paths(runs[0], head).warnings)
    for fragment in ("device.name", "device.driver", "versions.torch", "timer.rep_ms"):
        assert fragment in warnings
    result = invoke("compare", runs[0], head)
    assert result.exit_code == EXIT_CLEAN
    assert "WARNING" in result.output and "torch uses 1" in result.output
