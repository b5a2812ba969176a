"""Drawing one panel: figure and axes set up, series lines, reference slopes, the strip of cases that did not
run, measured ceilings, ticks and labels.

Every function draws on matplotlib objects it is given (or a `Figure` it creates), never through pyplot, and
imports matplotlib only when called.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from attnbench.analysis.rows import NOT_RUN, case_order, measured, natural_key
from attnbench.analysis.runs import RunInfo
from attnbench.analysis.series import AXIS_LABELS, PANEL_KEY, varying_text
from attnbench.plots.legend import LegendNeeds
from attnbench.plots.style import NUMERICS_RING, STATUS_MARKERS, STATUS_SIZES, Style

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Throughput is read against the ceiling that bounds it: the core of a quadratic mechanism is matmul-bound
# (TFLOP/s against the measured matmul peak), a linear-time core is memory-bound (GB/s against the measured
# copy bandwidth); at the layer level the projections' matmuls dominate, so every layer is matmul-bound.
BOUNDS = {
    "compute": ("tflops", "TFLOP/s", "matmul_tflops", "matmul"),
    "memory": ("gbps", "GB/s", "copy_gbps", "copy"),
}
RUG_MAX_SLOTS = 5
TITLE_CHARS_PER_INCH = 12  # characters of the 10-point title per inch of panel width
SLOPE_OFFSET = 0.5  # reference slopes start this factor below the lowest point at the smallest x


def iter_panels(series: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    """(case, fixed shape, rows) of each panel of a series frame, in reading order."""
    groups = series.groupby(list(PANEL_KEY)).groups
    keys = sorted(groups, key=lambda k: (case_order(k[0]), natural_key(k[1])))
    for case, fixed in keys:
        yield case, fixed, series[(series["case"] == case) & (series["fixed"] == fixed)]


def new_figure(
    n_panels: int, ncols: int, title: str, series: pd.DataFrame, runs: Sequence[RunInfo]
) -> tuple[Figure, list[Axes]]:
    """A figure of `n_panels` panels in rows of `ncols`, titled with `title` and the runs it shows."""
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig = Figure(figsize=(4.3 * ncols + 2.4, 3.3 * nrows + 0.7), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = list(grid.flat)
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    shown = [run for run in runs if run.label in set(series["run"])]
    lines = [title, *(f"{run.label}: suite {run.suite} on {run.device}" for run in shown)]
    # Left-aligned over the panels and wrapped to their width: the legend takes the right margin from the top,
    # so a longer line would run into it.
    width = max(40, int(4.3 * ncols * TITLE_CHARS_PER_INCH))
    text = "\n".join(textwrap.fill(line, width, subsequent_indent="  ") for line in lines)
    fig.suptitle(text, x=0.01, ha="left", fontsize=10)
    return fig, axes[:n_panels]


def panel_title(case: str, fixed: str, rows: pd.DataFrame, series: pd.DataFrame) -> str:
    """ "fwd core bf16\nH=4 d=16, B=32…1": the case, the shape held and the axes that vary with x."""
    varying = varying_text(rows, series.attrs["varying_axes"])
    return f"{case}\n{fixed}" + (f", {varying}" if varying else "")


def setup_axes(ax: Axes) -> None:
    """Log-log axes (base 2 along x, whose values are powers of two) with a faint grid."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(True, which="major", color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def draw_lines(
    ax: Axes,
    rows: pd.DataFrame,
    style: Style,
    column: str,
    scale: float,
    band: tuple[str, str] | None,
    legend: LegendNeeds,
    per_sequence: bool = False,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """One line per series through its good points (median where a point repeats), divided by `scale` and,
    `per_sequence`, by B; cases that failed numerics drawn at their value inside a red ring. Returns the
    (x, y) of every line drawn."""
    drawn = []
    columns = [column, *(band or ())]
    for _, rows_s in rows.groupby("series", sort=True):
        first = rows_s.iloc[0]
        look = style.look(first)
        rows_s = rows_s.assign(**{c: rows_s[c] / (rows_s["norm"] if per_sequence else 1.0) for c in columns})
        good = rows_s[measured(rows_s, column)]
        if len(good):
            values = good.groupby("x")[columns].median().sort_index()
            xs, ys = values.index.to_numpy(dtype=float), values[column].to_numpy() / scale
            ax.plot(xs, ys, **look, lw=1.5, ms=4.5, zorder=3)
            if band:
                low, high = values[band[0]] / scale, values[band[1]] / scale
                ax.fill_between(xs, low, high, color=look["color"], alpha=0.18, lw=0, zorder=2)
            drawn.append((xs, ys))
            legend.add(first)
        failed = rows_s[rows_s["numerics_failed"] & rows_s[column].notna() & (rows_s[column] > 0)]
        if len(failed):
            xs, ys = failed["x"].to_numpy(dtype=float), failed[column].to_numpy() / scale
            ax.plot(xs, ys, ls="none", **_marker_only(look), ms=4.5, zorder=4)
            ring = {"mfc": "none", "mec": NUMERICS_RING, "mew": 1.6, "ms": 11}
            ax.plot(xs, ys, ls="none", marker="o", zorder=5, gid=element_id("numerics-failed", first), **ring)
            legend.add(first)
            legend.numerics = True
    return drawn


