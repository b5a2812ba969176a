"""Verdicts that cannot be read both ways, on runs whose every call pays a fixed overhead (the normal case), and
the crossover length T* with its bootstrap interval (synthetic runs, see `synthetic_runs`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from synthetic_runs import LENGTHS, make_row, write_run

from attnbench.analysis.crossover import crossovers
from attnbench.analysis.fits import EXPECTED_EXPONENT, SLACK, check_exponent, fit_exponent
from attnbench.analysis.runs import load_runs
from attnbench.analysis.series import series_frame
from attnbench.analysis.summary import summarize

OVERHEAD_MS = 0.2  # a fixed cost per call, as large as the quadratic term at T ≈ 1400
QUADRATIC_C, LINEAR_C = 1e-7, 1.5e-4
SPREAD = 0.10  # lognormal σ of each length's median: a noisy machine


def _upper_half_loglog(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """The plain log-log least squares over the upper half of the lengths, with its 95% t interval: the fit that
    ignores the overhead, and whose interval holds both 1 and 2 on these runs."""
    upper = xs >= xs[(len(xs) - 1) // 2]
    result = stats.linregress(np.log(xs[upper]), np.log(ys[upper]))
    half = stats.t.ppf(0.975, upper.sum() - 2) * result.stderr
    return result.slope - half, result.slope + half


@pytest.mark.parametrize(("overhead_ms", "spread", "least_inconclusive"), [(OVERHEAD_MS, SPREAD, 0), (0.5, 0.15, 10)])
def test_with_overhead_no_verdict_agrees_with_both_complexities(overhead_ms, spread, least_inconclusive, rng):
    """Quadratic time plus an overhead and 10-15% noise: the upper-half log-log interval holds both 1 and 2 in
    many runs; the overhead model's verdict never agrees with one complexity while its interval holds the other.
    With the larger overhead and noise some intervals do hold both, and those runs must say "inconclusive"."""
    xs = np.array(LENGTHS, dtype=float)
    holds_both, verdicts = 0, []
    for _ in range(200):
        ys = (overhead_ms + QUADRATIC_C * xs**2) * np.exp(rng.normal(0, spread, len(xs)))
        low, high = _upper_half_loglog(xs, ys)
        holds_both += low <= 1.0 and high >= 2.0
        fit = fit_exponent(xs, ys)
        verdict, note = check_exponent(fit, 2.0, "quadratic")
        verdicts.append(verdict)
        if verdict == "agrees":
            assert fit.low - SLACK > 1.0, note
        if fit.low - SLACK <= 1.0:
            assert verdict in ("inconclusive", "disagrees"), note
    assert holds_both >= 20  # the runs are the misleading kind
    assert verdicts.count("inconclusive") >= least_inconclusive
    assert verdicts.count("agrees") >= 0.6 * len(verdicts) and verdicts.count("disagrees") <= 0.05 * len(verdicts)


def _overhead_run(path: Path, rng: np.random.Generator) -> Path:
    """mha (quadratic) and tssa (linear), both paying `OVERHEAD_MS` per call, 10% noise on each length."""
    rows = []
    for T in LENGTHS:
        for mechanism, impl, grown in (("mha", "sdpa", QUADRATIC_C * T * T), ("tssa", "fast", LINEAR_C * T)):
            time_ms = (OVERHEAD_MS + grown) * math.exp(rng.normal(0, SPREAD))
            rows.append(make_row(mechanism, impl, T, time_ms=time_ms, mem=1e3 * T))
    return write_run(path, rows)


def test_no_summary_line_agrees_with_both_complexities(tmp_path: Path, rng: np.random.Generator):
    """Every ✓ line of the printed summary has an interval that, widened by the slack, excludes the other
    complexity; every T* line prints an interval."""
    agreed = 0
    for index in range(6):
        runs, frame = load_runs(_overhead_run(tmp_path / f"run{index}", rng))
        summary = summarize(frame, runs, ["T"])
        for line in summary.markdown.splitlines():
            found = re.search(
                r"\| (mha|tssa) \| (\w+) \|.*?\| ([\d.]+) \[([\d.-]+), ([\d.]+)\] \|.*?~(\d) ([✓✗?])", line
            )
            if not found or found[7] != "✓":
                continue
            agreed += 1
            low, high, expected = float(found[4]), float(found[5]), float(found[6])
            other = next(value for value in EXPECTED_EXPONENT.values() if value != expected)
            # The printed bounds are rounded to 0.01: one that reaches the other exponent by less than the
            # rounding (1.85 + 0.15 = 2.00 printed, 1.849 + 0.15 computed) may still exclude it.
            assert not (low - SLACK + 0.005 < other < high + SLACK - 0.005), line
        (time_line,) = [line for line in summary.markdown.splitlines() if line.startswith("| tssa |") and "T*" in line]
        assert re.search(r"T\* ≈ \d+ \(between \d+ and \d+\), 95% interval \[\d+, \d+\]", time_line), time_line
    assert agreed >= 6  # the check above had lines to read


def test_crossover_interval_covers_the_true_length(tmp_path: Path, rng: np.random.Generator):
    """Each row's median is that of its own 30 samples (5% spread) around the truth: the 95% interval of T*
    from resampling them holds the true crossing in most runs, and brackets the point estimate in all."""
    quadratic, linear = 1e-6, 2e-3  # equal at T* = 2000
    covered, runs = 0, 30
    for index in range(runs):
        rows = []
        for T in LENGTHS:
            for mechanism, impl, truth in (("mha", "sdpa", quadratic * T * T), ("tssa", "fast", linear * T)):
                samples = truth * np.exp(rng.normal(0, 0.05, 30))
                rows.append(make_row(mechanism, impl, T, time_ms=float(np.median(samples)), mem=1e3 * T,
                                     time_samples_ms=samples.tolist()))  # fmt: skip
        _, frame = load_runs(write_run(tmp_path / f"run{index}", rows))
        table = crossovers(series_frame(frame, "T")).set_index(["name", "metric"])
        time = table.loc["tssa", "time"]
        assert time.kind == "within" and time.T_low <= time.T_star <= time.T_high
        covered += time.T_low <= 2000 <= time.T_high
    assert covered >= 0.75 * runs, covered
