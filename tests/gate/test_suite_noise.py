"""The gate on simulated 300-case suites (see simulated_suites.py): identical code measured twice, with a drift
every case shares and a drift of each case's own, fails rarely; a case slowed by 10% (n = 30) or 25% (n = 5) is
caught; the shared drift is divided out by the median or by control cases; nothing compared is bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from simulated_suites import flagged, side, simulated_pairs
from timed_runs import invoke

from attnbench.gate.settings import EXIT_BAD_INPUT, CompareError, GateSettings
from attnbench.gate.verdicts import compare


def test_identical_code_on_a_drifting_runner_rarely_fails(rng):
    """HEAD = BASE's code, 2% drift shared by every case, 1% of each case's own, per-sample CV 2%, n = 30: under 1%
    of such 300-case suites may fail (one-sided 95% bound), the same suites every run (the test's own seed)."""
    suites = 1000
    failures = sum(bool(flagged(simulated_pairs(rng))) for _ in range(suites))
    assert binomtest(failures, suites).proportion_ci(0.90).high < 0.01, failures


def test_without_dividing_out_the_shared_drift_the_same_suites_fail(rng):
    """What the suite-level corrections guard against: left in, a 2% shared drift plus each case's own pushes a
    few of 300 cases past a 5% threshold in most suites, and the per-case tests cannot tell."""
    raw = GateSettings(normalize="none")
    failures = sum(bool(flagged(simulated_pairs(rng), raw)) for _ in range(100))
    assert failures > 10


@pytest.mark.parametrize(("n", "slowdown"), [(30, 1.10), (5, 1.25)])
def test_one_slowed_case_is_caught(n, slowdown, rng):
    """One case of 300 slowed by 10% (n = 30 samples per side) or 25% (n = 5) among the same drifts: caught in at
    least 95% of suites, and no other case flagged in more than 2% of them."""
    suites = 200
    caught = others = 0
    for _ in range(suites):
        hit = flagged(simulated_pairs(rng, n=n, slowdowns={17: slowdown}))
        caught += 17 in hit
        others += bool(hit - {17})
    assert caught >= 0.95 * suites and others <= 0.02 * suites, (caught, others)


def test_shared_drift_is_divided_out_by_the_median_or_the_controls(tmp_path, rng):
    pairs = simulated_pairs(rng, cases=60, shared=0.30, slowdowns={40: 1.25})
    base, head = side(pairs, 0, controls=10), side(pairs, 1, controls=10)
    by_median = compare(base, head)
    assert by_median.noise.normalize == "median" and by_median.noise.shared == pytest.approx(1.30, rel=0.01)
    assert [case.head["T"] for case in by_median.of("regressed")] == [16 + 40]
    moved = f"every case moved by {by_median.noise.shared - 1:+.1%} together (median over all 60 cases)"
    assert any(moved in line for line in by_median.warnings), by_median.warnings
    by_controls = compare(base, head, GateSettings(controls=("mha[] core B=1 * sdpa fwd fp32",)))
    assert by_controls.noise.normalize == "controls" and by_controls.noise.controls == 10
    assert by_controls.noise.shared == pytest.approx(1.30, rel=0.02)
    assert [case.head["T"] for case in by_controls.of("regressed")] == [16 + 40]
    # Not divided out, the 30% drift is a regression of every case.
    assert len(compare(base, head, GateSettings(normalize="none")).of("regressed")) == 60
    with pytest.raises(CompareError, match="no timed case matches the control patterns"):
        compare(base, head, GateSettings(controls=("xca*",)))


def test_a_small_suite_uses_the_drift_the_user_measured(rng):
    """Two cases say nothing about drift: nothing is divided out, and `drift` (measured on the runner) is what
    keeps a 6% change of a tightly measured case from failing on a runner that drifts by 3%."""
    pairs = simulated_pairs(rng, cases=2, n=200, shared=0.0, own=0.0, cv=0.01, slowdowns={0: 1.06})
    base, head = side(pairs, 0), side(pairs, 1)
    tight = compare(base, head, GateSettings(floor_us=0.0))  # the case may be a 10 µs one: 6% of it is under 1 µs
    assert tight.noise.normalize == "none" and tight.noise.drift_estimated is None
    assert [case.head["T"] for case in tight.of("regressed")] == [16]
    drifting = compare(base, head, GateSettings(drift=0.03, floor_us=0.0))
    assert drifting.noise.drift == pytest.approx(np.log1p(0.03)) and not drifting.of("regressed")
    assert [case.head["T"] for case in drifting.of("noisy")] == [16]


def test_no_case_in_common_is_bad_input(tmp_path, rng):
    base = side(simulated_pairs(rng, cases=3), 0, name="base")
    head = side(simulated_pairs(rng, cases=3), 1, name="head")
    head.rows = {f"other-{key}": row for key, row in head.rows.items()}
    with pytest.raises(CompareError, match="no case in common"):
        compare(base, head)


def test_the_cli_refuses_runs_with_no_case_in_common(runs, tmp_path):
    from timed_runs import derive

    renamed = derive(runs[0], tmp_path / "renamed", rows=lambda row: {**row, "case_id": "x" + row["case_id"]})
    result = invoke("compare", runs[0], renamed)
    assert result.exit_code == EXIT_BAD_INPUT and "no case in common" in result.output, result.output
