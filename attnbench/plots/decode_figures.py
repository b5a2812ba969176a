"""The figures of decode rows (`mode: decode`, where T is the cache length M): the latency of one decode step
against M, and the bytes each mechanism keeps (its cache or state, per sequence) against M, both log-log, one
panel per dtype, shape and number of new tokens. A KV or factor cache grows with slope 1; a recurrent state is
flat, and so is AFT-local's window once M passes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from attnbench.analysis.rows import measured
from attnbench.analysis.runs import RunInfo
from attnbench.plots.draw import (
    draw_lines,
    draw_not_run,
    draw_reference_slopes,
    finish_panel,
    memory_unit,
    new_figure,
    setup_axes,
)
from attnbench.plots.legend import LegendNeeds, add_legend
from attnbench.plots.style import Style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Figure file stem -> what it draws.
DECODE_FIGURES = {"decode_latency_vs_cache": "time", "decode_cache_vs_cache": "memory"}


def decode_series(series: pd.DataFrame) -> pd.DataFrame:
    """The decode rows of a T series frame, with `cache_per_sequence` (bytes kept ÷ B) and a panel per dtype,
    shape and `q_len` (the series frame's `fixed` text with `q_len` added)."""
    rows = series[series["mode"] == "decode"].copy()
    if rows.empty:
        return rows
    rows["q_len"] = pd.to_numeric(rows["q_len"], errors="coerce").fillna(1).astype(int)
    rows["cache_per_sequence"] = pd.to_numeric(rows["cache_bytes"], errors="coerce") / rows["B"]
    where = zip(rows["case"], rows["fixed"], rows["q_len"], strict=True)
    rows["panel"] = [f"{case}\n{fixed} q_len={q}" for case, fixed, q in where]
    return rows


def latency_figure(rows: pd.DataFrame, style: Style, runs: Sequence[RunInfo]) -> Figure | None:
    """Median time of one decode step against the cache length, log-log, with the p20–p80 band."""
    if not measured(rows, "time_ms").any():
        return None
    return _figure(rows, style, runs, "Decode step latency", "time_ms", 1.0, "time per step (ms, median)")


def cache_figure(rows: pd.DataFrame, style: Style, runs: Sequence[RunInfo]) -> Figure | None:
    """Bytes the implementation keeps between steps, per sequence, against the cache length, log-log."""
    kept = rows[rows["cache_per_sequence"].notna() & (rows["cache_per_sequence"] > 0)]
    if kept.empty:
        return None
    scale, unit = memory_unit(float(kept["cache_per_sequence"].max()))
    ylabel = f"cache or state per sequence ({unit})"
    return _figure(kept, style, runs, "Decode cache kept", "cache_per_sequence", scale, ylabel)


def _figure(
    rows: pd.DataFrame, style: Style, runs: Sequence[RunInfo], title: str, column: str, scale: float, ylabel: str
) -> Figure:
    panels = sorted(rows["panel"].unique())
    fig, axes = new_figure(len(panels), 3, f"{title} against the cache length M (T)", rows, runs)
    band = ("time_p20_ms", "time_p80_ms") if column == "time_ms" else None
    legend = LegendNeeds()
    for ax, panel in zip(axes, panels, strict=False):
        shown = rows[rows["panel"] == panel]
        setup_axes(ax)
        drawn = draw_lines(ax, shown, style, column, scale, band, legend)
        draw_reference_slopes(ax, drawn, legend)
        slots = draw_not_run(ax, shown, style, legend) if column == "time_ms" else 0
        finish_panel(ax, "T", ylabel, panel, shown, slots)
        ax.set_xlabel("cache length M (T, tokens)")
    legend.band = band is not None and legend.lines
    add_legend(fig, style, rows, legend)
    return fig


def decode_figures(series: pd.DataFrame | None, style: Style, runs: Sequence[RunInfo], metrics: Sequence[str]):
    """(file stem, figure) of each decode figure the rows allow, of those whose metric was asked for."""
    rows = decode_series(series) if series is not None else pd.DataFrame()
    if rows.empty:
        return []
    drawn = []
    for stem, figure_fn in (("decode_latency_vs_cache", latency_figure), ("decode_cache_vs_cache", cache_figure)):
        if DECODE_FIGURES[stem] in metrics:
            figure = figure_fn(rows, style, runs)
            if figure is not None:
                drawn.append((stem, figure))
    return drawn
