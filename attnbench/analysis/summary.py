"""Scaling analysis of attnbench results: fitted exponents, crossovers with softmax MHA, OOM walls.

Pure pandas/numpy/scipy (matplotlib is never imported here): `attnbench plot` draws what this module computes,
and `load_runs` + `summarize` work on their own in a notebook.

Two words used throughout:
- a *series* is one line of a figure: one run, one mechanism configuration (mechanism, variant, parameters), one
  implementation, one case (mode, level, dtype, causal), with every shape axis other than the x-axis held fixed;
- a *panel* holds every series of one case at one fixed shape, so mechanisms measured alike share a panel.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench.results.files import ROW_FIELDS, find_runs, read_meta, read_rows

AXES = ("T", "D", "d", "B", "H", "G")
AXIS_LABELS = {
    "T": "sequence length T (tokens)",
    "D": "model width D = H·d",
    "d": "head dim d",
    "B": "batch B",
    "H": "query heads H",
    "G": "key/value heads G",
}
METRICS = ("time", "memory", "throughput", "speedup")
# Which axis is drawn when two move together: the knobs a suite turns (T, d, H) before what they imply (D, B).
AXIS_ORDER = ("T", "d", "H", "D", "B", "G")
NOT_RUN = ("oom", "unsupported", "error", "timeout", "crash")  # statuses of cases that produced no timing
BASELINE = "mha"  # what linear-time mechanisms are compared with for the crossover length
REFERENCE_IMPL = "reference"  # what speed-ups are measured against
MIN_FIT_POINTS = 3
CONFIDENCE = 0.95
# An exponent agrees with the complexity when the expected value lies within the confidence interval widened
# by this much: constant overheads and causal masking bend real curves slightly even at long T.
SLACK = 0.25
MAX_CI_WIDTH = 1.0  # a wider interval cannot tell linear (1) from quadratic (2): no verdict
EXPECTED_EXPONENT = {"linear": 1.0, "quadratic": 2.0}
# Complexity in T of mechanisms the registry does not know (results of a mechanism registered elsewhere, or
# read on a checkout that lacks it), from MECHANISMS.md §6; the registry's own value wins when it has one.
KNOWN_COMPLEXITY = {
    "mha": "quadratic",
    "gqa": "quadratic",
    "mqa": "quadratic",
    "tpa": "quadratic",
    "tssa": "linear",
    "xca": "linear",
    "aft": "linear",
}
# Variants whose complexity differs from their mechanism's: AFT-full mixes every pair of tokens.
VARIANT_COMPLEXITY = {("aft", "full"): "quadratic"}

# The shape axes that may be held fixed along each x-axis (G never is: it follows H for mha, is 1 for mqa and a
# parameter of gqa). An axis that the runs set as a function of x (B = max(1, tokens // T) in a sweep at a
# token budget; d = D/H when D is swept at fixed H) is not held: it varies along the series instead.
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
_NUMERIC = (
    "B", "T", "H", "G", "D", "d", "time_ms", "time_p20_ms", "time_p80_ms", "peak_mem_bytes", "flops", "bytes",
    "tflops", "gbps",
)  # fmt: skip
_MODE_ORDER = {"fwd": 0, "bwd": 1, "fwd_bwd": 2}


class AnalysisError(ValueError):
    """Results that cannot answer the question asked (no rows, an axis the runs did not sweep, a bad filter)."""


@dataclass(frozen=True)
class RunInfo:
    """One run folder: where it is, what it is called in figures and tables, what it measured on."""

    path: Path
    name: str
    label: str
    suite: str
    device: str
    commit: str
    ceilings: Mapping[str, Any]
    rows: int


def load_runs(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    runs: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
) -> tuple[list[RunInfo], pd.DataFrame]:
    """The runs at or below `paths` and their rows, prepared for analysis (see `prepare`).

    `runs` keeps only runs whose name matches one of the glob patterns; `labels` renames runs (keys: a run's
    folder name, its displayed name or its path) for overlaying several runs of one suite. Raises
    `ResultsError` for a missing path or an unreadable run, `AnalysisError` when nothing is left to analyse.
    """
    roots = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    found = list(dict.fromkeys(run for root in roots for run in find_runs(root)))
    where = ", ".join(map(str, roots))
    if not found:
        raise AnalysisError(f"{where}: no attnbench runs found (no meta.json at or below it)")
    names = _run_names(found)
    chosen = _choose_runs(found, names, runs)
    label_of = _run_labels(chosen, names, labels or {})
    infos, rows = [], []
    for path in chosen:
        meta, run_rows = read_meta(path), read_rows(path)
        infos.append(_run_info(path, names[path], label_of[path], meta, len(run_rows)))
        rows.extend({**row, "run": label_of[path], "run_dir": str(path)} for row in run_rows)
    if not rows:
        raise AnalysisError(f"{where}: the runs found hold no result rows yet ({', '.join(names.values())})")
    return infos, prepare(pd.DataFrame(rows))


def _run_names(paths: list[Path]) -> dict[Path, str]:
    """Folder names, lengthened by their parents until no two runs share one."""
    for depth in range(1, 8):
        names = {path: "/".join(path.resolve().parts[-depth:]) for path in paths}
        if len(set(names.values())) == len(names):
            return names
    return {path: str(path) for path in paths}


def _choose_runs(paths: list[Path], names: dict[Path, str], patterns: Sequence[str]) -> list[Path]:
    if not patterns:
        return paths
    chosen = [
        p for p in paths if any(fnmatch.fnmatch(names[p], pat) or fnmatch.fnmatch(p.name, pat) for pat in patterns)
    ]
    if not chosen:
        raise AnalysisError(f"no run matches {list(patterns)}; runs found: {', '.join(names.values())}")
    return chosen


def _run_labels(paths: list[Path], names: dict[Path, str], labels: Mapping[str, str]) -> dict[Path, str]:
    label_of = {path: names[path] for path in paths}
    for key, label in labels.items():
        matches = [p for p in paths if key in (names[p], p.name) or Path(key).resolve() == p.resolve()]
        if not matches:
            raise AnalysisError(f"--label {key}={label}: no such run; runs: {', '.join(names[p] for p in paths)}")
        for path in matches:
            label_of[path] = label
    repeated = sorted({label for label in label_of.values() if list(label_of.values()).count(label) > 1})
    if repeated:
        raise AnalysisError(f"two runs would share the label {repeated[0]!r}; give each run its own label")
    return label_of


def _run_info(path: Path, name: str, label: str, meta: Mapping[str, Any], rows: int) -> RunInfo:
    device = meta.get("device") or {}
    git = meta.get("git") or {}
    commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    return RunInfo(
        path=path,
        name=name,
        label=label,
        suite=(meta.get("suite") or {}).get("name") or "?",
        device=device.get("name") or device.get("type") or "unknown device",
        commit=commit,
        ceilings=meta.get("ceilings") or {},
        rows=rows,
    )


@cache
def expected_complexity(mechanism: str, variant: str = "") -> str | None:
    """ "linear" or "quadratic" in T for a mechanism (and variant), or None when nothing says."""
    if (mechanism, variant) in VARIANT_COMPLEXITY:
        return VARIANT_COMPLEXITY[mechanism, variant]
    try:
        from attnbench.mechanisms import registry

        return registry.get(mechanism).complexity
    except (ImportError, ValueError):
        return KNOWN_COMPLEXITY.get(mechanism)


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with typed columns and what the analysis derives from each row.

    Adds: `case` ("fwd core bf16 causal"), `complexity`, `numerics_failed` (status
    numerics_fail, or numerics_ok False), and TF/s and GB/s where a row has FLOPs or bytes but no rate.
    """
    frame = frame.copy()
    for column in ROW_FIELDS:
        if column not in frame:
            frame[column] = None
    for column in _NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype(float)
    frame["D"] = frame["D"].fillna(frame["H"] * frame["d"])
    for column in ("mechanism", "impl", "mode", "level", "dtype"):
        frame[column] = frame[column].fillna("?").astype(str)
    frame["variant"] = frame["variant"].fillna("").astype(str)
    frame["params"] = [p if isinstance(p, Mapping) else {} for p in frame["params"]]
    frame["shown_params"] = _shown_params(frame)
    frame["causal"] = frame["causal"].fillna(False).astype(bool)
    frame["status"] = frame["status"].fillna("error").astype(str)
    frame["numerics_failed"] = (frame["status"] == "numerics_fail") | frame["numerics_ok"].eq(False)
    frame["tflops"] = frame["tflops"].fillna(frame["flops"] / frame["time_ms"] / 1e9)
    frame["gbps"] = frame["gbps"].fillna(frame["bytes"] / frame["time_ms"] / 1e6)
    frame["case"] = [
        case_name(*values)
        for values in zip(frame["mode"], frame["level"], frame["dtype"], frame["causal"], strict=True)
    ]
    frame["complexity"] = [expected_complexity(m, v) for m, v in zip(frame["mechanism"], frame["variant"], strict=True)]
    return frame


