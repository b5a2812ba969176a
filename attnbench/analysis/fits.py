"""Fitted scaling exponents, checked against each mechanism's complexity, and where each series ran out.

A series' time (and peak memory) is fitted as `y = a + b·x^p` over every usable point: `a ≥ 0` is the fixed cost
of a call (launches, Python, synchronisation), which bends the short end of every real curve, and `p` is how the
rest grows. Along T the time exponent is checked against 1 for a linear-time mechanism and 2 for a quadratic one;
the verdict is "agrees" only when the interval excludes the other complexity, so no verdict can be read both ways.
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

MIN_FIT_POINTS = 3  # a plain power law `b·x^p` needs 3 lengths for an interval
MIN_OVERHEAD_POINTS = 4  # `a + b·x^p` needs 4: three parameters and one degree of freedom left for the interval
CONFIDENCE = 0.95
# A complexity is consistent with a fit when its exponent lies within the interval widened by this much: causal
# masking and terms of lower order (projections beside the attention core) bend a real curve slightly. The same
# slack applies to both complexities, so "agrees" with one always means the other is excluded.
SLACK = 0.15
EXPECTED_EXPONENT = {"linear": 1.0, "quadratic": 2.0}
MAX_EXPONENT = 5.0  # the fit's bound: nothing measured here grows faster

ID_COLUMNS = ("run", "name", "mechanism", "variant", "impl", "case", "mode", "level", "dtype", "causal", "fixed")
FIT_COLUMNS = (
    "x_axis", *ID_COLUMNS, "varying", "complexity",
    "time_exponent", "time_low", "time_high", "time_n", "time_points", "time_model", "time_overhead_ms",
    "time_top_slope", "time_expected", "time_verdict", "time_note",
    "memory_exponent", "memory_low", "memory_high", "memory_n", "memory_points", "memory_model", "memory_note",
    "largest_x_run", "longest_x_before_oom", "first_oom_x", "not_run", "numerics_failed_at",
)  # fmt: skip


@dataclass(frozen=True)
class Fit:
    """`y = overhead + b·x^exponent` fitted on the points, with the exponent's confidence interval [low, high] and
    the local slope d log y / d log x at the largest x (`top_slope`: the exponent the top of the range shows)."""

    exponent: float
    low: float
    high: float
    points: tuple[float, ...]
    reason: str = ""  # why there is no fit; empty when there is one
    model: str = ""  # "a+b·x^p" (overhead modelled) or "b·x^p" (too few points to model it)
    overhead: float = math.nan  # a, in the units of y
    top_slope: float = math.nan

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
    """Least squares of log y against log(a + b·x^p) over every usable point, a ≥ 0 (with fewer than
    `MIN_OVERHEAD_POINTS` points, a = 0: a plain power law).

    The interval of p is p ± t(n − k)·stderr, the standard error from the fit's covariance (k = 3 or 2
    parameters): it widens with the scatter of the points about the curve, which includes drift between lengths
    that no single length's samples show. Points with y ≤ 0 or NaN are dropped; repeated x values are merged by
    their median.
    """
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[keep], y[keep]
    ux = np.unique(x)
    uy = np.array([np.median(y[x == value]) for value in ux])
    if len(ux) < min_points:
        return no_fit(f"{len(ux)} usable point{'s' * (len(ux) != 1)}, a fit needs {min_points}", ux)
    with_overhead = len(ux) >= MIN_OVERHEAD_POINTS
    params, jacobian, residuals = _least_squares(np.log(ux / ux[-1]), np.log(uy / uy[-1]), with_overhead)
    covariance = _covariance(jacobian, residuals)
    overhead, scale, exponent = params
    half = float(_t_quantile(confidence, len(ux) - (3 if with_overhead else 2)) * math.sqrt(max(covariance[2, 2], 0.0)))
    top = exponent * scale / (overhead + scale)  # d log y / d log x at the largest x
    return Fit(
        float(exponent), float(exponent - half), float(exponent + half), tuple(ux),
        model="a+b·x^p" if with_overhead else "b·x^p", overhead=float(overhead * uy[-1]), top_slope=float(top),
    )  # fmt: skip


def _least_squares(log_u: np.ndarray, log_y: np.ndarray, with_overhead: bool) -> tuple[np.ndarray, ...]:
    """(A, B, p), the Jacobian in (A, log B, p) and the residuals of the best fit of log_y = log(A + B·u^p), u =
    x / x_max and y scaled by its value there (so that every parameter is of order 1); A = 0 when not
    `with_overhead` (its Jacobian column is then zero). Several starts, the best kept: the overhead and the
    growth trade off at short lengths."""
    from scipy.optimize import least_squares

    def model(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grown = np.exp(theta[1] + theta[2] * log_u)
        total = theta[0] + grown
        columns = [np.ones_like(log_u) / total if with_overhead else np.zeros_like(log_u), grown / total]
        return np.log(total) - log_y, np.column_stack([*columns, grown * log_u / total])

    free = slice(0, 3) if with_overhead else slice(1, 3)

    def full(theta: np.ndarray) -> np.ndarray:
        return theta if with_overhead else np.concatenate([[0.0], theta])

    upper = log_u >= np.median(log_u)
    slope = float(np.clip(np.polyfit(log_u[upper], log_y[upper], 1)[0], 0.1, MAX_EXPONENT))
    bounds = (np.array([0.0, -np.inf, 0.0])[free], np.array([np.inf, np.inf, MAX_EXPONENT])[free])
    best = None
    for start in ((0.0, 0.0, slope), (0.5, math.log(0.5), slope), (0.1, 0.0, 2.0), (0.1, 0.0, 1.0)):
        found = least_squares(
            lambda t: model(full(t))[0], np.array(start)[free], jac=lambda t: model(full(t))[1][:, free],
            bounds=bounds, xtol=1e-12, ftol=1e-12, gtol=1e-12,
        )  # fmt: skip
        if best is None or found.cost < best.cost:
            best = found
    theta = full(best.x)
    residuals, jacobian = model(theta)
    return np.array([theta[0], math.exp(theta[1]), theta[2]]), jacobian, residuals


def _covariance(jacobian: np.ndarray, residuals: np.ndarray) -> np.ndarray:
    """The parameters' covariance s²·(JᵀJ)⁺, s² the residual variance; a parameter held at 0 (a column of zeros)
    gets none. A growth the points cannot separate from the overhead gets a huge variance: no verdict."""
    used = np.any(jacobian != 0, axis=0)
    dof = len(residuals) - int(used.sum())
    variance = float(residuals @ residuals) / dof if dof > 0 else math.inf
    covariance = np.zeros((jacobian.shape[1], jacobian.shape[1]))
    inner = jacobian[:, used].T @ jacobian[:, used]
    covariance[np.ix_(used, used)] = variance * np.linalg.pinv(inner, rcond=1e-12)
    return covariance


def _t_quantile(confidence: float, dof: int) -> float:
    """The two-sided t quantile of `confidence` with `dof` degrees of freedom (infinite with none)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + confidence / 2, dof)) if dof > 0 else math.inf


