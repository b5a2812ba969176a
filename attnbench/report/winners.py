"""Who wins: at each case (mode, level, dtype, causal), shape and length T, the fastest, the leanest and the most
accurate contender (a mechanism configuration and implementation), with how far ahead of the next one it is.

Only rows that ran and passed their numerics check compete on time and memory (a wrong answer fast is no win);
accuracy compares every row that measured its error. Metrics that other row kinds carry (a decode cache size, a
task accuracy) join the table when some row has them, so the page shows whatever the runs measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from attnbench.analysis.rows import config_name, format_number, natural_key


@dataclass(frozen=True)
class Metric:
    """One way to win: the row column compared, whether lower is better, and how its values are written."""

    title: str
    column: str
    lower_is_better: bool
    unit: str
    scale: float = 1.0
    needs_good_numerics: bool = True


METRICS = (
    Metric("fastest", "time_ms", True, "ms"),
    Metric("leanest", "peak_mem_bytes", True, "MiB", scale=2.0**20),
    Metric("most accurate", "rel_err", True, "rel. err", needs_good_numerics=False),
    Metric("smallest cache", "cache_bytes", True, "MiB", scale=2.0**20),
    Metric("best task accuracy", "accuracy", False, "acc.", needs_good_numerics=False),
)
# What a contender is compared within, in the table's order: a run, a case, a length and a shape (with a decode
# step's new tokens and a task's name where rows have them).
GROUP_KEYS = ("run", "case", "T", "B", "H", "d", "q_len", "task")
SHAPE_KEYS = ("task", "B", "H", "d", "q_len")
TIE = 1.01  # a lead under 1% is a tie: within the noise of any timer or allocator


@dataclass(frozen=True)
class Win:
    """The winner of one metric at one group: who, its value, and the next contender's value over (or under) it."""

    contender: str
    value: str
    ratio: float | None  # next / best (>= 1), None when nobody else competed
    runner_up: str

    @property
    def lead(self) -> str:
        """ "1.84× ahead of m sdpa", or that it ran alone."""
        if self.ratio is None:
            return "only contender"
        if self.ratio < TIE:
            return f"tied with {self.runner_up}"
        return f"{self.ratio:.3g}× ahead of {self.runner_up}"


def contenders(frame: pd.DataFrame) -> pd.Series:
    """Each row's contender name: its mechanism configuration and implementation ("m:variant[k=2] impl")."""
    names = [
        f"{config_name(m, v, p)} {impl}"
        for m, v, p, impl in zip(
            frame["mechanism"], frame["variant"], frame["shown_params"], frame["impl"], strict=True
        )
    ]
    return pd.Series(names, index=frame.index)


def metrics_present(frame: pd.DataFrame) -> list[Metric]:
    """The metrics some row of `frame` has a value for."""
    return [m for m in METRICS if m.column in frame and pd.to_numeric(frame[m.column], errors="coerce").notna().any()]


def winners_table(frame: pd.DataFrame) -> tuple[list[str], list[dict[str, object]]]:
    """(metric titles, one entry per group) of the runs' rows: each entry holds the group's run, case, shape, T
    and a `Win` (or None) per metric. Groups are ordered by run, case, shape and T."""
    metrics = metrics_present(frame)
    frame = frame.assign(contender=contenders(frame))
    keys = [key for key in GROUP_KEYS if key in frame and frame[key].notna().any()]
    entries = []
    grouped = frame.groupby([frame[k].map(_text) for k in keys], sort=False)
    for values, group in sorted(grouped, key=lambda item: tuple(natural_key(v) for v in item[0])):
        place = dict(zip(keys, values, strict=True))
        shape = " ".join(f"{axis}={place[axis]}" for axis in SHAPE_KEYS if place.get(axis))
        wins = {m.title: best_of(group, m) for m in metrics}
        entries.append({"run": place.get("run", ""), "case": place.get("case", ""), "shape": shape,
                        "T": place.get("T", ""), "wins": wins})  # fmt: skip
    return [m.title for m in metrics], entries


def _text(value: object) -> str:
    """A group key as text: whole numbers without ".0", missing values empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else format_number(value)
    return str(value)


def best_of(group: pd.DataFrame, metric: Metric) -> Win | None:
    """The contender of `group` best at `metric` (each contender's median where a case repeats), or None."""
    rows = group[group["status"].isin(("ok", "numerics_fail"))]
    if metric.needs_good_numerics:
        rows = rows[~rows["numerics_failed"] & (rows["status"] == "ok")]
    values = pd.to_numeric(rows[metric.column], errors="coerce")
    values = values[values.notna() & values.map(math.isfinite)]
    if values.empty:
        return None
    by_contender = values.groupby(rows.loc[values.index, "contender"]).median()
    ordered = by_contender.sort_values(ascending=metric.lower_is_better, kind="stable")
    best_name, best = ordered.index[0], float(ordered.iloc[0])
    ratio, runner_up = None, ""
    if len(ordered) > 1:
        runner_up, second = ordered.index[1], float(ordered.iloc[1])
        ratio = _ratio(best, second, metric.lower_is_better)
    return Win(best_name, format_value(best, metric), ratio, runner_up)


def _ratio(best: float, second: float, lower_is_better: bool) -> float:
    """How far `best` leads `second`, as a factor >= 1 (infinite against a zero)."""
    low, high = (best, second) if lower_is_better else (second, best)
    return math.inf if low == 0 else high / low


def format_value(value: float, metric: Metric) -> str:
    """A metric's value as the table writes it: "1.23 ms", "35.0 MiB", "3.6e-07 rel. err"."""
    scaled = value / metric.scale
    if metric.column == "rel_err":
        return f"{scaled:.2g}"
    return f"{scaled:.3g} {metric.unit}"
