"""Series and panels along an x-axis, and which axes the runs swept.

Two words used throughout the analysis and the figures:
- a *series* is one line of a figure: one run, one mechanism configuration (mechanism, variant, parameters), one
  implementation, one case (mode, level, dtype, causal), with every shape axis other than the x-axis held fixed;
- a *panel* holds every series of one case at one fixed shape, so mechanisms measured alike share a panel.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from attnbench.analysis.rows import AnalysisError, config_name, format_number

AXES = ("T", "D", "d", "B", "H", "G")
AXIS_LABELS = {
    "T": "sequence length T (tokens)",
    "D": "model width D = H·d",
    "d": "head dim d",
    "B": "batch B",
    "H": "query heads H",
    "G": "key/value heads G",
}
# Which axis is drawn when two move together: the knobs a suite turns (T, d, H) before what they imply (D, B).
AXIS_ORDER = ("T", "d", "H", "D", "B", "G")
# The shape axes that may be held fixed along each x-axis. G never is: how many key/value heads there are is each
# mechanism's own business (as many as H, one, or a parameter). An axis that the runs set as a function of x
# (B = max(1, tokens // T) in a sweep at a token budget; d = D/H when D is swept at fixed H) is not held: it
# varies along the series instead.
CANDIDATE_AXES = {
    "T": ("B", "H", "d"),
    "B": ("T", "H", "d"),
    "D": ("B", "T", "H", "d"),
    "d": ("B", "T", "H", "D"),
    "H": ("B", "T", "d", "D"),
    "G": ("B", "T", "H", "d"),
}
SERIES_KEY = ("run", "name", "impl", "case", "fixed")
PANEL_KEY = ("case", "fixed")


def series_frame(frame: pd.DataFrame, x: str) -> pd.DataFrame:
    """The rows that have the x-axis, with the columns that place them in figures along it.

    Adds `name` (the mechanism configuration, without x when x is a parameter), `fixed` ("B=4 H=16 d=64": the
    shape held fixed), `series` (an integer id), `x` (the x value) and `norm`: B where the batch varies along x
    (a token budget), else 1. Time and memory are divided by `norm` for figures and fits, so that they are per
    sequence and their growth in T is the mechanism's, whatever the batch schedule. `attrs` holds `x`,
    `fixed_axes`, `varying_axes` (set by the runs as a function of x) and `per_sequence`.
    """
    if x not in AXES:
        raise AnalysisError(f"x-axis must be one of {list(AXES)}, got {x!r}")
    rows = frame[frame[x].notna()].copy()
    names = zip(rows["mechanism"], rows["variant"], rows["shown_params"], strict=True)
    rows["name"] = [config_name(m, v, p, drop=x) for m, v, p in names]
    rows["x"] = rows[x]
    fixed_axes, varying_axes = _split_axes(rows, x)
    rows["fixed"] = [fixed_text(fixed_axes, values) for values in zip(*(rows[a] for a in fixed_axes), strict=True)]
    rows["series"] = rows.groupby(list(SERIES_KEY), sort=True).ngroup() if len(rows) else []
    per_sequence = "B" in varying_axes
    rows["norm"] = rows["B"] if per_sequence else 1.0
    rows.attrs.update(x=x, fixed_axes=fixed_axes, varying_axes=varying_axes, per_sequence=per_sequence)
    return rows


def _split_axes(rows: pd.DataFrame, x: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(held fixed, varying with x): an axis varies with x when every run sets it from x (one value per x in
    every mechanism, implementation and case) and it takes several values; otherwise it is held."""
    base = ["run", "name", "impl", "case"]
    fixed, varying = [], []
    for axis in CANDIDATE_AXES[x]:
        if rows.empty:
            fixed.append(axis)
            continue
        per_x = rows.groupby([*base, "x"], dropna=False)[axis].nunique(dropna=False).max()
        overall = rows.groupby(base, dropna=False)[axis].nunique(dropna=False).max()
        (varying if per_x <= 1 < overall else fixed).append(axis)
    return tuple(fixed), tuple(varying)


def fixed_text(axes: Sequence[str], values: Sequence[float]) -> str:
    """ "B=4 H=16 d=64": the values of the axes a series holds fixed."""
    return " ".join(f"{axis}={format_number(value)}" for axis, value in zip(axes, values, strict=True))


def varying_text(rows: pd.DataFrame, axes: Sequence[str]) -> str:
    """ "B=16…1": the axes that vary along x, from their value at the smallest x to that at the largest."""
    ordered = rows.sort_values("x")
    return " ".join(
        f"{axis}={format_number(ordered[axis].iloc[0])}…{format_number(ordered[axis].iloc[-1])}"
        for axis in axes
        if ordered[axis].nunique() > 1
    )


def swept(frame: pd.DataFrame, x: str) -> bool:
    """Whether some series of the runs takes two or more values of `x`."""
    return _longest(series_frame(frame, x)) >= 2


def swept_axes(frame: pd.DataFrame) -> list[str]:
    """The axes the runs swept, T first, leaving out an axis that only mirrors one already listed: B when it
    follows T (a token budget), D when it follows d or H (D = H·d). The knobs a suite turns (d, H) come before
    the width D they imply."""
    axes: list[str] = []
    for x in AXIS_ORDER:
        series = series_frame(frame, x)
        if _longest(series) >= 2 and not set(series.attrs["varying_axes"]) & set(axes):
            axes.append(x)
    return axes


def _longest(series: pd.DataFrame) -> int:
    """How many distinct x values the longest series has."""
    return int(series.groupby("series")["x"].nunique().max()) if len(series) else 0


def check_swept(frame: pd.DataFrame, x: str) -> None:
    """Raise `AnalysisError` saying what the runs hold when they did not sweep `x`."""
    if x not in AXES:
        raise AnalysisError(f"x-axis must be one of {list(AXES)}, got {x!r}")
    if swept(frame, x):
        # B set from T (a token budget): along B, T changes too, and what a figure shows is T's doing. (D set
        # from d at a fixed H is only a change of unit, and is allowed.)
        if x != "T" and "T" in series_frame(frame, x).attrs["varying_axes"] and swept(frame, "T"):
            raise AnalysisError(
                f"the runs do not sweep {x} on its own: they set it from T (a token budget, B = tokens // T); "
                "plot against T instead"
            )
        return
    values = sorted({format_number(v) for v in frame[x].dropna()})
    held = f"every row has {x}={values[0]}" if len(values) == 1 else f"no series varies {x} alone"
    if not values:
        held = f"no row records {x}"
    others = [a for a in AXES if a != x and swept(frame, a)]
    raise AnalysisError(f"the runs do not sweep {x}: {held}; swept: {', '.join(others) or 'nothing'}")