def natural_key(text: str) -> tuple:
    """Sort key that orders the numbers in a text by value: "T=4096" before "T=16384", "G=2" before "G=16"."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text))


def case_name(mode: str, level: str, dtype: str, causal: bool) -> str:
    return f"{mode} {level} {dtype}" + (" causal" if causal else "")


def case_order(case: str) -> tuple:
    mode, level, dtype, *causal = case.split()
    return (_MODE_ORDER.get(mode, 9), level, dtype, bool(causal))


def measured(frame: pd.DataFrame, column: str) -> pd.Series:
    """Rows whose `column` is a measurement to draw and fit: status ok, numerics not failed, value > 0."""
    value = frame[column]
    return (frame["status"] == "ok") & ~frame["numerics_failed"] & value.notna() & (value > 0)


def select(frame: pd.DataFrame, mechanisms: Sequence[str] = (), impls: Sequence[str] = ()) -> pd.DataFrame:
    """Rows of the named mechanisms ("aft", or "aft:simple" for one variant) and implementations."""
    if mechanisms:
        with_variant = frame["mechanism"] + ":" + frame["variant"]
        frame = frame[_matching(frame, "mechanism", mechanisms, frame["mechanism"], with_variant)]
    if impls:
        frame = frame[_matching(frame, "implementation", impls, frame["impl"])]
    return frame


def _matching(frame: pd.DataFrame, what: str, names: Sequence[str], *columns: pd.Series) -> pd.Series:
    keep = pd.Series(False, index=frame.index)
    for name in names:
        hit = pd.Series(False, index=frame.index)
        for column in columns:
            hit |= column == name
        if not hit.any():
            held = sorted(set(columns[-1]) | set(columns[0]))
            raise AnalysisError(f"no rows for {what} {name!r}; the runs hold {', '.join(held)}")
        keep |= hit
    return keep


def _shown_params(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Per row, the parameters that tell apart the configurations of its mechanism (and variant) in these
    runs: `gqa[G=2]` and `gqa[G=4]` when both were run, plain `gqa` when only one was (see `held_params`)."""
    differing = {}
    for key, params in frame.groupby(["mechanism", "variant"])["params"]:
        values: dict[str, set[str]] = {}
        for row_params in params:
            for name, value in row_params.items():
                values.setdefault(name, set()).add(repr(value))
        differing[key] = {name for name, seen in values.items() if len(seen) > 1}
    rows = zip(frame["mechanism"], frame["variant"], frame["params"], strict=True)
    return [{k: v for k, v in p.items() if k in differing[m, var]} for m, var, p in rows]