def _marker_only(look: Mapping[str, Any]) -> dict[str, Any]:
    """A series' look without its line."""
    return {key: value for key, value in look.items() if key != "linestyle"}


def draw_reference_slopes(ax: Axes, drawn: list[tuple[np.ndarray, np.ndarray]], legend: LegendNeeds) -> None:
    """Faint lines of slope 1 and 2 from the lowest point at the smallest x: growth to compare against."""
    if not drawn:
        return
    xs = np.concatenate([d[0] for d in drawn])
    ys = np.concatenate([d[1] for d in drawn])
    x0, x1 = xs.min(), xs.max()
    if x1 <= x0:
        return
    # Below the lowest line rather than through its first point, so that a slope is never read as a series.
    y0 = ys[xs == x0].min() * SLOPE_OFFSET
    ends = np.array([x0, x1])
    from matplotlib.lines import Line2D

    for power, ls in ((1, ":"), (2, "--")):
        # add_artist, not plot: a slope must not stretch the y-axis (plot would add it to the data limits)
        ax.add_artist(Line2D(ends, y0 * (ends / x0) ** power, color="0.6", lw=1.0, ls=ls, zorder=1))
    ax.update_datalim([(x0, y0)], updatex=False)
    ax.autoscale_view(scalex=False)
    legend.slopes = True


def draw_not_run(ax: Axes, rows: pd.DataFrame, style: Style, legend: LegendNeeds) -> int:
    """Cases with no measurement (OOM, unsupported, error, timeout, crash), marked at their x in a strip at the
    bottom of the panel, one row of marks per series: where each implementation hit its wall. Returns the
    number of rows of marks."""
    failed = rows[rows["status"].isin(NOT_RUN)]
    if failed.empty:
        return 0
    slots = list(failed.groupby(["run", "name", "impl"], sort=True))
    for k, ((_, _, _), rows_s) in enumerate(slots):
        first = rows_s.iloc[0]
        y = rug_y(k % RUG_MAX_SLOTS)
        for status, at in rows_s.groupby("status", sort=True):
            ax.plot(
                at["x"].to_numpy(dtype=float),
                np.full(len(at), y),
                ls="none",
                marker=STATUS_MARKERS[status],
                color=style.colours[first["name"]],
                ms=STATUS_SIZES.get(status, 7),
                mew=1.8,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
                zorder=5,
                gid=element_id(status, first),
            )
            legend.statuses.add(status)
        legend.names.add(first["name"])
        legend.runs.add(first["run"])
    return min(len(slots), RUG_MAX_SLOTS)


def rug_y(slot: int) -> float:
    """The height, as a fraction of the panel, of a row of marks in the not-run strip."""
    return 0.045 + 0.07 * slot


