"""Crossover lengths: from which T a linear-time mechanism beats the quadratic baseline, in time and in memory.

The baseline is the mechanism `attnbench.mechanisms.CROSSOVER_BASELINE` names; each side is represented by its
best implementation at each length, so the crossover compares what is achievable rather than one kernel. The
time crossover T* comes with a bootstrap interval: every row's kept timing samples are resampled, the medians,
the best implementations and the crossing found again, `RESAMPLES` times.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from attnbench.analysis.rows import format_number, measured
from attnbench.mechanisms import CROSSOVER_BASELINE

CROSSOVER_COLUMNS = (
    "run", "case", "fixed", "name", "metric", "kind", "T_star", "T_low", "T_high", "text", "impls", "baseline_oom_from",
)  # fmt: skip
RESAMPLES = 1000
CONFIDENCE = 0.95
MAX_RESAMPLED = 200  # samples kept per row for resampling (evenly spaced order statistics): bounded cost
# (metric, row column, what "ahead" means for it)
COMPARED = (("time", "time_ms", "faster"), ("memory", "peak_mem_bytes", "leaner"))


@dataclass(frozen=True)
class Crossover:
    """Where a ratio (mechanism / baseline) falls below 1 for good: `kind` is "within" (at `x`), "below" or
    "above" the swept range, or "none" (no x measured by both)."""

    kind: str
    x: float
    text: str


def find_crossover(xs: Sequence[float], ratios: Sequence[float], better: str = "faster", axis: str = "T") -> Crossover:
    """The x from which `ratios` stays below 1, by linear interpolation of log ratio in log x.

    `xs` ascending. The crossing reported is the last one (after it the mechanism stays ahead), so noise around
    1 at short lengths does not hide where it wins for good.
    """
    x, r = np.asarray(xs, dtype=float), np.asarray(ratios, dtype=float)
    if len(x) == 0:
        return Crossover("none", math.nan, f"no {axis} measured by both")
    behind = np.log(r) > 0
    if not behind.any():
        return Crossover("below", math.nan, f"below the swept range ({better} already at {axis}={format_number(x[0])})")
    if behind[-1]:
        return Crossover(
            "above", math.nan, f"above the swept range (still not {better} at {axis}={format_number(x[-1])})"
        )
    i = int(np.flatnonzero(behind)[-1])
    l0, l1 = np.log(r[i]), np.log(r[i + 1])
    star = float(np.exp(np.log(x[i]) + l0 / (l0 - l1) * (np.log(x[i + 1]) - np.log(x[i]))))
    span = f"between {format_number(x[i])} and {format_number(x[i + 1])}"
    return Crossover(
        "within", star, f"{axis}* ≈ {star:.0f} ({span})" if star >= 10 else f"{axis}* ≈ {star:.3g} ({span})"
    )


def crossovers(series: pd.DataFrame) -> pd.DataFrame:
    """For a T `series_frame`: the length from which each linear-time mechanism's best implementation is
    faster (and leaner) than the baseline's best implementation in the same run, case and shape.

    Columns (`CROSSOVER_COLUMNS`): `run`, `case`, `fixed`, `name`, `metric` ("time" | "memory"), `kind`,
    `T_star`, `text`, `impls` (the best implementations where it was decided), `baseline_oom_from`.
    """
    records = []
    for (run, case, fixed), panel in series.groupby(["run", "case", "fixed"], sort=True):
        base = panel[panel["mechanism"] == CROSSOVER_BASELINE]
        if base.empty:
            continue
        oom_from = _all_oom_from(base)
        for name, rows in panel[(panel["complexity"] == "linear") & (panel["mechanism"] != CROSSOVER_BASELINE)].groupby(
            "name", sort=True
        ):
            for metric, column, better in COMPARED:
                found, impls = _crossover(rows, base, column, better)
                low, high, text = math.nan, math.nan, found.text
                if metric == "time":
                    low, high, text = crossover_interval(rows, base, found)
                records.append(
                    {"run": run, "case": case, "fixed": fixed, "name": name, "metric": metric, "kind": found.kind,
                     "T_star": found.x, "T_low": low, "T_high": high, "text": text, "impls": impls,
                     "baseline_oom_from": oom_from}
                )  # fmt: skip
    return pd.DataFrame.from_records(records, columns=CROSSOVER_COLUMNS)


def _envelope(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """The best implementation at each x: columns `value` (the smallest `column`) and `impl`, indexed by x."""
    good = rows[measured(rows, column)]
    if good.empty:
        return pd.DataFrame(columns=["value", "impl"], dtype=float)
    values = good[column] / good["norm"]
    best = good.loc[values.groupby(good["x"]).idxmin()]
    value = best[column] / best["norm"]
    return pd.DataFrame({"value": value.to_numpy(), "impl": best["impl"].to_numpy()}, index=best["x"].to_numpy())


def _crossover(rows: pd.DataFrame, base: pd.DataFrame, column: str, better: str) -> tuple[Crossover, str]:
    """The crossover of one mechanism against the baseline in `column`, and which implementations decided it
    ("fast vs <baseline> fused at T=2048": those at the first length where it is ahead, or at the range's edge)."""
    mine, theirs = _envelope(rows, column), _envelope(base, column)
    common = sorted(set(mine.index) & set(theirs.index))
    ratios = [mine.at[t, "value"] / theirs.at[t, "value"] for t in common]
    found = find_crossover(common, ratios, better)
    if not common:
        return found, ""
    at = {"within": None, "below": common[0], "above": common[-1]}[found.kind]
    if at is None:
        at = min(t for t in common if t >= found.x)
    return found, f"{mine.at[at, 'impl']} vs {CROSSOVER_BASELINE} {theirs.at[at, 'impl']} at T={format_number(at)}"


def _all_oom_from(base: pd.DataFrame) -> float:
    """The smallest T from which every baseline implementation ran out of memory (NaN if none did)."""
    ran = base.loc[base["status"].isin(("ok", "numerics_fail")), "x"]
    oom = base.loc[(base["status"] == "oom") & (base["x"] > (ran.max() if len(ran) else -math.inf)), "x"]
    return float(oom.min()) if len(oom) else math.nan


def crossover_interval(
    rows: pd.DataFrame, base: pd.DataFrame, found: Crossover, resamples: int = RESAMPLES
) -> tuple[float, float, str]:
    """(low, high, text) of the time crossover: the percentile interval of T* over bootstrap replicates of every
    row's kept samples (`time_samples_ms`), and `found.text` with it. A replicate whose crossing falls below the
    swept range counts as 0, above it as infinity, so the interval says when the range cannot pin T*. NaN and
    the text unchanged when a row has no samples or there was no common length."""
    mine, theirs = rows[measured(rows, "time_ms")], base[measured(base, "time_ms")]
    xs = np.array(sorted(set(mine["x"]) & set(theirs["x"])), dtype=float)
    has_samples = [isinstance(s, list) and len(s) >= 2 for s in pd.concat([mine, theirs])["time_samples_ms"]]
    if found.kind == "none" or not len(xs) or not all(has_samples):
        return math.nan, math.nan, found.text + (" (no samples kept: no interval)" if len(xs) else "")
    rng = np.random.default_rng(0)  # fixed: the same runs always print the same interval
    ratios = _best_replicates(mine, xs, rng, resamples) / _best_replicates(theirs, xs, rng, resamples)
    stars = crossing_replicates(xs, ratios)
    tail = (1 - CONFIDENCE) / 2
    low, high = float(np.quantile(stars, tail, method="lower")), float(np.quantile(stars, 1 - tail, method="higher"))
    if low == high and low in (0.0, math.inf):
        return low, high, found.text  # every replicate on the same side of the range: the text says it all
    return low, high, f"{found.text}, {CONFIDENCE:.0%} interval [{_edge(low, xs)}, {_edge(high, xs)}]"


def _edge(value: float, xs: np.ndarray) -> str:
    """An end of a T* interval: "<128" below the swept range, ">8192" above it, else the length."""
    if value == 0:
        return f"<{format_number(xs[0])}"
    return f">{format_number(xs[-1])}" if math.isinf(value) else _t_text(value)


def _t_text(value: float) -> str:
    """A crossing length as printed: whole tokens from 10 up."""
    return f"{value:.0f}" if value >= 10 else f"{value:.3g}"


def _best_replicates(rows: pd.DataFrame, xs: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """(resamples, len(xs)): at each x, the smallest bootstrap median over the implementations (per sequence)."""
    best = np.full((resamples, len(xs)), np.inf)
    for x, samples, norm in zip(rows["x"], rows["time_samples_ms"], rows["norm"], strict=True):
        column = np.searchsorted(xs, x)
        if column < len(xs) and xs[column] == x:
            kept = np.sort(np.asarray(samples, dtype=float))
            if len(kept) > MAX_RESAMPLED:
                kept = kept[np.round(np.linspace(0, len(kept) - 1, MAX_RESAMPLED)).astype(int)]
            medians = np.median(kept[rng.integers(0, len(kept), (resamples, len(kept)))], axis=1) / norm
            best[:, column] = np.minimum(best[:, column], medians)
    return best


def crossing_replicates(xs: np.ndarray, ratios: np.ndarray) -> np.ndarray:
    """`find_crossover` for every row of `ratios` (replicates × lengths) at once: the crossing x where it lies
    within the range, 0 where the mechanism is already ahead everywhere, infinity where it is still behind at
    the largest length."""
    logs = np.log(ratios)
    behind = logs > 0
    last = behind.shape[1] - 1 - np.argmax(behind[:, ::-1], axis=1)  # the last length where it is behind
    stars = np.where(behind.any(axis=1), np.inf, 0.0)
    within = np.flatnonzero(behind.any(axis=1) & ~behind[:, -1])
    i = last[within]
    l0, l1 = logs[within, i], logs[within, i + 1]
    lx = np.log(xs)
    stars[within] = np.exp(lx[i] + l0 / (l0 - l1) * (lx[i + 1] - lx[i]))
    return stars