def held_params(frame: pd.DataFrame) -> dict[str, str]:
    """ "gqa" → "G=4": the parameters every row of a mechanism (and variant) shares, not shown in its name."""
    held = {}
    for (mechanism, variant), rows in frame.groupby(["mechanism", "variant"]):
        first, shown = rows["params"].iloc[0], rows["shown_params"].iloc[0]
        # None is an unset default; the variant's own parameter is already in the name ("aft:simple")
        shared = {k: v for k, v in first.items() if v is not None and k not in shown and str(v) != variant}
        if shared:
            held[config_name(mechanism, variant, {})] = ", ".join(f"{k}={v}" for k, v in sorted(shared.items()))
    return held


def config_name(mechanism: str, variant: str, params: Mapping[str, Any], drop: str | None = None) -> str:
    """ "gqa[G=4]", "aft:local[window=64]": the mechanism, its variant and the parameters given (but `drop`)."""
    base = f"{mechanism}:{variant}" if variant else mechanism
    shown = [
        f"{key}={value}"
        for key, value in sorted(params.items())
        if key != drop and value is not None and not (variant and str(value) == variant)
    ]
    return base + (f"[{','.join(shown)}]" if shown else "")


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
    return " ".join(f"{axis}={format_number(value)}" for axis, value in zip(axes, values, strict=True))


