"""Fitted exponents and their check against the complexity, memory walls, and which axes the runs swept, on
synthetic runs of known scaling (see `synthetic_runs`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from synthetic_runs import LENGTHS, MHA_REFERENCE_OOM_FROM, loaded, make_row, write_run

from attnbench.analysis.fits import fit_exponent, fit_series
from attnbench.analysis.rows import AnalysisError
from attnbench.analysis.runs import load_runs
from attnbench.analysis.series import check_swept, series_frame, swept_axes
from attnbench.analysis.summary import summarize


def test_fit_recovers_exponent_and_interval_covers_it(rng):
    """A quadratic time with a fixed per-call overhead and 5% noise: the overhead model's 95% interval of p covers
    2 about 95% of the time, over every length."""
    xs = np.array(LENGTHS, dtype=float)
    covered, widths = 0, []
    for _ in range(300):
        ys = (0.05 + 3e-7 * xs**2) * np.exp(rng.normal(0, 0.05, len(xs)))
        fit = fit_exponent(xs, ys)
        covered += fit.low <= 2.0 <= fit.high
        widths.append(fit.high - fit.low)
        assert fit.points == tuple(xs) and fit.model == "a+b·x^p"
    assert 0.88 <= covered / 300 <= 0.99  # a 95% interval
    assert np.median(widths) < 0.6


def test_fit_models_the_overhead_and_needs_three_points():
    xs = np.array(LENGTHS, dtype=float)
    overhead = 0.5 + 1e-6 * xs**2  # launch-bound at short T
    whole = np.polyfit(np.log(xs), np.log(overhead), 1)[0]
    fit = fit_exponent(xs, overhead)
    assert whole < 1.5 and fit.exponent == pytest.approx(2.0, abs=1e-6) and fit.overhead == pytest.approx(0.5)
    # at 8192 the overhead is 0.7% of the time: the curve's own slope there is just under 2
    assert fit.top_slope == pytest.approx(2 * 67.1 / 67.6, abs=1e-3)
    few = fit_exponent([128, 256, 512], [1.0, 2.05, 4.0])  # three lengths: a plain power law, one degree of freedom
    assert few.model == "b·x^p" and few.low < 1.0 < few.high and few.high - few.low < 1.0
    none = fit_exponent([128, 256, 512], [1.0, float("nan"), 4.0])
    assert not none.ok and "2 usable points" in none.reason and "no fit" in none.text()


def test_exponents_per_series_and_agreement(seqlen_run: Path):
    _, _, series = loaded(seqlen_run)
    fits = fit_series(series).set_index(["name", "impl"])
    sdpa, tssa = fits.loc["mha", "sdpa"], fits.loc["tssa", "fast"]
    assert sdpa.time_low < 2.0 < sdpa.time_high and abs(sdpa.time_exponent - 2) < 0.15
    assert tssa.time_low < 1.0 < tssa.time_high and abs(tssa.time_exponent - 1) < 0.1
    assert (sdpa.time_expected, tssa.time_expected) == (2.0, 1.0)
    assert sdpa.time_verdict == tssa.time_verdict == "agrees"
    # the numerics failure at 8192 left out: six lengths, all fitted
    assert fits.loc["tssa", "reference"].time_points == "128;256;512;1024;2048;4096"
    assert abs(fits.loc["mha", "reference"].memory_exponent - 2) < 1e-6
    assert fits.loc["aft:simple", "reference"].time_verdict == "agrees"


def test_a_fit_that_disagrees_is_reported(tmp_path: Path):
    # a "linear" mechanism whose implementation materialises T×T: time grows as T²
    rows = [make_row("xca", "naive", T, time_ms=1e-6 * T * T, mem=4.0 * T * T) for T in LENGTHS]
    _, frame = load_runs(write_run(tmp_path / "run", rows))
    summary = summarize(frame, [], ["T"])
    record = summary.fits.iloc[0]
    assert record.time_verdict == "disagrees"
    assert "fitted 2.00 [2.00, 2.00] (a+b·x^p; slope 2.00 at the largest length), expected ~1 for a linear" in (
        record.time_note
    )
    assert "disagree" in summary.markdown and "grows faster than the mechanism's complexity" in summary.markdown


def test_token_budget_sweep_is_fitted_per_sequence(tmp_path: Path):
    # the GPU seqlen suite: B = max(1, 4096 // T), so B·T is fixed up to T = 4096 and grows beyond
    rows = [make_row("mha", "sdpa", T, B=max(1, 4096 // T), time_ms=1e-6 * max(1, 4096 // T) * T * T) for T in LENGTHS]
    rows += [make_row("tssa", "fast", T, B=max(1, 4096 // T), time_ms=1e-3 * max(1, 4096 // T) * T) for T in LENGTHS]
    _, frame, series = loaded(write_run(tmp_path / "run", rows))
    assert series.attrs["varying_axes"] == ("B",) and series.attrs["per_sequence"]
    fits = fit_series(series).set_index("name")
    assert fits.loc["mha"].fixed == "H=4 d=16" and fits.loc["mha"].varying == "B=32…1"
    assert fits.loc["mha"].time_exponent == pytest.approx(2.0) and fits.loc["tssa"].time_exponent == pytest.approx(1)
    assert fits.loc["mha"].time_verdict == "agrees"
    # B only follows T here (and is 1 at both 4096 and 8192): not an axis of its own
    assert swept_axes(frame) == ["T"]
    with pytest.raises(AnalysisError, match="do not sweep B"):
        check_swept(frame, "B")


def test_oom_walls(seqlen_run: Path):
    _, _, series = loaded(seqlen_run)
    fits = fit_series(series).set_index(["name", "impl"])
    reference = fits.loc["mha", "reference"]
    assert (reference.longest_x_before_oom, reference.first_oom_x) == (2048, MHA_REFERENCE_OOM_FROM)
    assert math.isnan(fits.loc["mha", "sdpa"].first_oom_x) and fits.loc["mha", "sdpa"].largest_x_run == 8192
    assert fits.loc["aft:simple", "reference"].not_run == "unsupported at 4096,8192"
    assert fits.loc["tssa", "reference"].numerics_failed_at == "8192"


def test_other_axes_and_what_is_not_swept(tmp_path: Path):
    rows = [make_row("xca", "reference", 1024, d=d, time_ms=1e-4 * d * d, mem=1e3 * d) for d in (16, 32, 64, 128)]
    rows += [make_row("xca", "reference", T, time_ms=1e-4 * T, mem=1e3 * T) for T in (256, 512, 2048)]
    _, frame = load_runs(write_run(tmp_path / "run", rows))
    # d is the knob the runs turned; D = H·d only mirrors it, so it is not drawn a second time
    assert swept_axes(frame) == ["T", "d"]
    series = series_frame(frame, "d")
    assert series.attrs["fixed_axes"] == ("B", "T", "H")
    fit = fit_series(series)
    assert fit.loc[fit["fixed"] == "B=2 T=1024 H=4", "time_exponent"].item() == pytest.approx(2.0)
    with pytest.raises(AnalysisError, match="do not sweep B: every row has B=2; swept: T, D, d"):
        check_swept(frame, "B")
