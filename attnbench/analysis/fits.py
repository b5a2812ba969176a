"""Fitted scaling exponents, checked against each mechanism's complexity, and where each series ran out.

A series' time (and peak memory) is fitted as a power law of x over the upper part of its range; along T the time
exponent is compared with 1 for a linear-time mechanism and 2 for a quadratic one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from attnbench.analysis.rows import NOT_RUN, case_order, format_number, measured, natural_key
from attnbench.analysis.series import varying_text

MIN_FIT_POINTS = 3
CONFIDENCE = 0.95
# An exponent agrees with the complexity when the expected value lies within the confidence interval widened
# by this much: constant overheads and causal masking bend real curves slightly even at long T.
SLACK = 0.25
MAX_CI_WIDTH = 1.0  # a wider interval cannot tell linear (1) from quadratic (2): no verdict
EXPECTED_EXPONENT = {"linear": 1.0, "quadratic": 2.0}

ID_COLUMNS = ("run", "name", "mechanism", "variant", "impl", "case", "mode", "level", "dtype", "causal", "fixed")
FIT_COLUMNS = (
    "x_axis", *ID_COLUMNS, "varying", "complexity",
    "time_exponent", "time_low", "time_high", "time_n", "time_points", "time_expected", "time_verdict", "time_note",
    "memory_exponent", "memory_low", "memory_high", "memory_n", "memory_points", "memory_note",
    "largest_x_run", "longest_x_before_oom", "first_oom_x", "not_run", "numerics_failed_at",
)  # fmt: skip


@dataclass(frozen=True)
class Fit:
    """A power law `y ∝ x^exponent` fitted on log-log points, with its confidence interval [low, high]."""

    exponent: float
    low: float
    high: float
    points: tuple[float, ...]
    reason: str = ""  # why there is no fit; empty when there is one

    @property
    def ok(self) -> bool:
        """Whether there is a fit (else `reason` says why not)."""
        return not self.reason

    def text(self) -> str:
        """ "1.98 [1.90, 2.06]", or why there is no fit."""
        return f"{self.exponent:.2f} [{self.low:.2f}, {self.high:.2f}]" if self.ok else f"no fit: {self.reason}"

    def points_text(self, sep: str = ";") -> str:
        """The x values fitted, joined by `sep`."""
        return sep.join(format_number(p) for p in self.points)


def no_fit(reason: str, points: Sequence[float] = ()) -> Fit:
    """A `Fit` that did not happen, and why."""
    return Fit(math.nan, math.nan, math.nan, tuple(points), reason)


def fit_exponent(
    xs: Sequence[float], ys: Sequence[float], *, min_points: int = MIN_FIT_POINTS, confidence: float = CONFIDENCE
) -> Fit:
    """Least squares of log y on log x over the upper part of the range.

    The upper part is the points with x ≥ the (lower) median x (at least the `min_points` largest), where launch and
    other fixed overheads no longer hide the growth. The interval is slope ± t(n−2)·stderr. Points with y ≤ 0
    or NaN are dropped; repeated x values are merged by their median.
    """
    from scipy import stats

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    ux = np.unique(x)
    uy = np.array([np.median(y[x == value]) for value in ux])
    if len(ux) < min_points:
        return no_fit(f"{len(ux)} usable point{'s' * (len(ux) != 1)}, a fit needs {min_points}", ux)
    # the lower median for an even count: 6 lengths give a fit on 4 points, not 3 (t(1) makes useless intervals)
    upper = ux >= min(ux[(len(ux) - 1) // 2], ux[-min_points])
    lx, ly = np.log(ux[upper]), np.log(uy[upper])
    result = stats.linregress(lx, ly)
    half = float(stats.t.ppf(0.5 + confidence / 2, len(lx) - 2) * result.stderr)
    if math.isnan(half) and abs(result.rvalue) > 1 - 1e-9:
        half = 0.0  # points exactly on a line: rounding pushed 1 − r² below 0 and its square root to NaN
    slope = float(result.slope)
    return Fit(slope, slope - half, slope + half, tuple(ux[upper]))


def check_exponent(fit: Fit, expected: float | None, complexity: str | None, where: str = "") -> tuple[str, str]:
    """("agrees" | "disagrees" | "inconclusive" | "no fit" | "", message) for a time exponent against the
    complexity ("" when there is nothing to check against)."""
    if expected is None:
        return "", ""
    if not fit.ok:
        return "no fit", fit.reason
    message = (
        f"fitted {fit.exponent:.2f} [{fit.low:.2f}, {fit.high:.2f}], expected ~{expected:g} for a {complexity} "
        f"mechanism{where}"
    )
    if fit.low - SLACK <= expected <= fit.high + SLACK:
        if fit.high - fit.low > MAX_CI_WIDTH:
            return "inconclusive", f"{message}: the interval is too wide to tell linear from quadratic"
        return "agrees", message
    if fit.exponent < expected:
        why = "costs that grow slower (launches, projections, memory-bound passes) still weigh at these lengths"
    else:
        why = "this implementation grows faster than the mechanism's complexity"
    return "disagrees", f"{message}: {why}"


def fit_series(series: pd.DataFrame) -> pd.DataFrame:
    """One row per series of `series_frame`: time and memory exponents, the check, and where it ran out.

    Columns (`FIT_COLUMNS`): identity (`x_axis`, `run`, `name`, `mechanism`, `variant`, `impl`, `case`, `mode`,
    `level`, `dtype`, `causal`, `fixed`, `complexity`), `time_exponent/low/high/points/n/expected/verdict/note`,
    `memory_exponent/low/high/points/n/note`, and `largest_x_run`, `longest_x_before_oom`, `first_oom_x`,
    `not_run` (other statuses and where), `numerics_failed_at`.
    """
    x = series.attrs["x"]
    varying, per_sequence = series.attrs["varying_axes"], series.attrs["per_sequence"]
    records = [_fit_one(x, varying, per_sequence, rows) for _, rows in series.groupby("series", sort=True)]
    # Runs of one series side by side, so that overlaid runs read as a comparison.
    records.sort(
        key=lambda r: (natural_key(r["name"]), r["impl"], case_order(r["case"]), natural_key(r["fixed"]), r["run"])
    )
    return pd.DataFrame.from_records(records, columns=FIT_COLUMNS)


def _fit_one(x: str, varying_axes: Sequence[str], per_sequence: bool, rows: pd.DataFrame) -> dict[str, Any]:
    """The `fit_series` record of one series."""
    first = rows.iloc[0]
    ok_time, ok_mem = rows[measured(rows, "time_ms")], rows[measured(rows, "peak_mem_bytes")]
    time_fit = fit_exponent(ok_time["x"], ok_time["time_ms"] / ok_time["norm"])
    mem_fit = fit_exponent(ok_mem["x"], ok_mem["peak_mem_bytes"] / ok_mem["norm"])
    complexity = first["complexity"]
    expected = EXPECTED_EXPONENT.get(complexity) if x == "T" else None
    where = " (per sequence: time ÷ B, B varies with T)" if per_sequence and rows["B"].nunique() > 1 else ""
    verdict, note = check_exponent(time_fit, expected, complexity, where)
    record = {"x_axis": x, **{c: first[c] for c in ID_COLUMNS}, "complexity": complexity}
    record["varying"] = varying_text(rows, varying_axes)
    record |= _fit_columns("time", time_fit) | {"time_expected": expected, "time_verdict": verdict}
    record["time_note"] = note or time_fit.reason
    record |= _fit_columns("memory", mem_fit) | {"memory_note": mem_fit.reason}
    return record | wall(rows)


def _fit_columns(prefix: str, fit: Fit) -> dict[str, Any]:
    """A fit as the `<prefix>_exponent/low/high/n/points` columns of a record."""
    return {
        f"{prefix}_exponent": fit.exponent,
        f"{prefix}_low": fit.low,
        f"{prefix}_high": fit.high,
        f"{prefix}_n": len(fit.points) if fit.ok else 0,
        f"{prefix}_points": fit.points_text() if fit.ok else "",
    }


def wall(rows: pd.DataFrame) -> dict[str, Any]:
    """Where a series ran out: the largest x it ran, the longest x before its first OOM, other failures."""
    ran = rows.loc[rows["status"].isin(("ok", "numerics_fail")), "x"]
    oom = rows.loc[rows["status"] == "oom", "x"]
    first_oom = oom.min() if len(oom) else math.nan
    before = ran[ran < first_oom] if len(oom) else ran.iloc[:0]
    failures = [
        f"{status} at {','.join(format_number(v) for v in sorted(set(rows.loc[rows['status'] == status, 'x'])))}"
        for status in NOT_RUN[1:]
        if (rows["status"] == status).any()
    ]
    numerics = sorted(set(rows.loc[rows["numerics_failed"], "x"]))
    return {
        "largest_x_run": ran.max() if len(ran) else math.nan,
        "longest_x_before_oom": before.max() if len(before) else math.nan,
        "first_oom_x": first_oom,
        "not_run": "; ".join(failures),
        "numerics_failed_at": ",".join(format_number(v) for v in numerics),
    }