def varying_text(rows: pd.DataFrame, axes: Sequence[str]) -> str:
    """ "B=16…1": the axes that vary along x, from their value at the smallest x to that at the largest."""
    ordered = rows.sort_values("x")
    return " ".join(
        f"{axis}={format_number(ordered[axis].iloc[0])}…{format_number(ordered[axis].iloc[-1])}"
        for axis in axes
        if ordered[axis].nunique() > 1
    )


def format_number(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


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
        return not self.reason

    def text(self) -> str:
        return f"{self.exponent:.2f} [{self.low:.2f}, {self.high:.2f}]" if self.ok else f"no fit: {self.reason}"

    def points_text(self, sep: str = ";") -> str:
        return sep.join(format_number(p) for p in self.points)


def no_fit(reason: str, points: Sequence[float] = ()) -> Fit:
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

    Columns: identity (`x_axis`, `run`, `name`, `mechanism`, `variant`, `impl`, `case`, `mode`, `level`,
    `dtype`, `causal`, `fixed`, `complexity`), `time_exponent/low/high/points/n/expected/verdict/note`,
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
    return pd.DataFrame.from_records(records, columns=_FIT_COLUMNS)


_ID_COLUMNS = ("run", "name", "mechanism", "variant", "impl", "case", "mode", "level", "dtype", "causal", "fixed")
_FIT_COLUMNS = (
    "x_axis", *_ID_COLUMNS, "varying", "complexity",
    "time_exponent", "time_low", "time_high", "time_n", "time_points", "time_expected", "time_verdict", "time_note",
    "memory_exponent", "memory_low", "memory_high", "memory_n", "memory_points", "memory_note",
    "largest_x_run", "longest_x_before_oom", "first_oom_x", "not_run", "numerics_failed_at",
)  # fmt: skip


def _fit_one(x: str, varying_axes: Sequence[str], per_sequence: bool, rows: pd.DataFrame) -> dict[str, Any]:
    first = rows.iloc[0]
    ok_time, ok_mem = rows[measured(rows, "time_ms")], rows[measured(rows, "peak_mem_bytes")]
    time_fit = fit_exponent(ok_time["x"], ok_time["time_ms"] / ok_time["norm"])
    mem_fit = fit_exponent(ok_mem["x"], ok_mem["peak_mem_bytes"] / ok_mem["norm"])
    complexity = first["complexity"]
    expected = EXPECTED_EXPONENT.get(complexity) if x == "T" else None
    where = " (per sequence: time ÷ B, B varies with T)" if per_sequence and rows["B"].nunique() > 1 else ""
    verdict, note = check_exponent(time_fit, expected, complexity, where)
    record = {"x_axis": x, **{c: first[c] for c in _ID_COLUMNS}, "complexity": complexity}
    record["varying"] = varying_text(rows, varying_axes)
    record |= _fit_columns("time", time_fit) | {"time_expected": expected, "time_verdict": verdict}
    record["time_note"] = note or time_fit.reason
    record |= _fit_columns("memory", mem_fit) | {"memory_note": mem_fit.reason}
    return record | wall(rows)


def _fit_columns(prefix: str, fit: Fit) -> dict[str, Any]:
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


def _envelope(rows: pd.DataFrame, column: str) -> pd.DataFrame:
    """The best implementation at each x: columns `value` (the smallest `column`) and `impl`, indexed by x."""
    good = rows[measured(rows, column)]
    if good.empty:
        return pd.DataFrame(columns=["value", "impl"], dtype=float)
    values = good[column] / good["norm"]
    best = good.loc[values.groupby(good["x"]).idxmin()]
    value = best[column] / best["norm"]
    return pd.DataFrame({"value": value.to_numpy(), "impl": best["impl"].to_numpy()}, index=best["x"].to_numpy())


def crossovers(series: pd.DataFrame) -> pd.DataFrame:
    """For a T `series_frame`: the length from which each linear-time mechanism's best implementation is
    faster (and leaner) than the best softmax MHA implementation of the same run, case and shape.

    Columns: `run`, `case`, `fixed`, `name`, `metric` ("time" | "memory"), `kind`, `T_star`, `text`,
    `impls` (the best implementations where it was decided), `baseline_oom_from`.
    """
    records = []
    for (run, case, fixed), panel in series.groupby(["run", "case", "fixed"], sort=True):
        base = panel[panel["mechanism"] == BASELINE]
        if base.empty:
            continue
        oom_from = _all_oom_from(base)
        for name, rows in panel[panel["complexity"] == "linear"].groupby("name", sort=True):
            for metric, column, better in (("time", "time_ms", "faster"), ("memory", "peak_mem_bytes", "leaner")):
                found, impls = _crossover(rows, base, column, better)
                records.append(
                    {"run": run, "case": case, "fixed": fixed, "name": name, "metric": metric, "kind": found.kind,
                     "T_star": found.x, "text": found.text, "impls": impls, "baseline_oom_from": oom_from}
                )  # fmt: skip
    return pd.DataFrame.from_records(records, columns=CROSSOVER_COLUMNS)


CROSSOVER_COLUMNS = ("run", "case", "fixed", "name", "metric", "kind", "T_star", "text", "impls", "baseline_oom_from")


def _crossover(rows: pd.DataFrame, base: pd.DataFrame, column: str, better: str) -> tuple[Crossover, str]:
    mine, theirs = _envelope(rows, column), _envelope(base, column)
    common = sorted(set(mine.index) & set(theirs.index))
    ratios = [mine.at[t, "value"] / theirs.at[t, "value"] for t in common]
    found = find_crossover(common, ratios, better)
    if not common:
        return found, ""
    at = {"within": None, "below": common[0], "above": common[-1]}[found.kind]
    if at is None:
        at = min(t for t in common if t >= found.x)
    return found, f"{mine.at[at, 'impl']} vs {BASELINE} {theirs.at[at, 'impl']} at T={format_number(at)}"


def _all_oom_from(base: pd.DataFrame) -> float:
    """The smallest T from which every baseline implementation ran out of memory (NaN if none did)."""
    ran = base.loc[base["status"].isin(("ok", "numerics_fail")), "x"]
    oom = base.loc[(base["status"] == "oom") & (base["x"] > (ran.max() if len(ran) else -math.inf)), "x"]
    return float(oom.min()) if len(oom) else math.nan


@dataclass
class Summary:
    """What `summarize` found: the runs, the fits (one row per series and x-axis), the crossovers, as tables
    and as a Markdown text."""

    runs: list[RunInfo]
    fits: pd.DataFrame
    crossovers: pd.DataFrame
    markdown: str

    def write(self, out_dir: Path, figures: Sequence[Path] = ()) -> list[Path]:
        """Write summary.md (with the list of figures), summary.csv (the fits) and crossover.csv."""
        out_dir = Path(out_dir)
        text = self.markdown
        if figures:
            text += "\n## Figures\n\n" + "".join(f"- {Path(f).name}\n" for f in figures)
        written = [out_dir / "summary.md", out_dir / "summary.csv", out_dir / "crossover.csv"]
        written[0].write_text(text)
        self.fits.to_csv(written[1], index=False)
        self.crossovers.to_csv(written[2], index=False)
        return written


def summarize(frame: pd.DataFrame, runs: Sequence[RunInfo], axes: Sequence[str] = ("T",)) -> Summary:
    """Fits along every axis in `axes`, crossovers and OOM walls along T, and their Markdown report."""
    fits, crossing = [], pd.DataFrame()
    for x in axes:
        series = series_frame(frame, x)
        fits.append(fit_series(series))
        if x == "T":
            crossing = crossovers(series)
    table = pd.concat(fits, ignore_index=True) if fits else pd.DataFrame(columns=_FIT_COLUMNS)
    if crossing.empty:
        crossing = pd.DataFrame(columns=CROSSOVER_COLUMNS)
    markdown = render_markdown(list(runs), table, crossing, frame)
    return Summary(list(runs), table, crossing, markdown)


def render_markdown(runs: list[RunInfo], fits: pd.DataFrame, crossing: pd.DataFrame, frame: pd.DataFrame) -> str:
    parts = ["# attnbench summary\n", _runs_section(runs), _params_section(frame)]
    for x in dict.fromkeys(fits["x_axis"]):
        parts.append(_fits_section(x, fits[fits["x_axis"] == x], several_runs=len(runs) > 1))
    if "T" in set(fits["x_axis"]):
        parts.append(_crossover_section(crossing, frame))
    parts.append(_walls_section(fits))
    parts.append(_numerics_section(frame))
    return "\n".join(part for part in parts if part)


def _runs_section(runs: list[RunInfo]) -> str:
    rows = []
    for run in runs:
        ceilings = run.ceilings
        matmul = ceilings.get("matmul_tflops")
        copy = ceilings.get("copy_gbps")
        rows.append([
            run.label, run.suite, run.device, run.commit, str(run.rows),
            f"{matmul:.3g} TFLOP/s ({ceilings.get('matmul_dtype', '?')})" if matmul else "—",
            f"{copy:.4g} GB/s" if copy else "—",
        ])  # fmt: skip
    headers = ["run", "suite", "device", "commit", "rows", "matmul ceiling", "copy ceiling"]
    return "## Runs\n\n" + md_table(headers, rows)


def _params_section(frame: pd.DataFrame) -> str:
    held = held_params(frame)
    if not held:
        return ""
    return "Mechanism parameters shared by every row: " + "; ".join(f"{k} {v}" for k, v in held.items()) + ".\n"


def _fits_section(x: str, fits: pd.DataFrame, several_runs: bool) -> str:
    lines = [
        f"## Scaling exponents in {x}\n",
        f"Least squares on log-log points with {x} ≥ the series' (lower) median {x} (at least the {MIN_FIT_POINTS} "
        "largest), "
        f"{CONFIDENCE:.0%} interval from the t distribution; cases that failed numerics are left out. Against the "
        "mechanism's complexity: ✓ agrees, ✗ disagrees (see below), ? the interval is too wide to tell.\n",
    ]
    headers = [*(["run"] if several_runs else []), "mechanism", "impl", "case", "shape",
               "time exponent [95% CI]", "points", "expected", "memory exponent [95% CI]", "points"]  # fmt: skip
    if (fits["varying"].str.contains("B=")).any():
        lines.append(
            f"B varies with {x} in these runs (a token budget): exponents are of time and memory per sequence (÷ B), "
            "which grow as the mechanism's cost does whatever the batch schedule.\n"
        )
    rows = []
    for record in fits[fits["largest_x_run"].notna()].itertuples(index=False):
        expected = "" if pd.isna(record.time_expected) else f"~{record.time_expected:g}"
        mark = {"agrees": " ✓", "disagrees": " ✗", "inconclusive": " ?"}.get(record.time_verdict, "")
        rows.append([
            *([record.run] if several_runs else []), record.name, record.impl, record.case,
            record.fixed + (f", {record.varying}" if record.varying else ""),
            _fit_cell(record.time_exponent, record.time_low, record.time_high, record.time_note),
            _points_cell(record.time_points), expected + mark,
            _fit_cell(record.memory_exponent, record.memory_low, record.memory_high, record.memory_note),
            _points_cell(record.memory_points),
        ])  # fmt: skip
    lines.append(md_table(headers, rows))
    disagreements = fits[fits["time_verdict"] == "disagrees"]
    if len(disagreements):
        lines.append("\n**Exponents that disagree with the mechanism's complexity:**\n")
        lines.extend(
            f"- {r.name} {r.impl} ({r.case}, {r.fixed}{', ' + r.run if several_runs else ''}): {r.time_note}"
            for r in disagreements.itertuples(index=False)
        )
    return "\n".join(lines) + "\n"


def _fit_cell(exponent: float, low: float, high: float, note: str) -> str:
    if pd.isna(exponent):
        return "no fit (" + (note.split(",")[0] if note else "no data") + ")"
    return f"{exponent:.2f} [{low:.2f}, {high:.2f}]"


def _points_cell(points: str) -> str:
    if not points:
        return ""
    values = points.split(";")
    return f"{len(values)} ({values[0]}–{values[-1]})"


def _crossover_section(crossing: pd.DataFrame, frame: pd.DataFrame) -> str:
    title = f"## Crossover with softmax {BASELINE.upper()}\n"
    if not (frame["mechanism"] == BASELINE).any():
        return title + f"\nNo {BASELINE} rows in these runs: no crossover to report.\n"
    if crossing.empty:
        return title + f"\nNo linear-time mechanism measured at the same case and shape as {BASELINE}.\n"
    intro = (
        f"\nThe length T* from which each linear-time mechanism's best implementation is faster (and uses less "
        f"peak memory) than {BASELINE}'s best, interpolated in log-log between measured lengths.\n\n"
    )
    rows = []
    for (run, case, fixed, name), group in crossing.groupby(["run", "case", "fixed", "name"], sort=True):
        by_metric = {r.metric: r for r in group.itertuples(index=False)}
        time, memory = by_metric["time"], by_metric["memory"]
        if time.kind == memory.kind == "none":
            continue  # the mechanism never ran at this case: listed among the cases that did not run
        note = (
            "" if pd.isna(time.baseline_oom_from) else f"{BASELINE} OOM from T={format_number(time.baseline_oom_from)}"
        )
        rows.append([run, name, case, fixed, time.text, memory.text, note])
    headers = ["run", "mechanism", "case", "shape", "faster from", "leaner from", "note"]
    if crossing["run"].nunique() == 1:
        headers, rows = headers[1:], [row[1:] for row in rows]
    return title + intro + md_table(headers, rows)


def _walls_section(fits: pd.DataFrame) -> str:
    along_t = fits[fits["x_axis"] == "T"] if (fits["x_axis"] == "T").any() else fits
    if along_t.empty:
        return ""
    x = along_t["x_axis"].iloc[0]
    hit = along_t[along_t["first_oom_x"].notna()]
    lines = [f"## Memory wall (out of memory along {x})\n"]
    if hit.empty:
        lines.append(f"No case ran out of memory (largest {x} run: {format_number(along_t['largest_x_run'].max())}).")
    else:
        rows = [
            [
                r.run,
                r.name,
                r.impl,
                r.case,
                r.fixed,
                format_number(r.longest_x_before_oom),
                format_number(r.first_oom_x),
            ]
            for r in hit.itertuples(index=False)
        ]
        lines.append(
            md_table(["run", "mechanism", "impl", "case", "shape", f"longest {x} before OOM", "first OOM"], rows)
        )
        lines.append(f"{len(along_t) - len(hit)} other series ran without running out of memory.")
    failed = along_t[along_t["not_run"] != ""]
    if len(failed):
        several = along_t["run"].nunique() > 1
        lines.append("\nOther cases that did not run:\n")
        lines.extend(
            f"- {r.name} {r.impl} ({r.case}, {r.fixed}{', ' + r.run if several else ''}): {_compact(r.not_run)}"
            for r in failed.itertuples(index=False)
        )
    return "\n".join(lines) + "\n"


def _compact(not_run: str) -> str:
    """ "unsupported at 128,256,512,1024,2048" → "unsupported at 128–2048 (5 values)"."""
    parts = []
    for part in not_run.split("; "):
        status, _, values = part.partition(" at ")
        listed = values.split(",")
        parts.append(part if len(listed) <= 4 else f"{status} at {listed[0]}–{listed[-1]} ({len(listed)} values)")
    return "; ".join(parts)


def _numerics_section(frame: pd.DataFrame) -> str:
    failed = frame[frame["numerics_failed"]]
    if failed.empty:
        return "## Numerics\n\nEvery measured case passed its numerics check (or was not checked).\n"
    lines = [f"## Numerics\n\n{len(failed)} case(s) failed the numerics check; they are drawn as red rings and "
             "left out of every fit:\n"]  # fmt: skip
    for row in failed.itertuples(index=False):
        name = config_name(row.mechanism, row.variant, row.shown_params)
        shape = " ".join(f"{a}={format_number(getattr(row, a))}" for a in ("B", "T", "H", "d"))
        reason = row.reason if isinstance(row.reason, str) and row.reason else "numerics_ok is false"
        lines.append(f"- {row.run}: {name} {row.impl} ({row.case}, {shape}): {reason}")
    return "\n".join(lines) + "\n"


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines.extend("| " + " | ".join(cell(v) for v in row) + " |" for row in rows)
    return "\n".join(lines) + "\n"