def consistent(fit: Fit, exponent: float) -> bool:
    """Whether `exponent` lies within the fit's interval widened by `SLACK`."""
    return fit.low - SLACK <= exponent <= fit.high + SLACK


def check_exponent(fit: Fit, expected: float | None, complexity: str | None, where: str = "") -> tuple[str, str]:
    """("agrees" | "disagrees" | "inconclusive" | "no fit" | "", message) for a time exponent against the
    complexity ("" when there is nothing to check against). "agrees" only when the interval (± `SLACK`) holds the
    expected exponent and no other complexity's; "inconclusive" when it holds both."""
    if expected is None:
        return "", ""
    if not fit.ok:
        return "no fit", fit.reason
    message = (
        f"fitted {fit.exponent:.2f} [{fit.low:.2f}, {fit.high:.2f}] ({fit.model}; slope {fit.top_slope:.2f} at the "
        f"largest length), expected ~{expected:g} for a {complexity} mechanism{where}"
    )
    others = {name: value for name, value in EXPECTED_EXPONENT.items() if value != expected}
    also = [name for name, value in others.items() if consistent(fit, value)]
    if consistent(fit, expected):
        if also:
            return (
                "inconclusive",
                f"{message}: the interval also holds ~{others[also[0]]:g} ({also[0]}), so it cannot tell",
            )
        return "agrees", message
    if fit.exponent < expected:
        why = "costs that grow slower (projections, memory-bound passes) still weigh at these lengths"
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
    record |= {"time_overhead_ms": time_fit.overhead, "time_top_slope": time_fit.top_slope}
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
        f"{prefix}_model": fit.model,
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