def element_id(kind: str, row: Mapping[str, Any]) -> str:
    """An id for a drawn element (kept in the SVG), e.g. "oom-run-name-impl"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{kind}-{row['run']}-{row['name']}-{row['impl']}").strip("-")


def draw_ceilings(ax: Axes, kind: str, runs: Sequence[RunInfo], shown: set[str], style: Style) -> None:
    """One line per distinct measured ceiling, labelled with the runs that measured it."""
    _, unit, key, what = BOUNDS[kind]
    ceilings: dict[tuple[float, str], list[str]] = {}
    for run in runs:
        value = run.ceilings.get(key)
        if run.label in shown and value:
            dtype = run.ceilings.get("matmul_dtype") if kind == "compute" else None
            ceilings.setdefault((float(value), dtype or ""), []).append(run.label)
    for (value, dtype), labels in ceilings.items():
        ax.axhline(value, color="0.3", lw=1.1, ls=style.lines[labels[0]] if len(labels) == 1 else "-", zorder=1)
        text = f"{what}{' ' + dtype if dtype else ''} ceiling {value:.4g} {unit}"
        text += f" ({', '.join(labels)})" if len(shown) > 1 else ""
        ax.text(0.98, value, text, transform=ax.get_yaxis_transform(), ha="right", va="bottom", fontsize=7, color="0.3")


def finish_panel(ax: Axes, x: str, ylabel: str, title: str, rows: pd.DataFrame, strip_slots: int = 0) -> None:
    """Axis labels, ticks at the swept values, title, and room at the bottom for the not-run strip."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    values = sorted(set(rows["x"].dropna()))
    if values and len(values) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(values))
        step = 1 if len(values) <= 7 else 2
        shown = set(values[::step])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_count(v) if v in shown else ""))
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: format_count(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    if ax.get_yscale() == "log" and not isinstance(ax.yaxis.get_major_formatter(), FuncFormatter):
        _log_y_ticks(ax)
    ax.tick_params(axis="x", labelsize=8)
    ax.tick_params(axis="y", which="both", labelsize=8)
    ax.set_xlabel(AXIS_LABELS[x], fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.set_title(title, fontsize=9)
    if strip_slots:
        _make_room(ax, strip_slots)


def _log_y_ticks(ax: Axes) -> None:
    """Plain numbers (0.02, 5, 300) on a log y-axis; the 2 and 5 of each decade labelled too when the data
    span less than two decades, so that a short axis still has several readable ticks."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = ax.get_ylim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_locator(LogLocator(base=10))
    ax.yaxis.set_major_formatter(plain)
    if high / low < 100:
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        ax.yaxis.set_minor_formatter(plain)
    else:
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
        ax.yaxis.set_minor_formatter(NullFormatter())


def _make_room(ax: Axes, slots: int) -> None:
    """Lower the y-axis so that the not-run strip (shaded) lies below every measured point."""
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FuncFormatter

    low, high = ax.get_ylim()
    strip = rug_y(slots - 1) + 0.04
    ax.set_ylim(low / (high / low) ** (strip / (1 - strip)), high)
    ax.add_patch(Rectangle((0, 0), 1, strip, transform=ax.transAxes, color="0.95", zorder=0, lw=0))
    # The strip holds marks, not values: no y tick labels there.
    for axis_formatter, setter in (
        (ax.yaxis.get_major_formatter(), ax.yaxis.set_major_formatter),
        (ax.yaxis.get_minor_formatter(), ax.yaxis.set_minor_formatter),
    ):
        setter(FuncFormatter(lambda v, pos, f=axis_formatter: f(v, pos) if v >= low * 0.999 else ""))


def format_count(value: float) -> str:
    """1024 → "1K", 65536 → "64K", 1048576 → "1M", 96 → "96"."""
    value = float(value)
    for size, suffix in ((1 << 20, "M"), (1 << 10, "K")):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{suffix}"
    return f"{value:g}"


def memory_unit(top: float) -> tuple[float, str]:
    """(scale, unit) of bytes for an axis whose largest value is `top`."""
    for scale, unit in ((2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB")):
        if top >= scale:
            return scale, unit
    return 1.0, "bytes"
