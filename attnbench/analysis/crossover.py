"""Crossover lengths: from which T a linear-time mechanism beats the quadratic baseline, in time and in memory.

The baseline is the mechanism `attnbench.mechanisms.CROSSOVER_BASELINE` names; each side is represented by its
best implementation at each length, so the crossover compares what is achievable rather than one kernel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from attnbench.analysis.rows import format_number, measured
from attnbench.mechanisms import CROSSOVER_BASELINE

CROSSOVER_COLUMNS = ("run", "case", "fixed", "name", "metric", "kind", "T_star", "text", "impls", "baseline_oom_from")
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
        for name, rows in panel[panel["complexity"] == "linear"].groupby("name", sort=True):
            for metric, column, better in COMPARED:
                found, impls = _crossover(rows, base, column, better)
                records.append(
                    {"run": run, "case": case, "fixed": fixed, "name": name, "metric": metric, "kind": found.kind,
                     "T_star": found.x, "text": found.text, "impls": impls, "baseline_oom_from": oom_from}
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
