"""Figures of attnbench results against a swept axis: time, peak memory, throughput and speed-up.

Drawn with matplotlib's object interface (`matplotlib.figure.Figure`, never pyplot): no display is needed, no
backend is selected and no global matplotlib state changes, and matplotlib is imported only when drawing.
Within one call colours name mechanisms, markers implementations and line styles runs, in every figure.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from attnbench.analysis import summary as analysis
from attnbench.analysis.summary import AXIS_LABELS, METRICS, NOT_RUN, REFERENCE_IMPL, RunInfo, Summary, measured

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMATS = ("png", "svg")
FILE_AXIS = {"T": "seqlen", "D": "width", "d": "headdim", "B": "batch", "H": "heads", "G": "kvheads"}
BASE_COLOURS = {
    "mha": "#1f77b4",
    "gqa": "#17becf",
    "mqa": "#393b79",
    "tpa": "#8c564b",
    "tssa": "#ff7f0e",
    "xca": "#2ca02c",
    "aft:simple": "#e377c2",
    "aft:full": "#7f7f7f",
    "aft:local": "#bcbd22",
    "aft:conv": "#9467bd",
}
SPARE_COLOURS = ("#6a3d9a", "#b15928", "#33a02c", "#fb9a99", "#fdbf6f", "#a6cee3", "#b2df8a", "#cab2d6")
IMPL_MARKERS = {
    "reference": "o",
    "sdpa": "s",
    "sdpa_flash": "^",
    "sdpa_efficient": "v",
    "sdpa_cudnn": "D",
    "sdpa_math": "P",
    "compile": "*",
}
SPARE_MARKERS = ("<", ">", "h", "p", "d", "H", "8")
RUN_LINES = ("-", "--", ":", "-.")
STATUS_MARKERS = {"oom": "X", "unsupported": "|", "error": "$!$", "timeout": "$!$", "crash": "$!$"}
STATUS_SIZES = {"oom": 7, "unsupported": 10}
STATUS_LABELS = {"oom": "out of memory: the wall"}
COMPLEXITY_TAGS = {"linear": "O(T)", "quadratic": "O(T²)"}
NUMERICS_RING = "#d62728"  # no mechanism is drawn in this red
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


@dataclass(frozen=True)
class Style:
    """How a series looks: colour by mechanism configuration, marker by implementation, line by run."""

    colours: Mapping[str, str]
    markers: Mapping[str, str]
    lines: Mapping[str, str]

    @classmethod
    def build(cls, names: Iterable[str], impls: Iterable[str], runs: Sequence[str]) -> Style:
        colours: dict[str, str] = {}
        spare = iter(SPARE_COLOURS * 4)
        bases: dict[str, list[str]] = {}
        for name in sorted(set(names)):
            bases.setdefault(name.split("[")[0], []).append(name)
        for base, configs in bases.items():
            colour = BASE_COLOURS.get(base) or BASE_COLOURS.get(base.split(":")[0]) or next(spare)
            colours.update({name: _shade(colour, k) for k, name in enumerate(configs)})
        spare_markers = iter(SPARE_MARKERS * 4)
        markers = {impl: IMPL_MARKERS.get(impl) or next(spare_markers) for impl in sorted(set(impls))}
        lines = {run: RUN_LINES[i % len(RUN_LINES)] for i, run in enumerate(runs)}
        return cls(colours, markers, lines)

    def look(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "color": self.colours[row["name"]],
            "marker": self.markers[row["impl"]],
            "linestyle": self.lines[row["run"]],
        }


def _shade(colour: str, k: int) -> str:
    """The k-th shade of a colour: the colour itself, then alternately darker and lighter."""
    if k == 0:
        return colour
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    amount = min(0.7, 0.3 * math.ceil(k / 2))
    target = 0.0 if k % 2 else 255.0
    mixed = rgb + (target - rgb) * amount
    return "#" + "".join(f"{round(float(v)):02x}" for v in mixed)


@dataclass
class PlotReport:
    """What `plot_results` wrote: the figures and summary files, the summary itself, and figures not drawn."""

    out_dir: Path
    files: list[Path]
    summary: Summary
    skipped: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.summary.markdown


def plot_results(
    paths: str | os.PathLike | Sequence[str | os.PathLike] = "results",
    out_dir: str | os.PathLike | None = None,
    *,
    runs: Sequence[str] = (),
    mechanisms: Sequence[str] = (),
    impls: Sequence[str] = (),
    x: str | Sequence[str] | None = None,
    metrics: Sequence[str] = METRICS,
    labels: Mapping[str, str] | None = None,
    formats: Sequence[str] = FORMATS,
) -> PlotReport:
    """Figures and a scaling summary of one run, or of every run below a folder.

    `paths`: run folders or folders holding runs; `out_dir`: where to write (default `<path>/plots`);
    `runs`: glob patterns of run names to keep; `mechanisms` ("aft" or "aft:simple") and `impls`: what to keep;
    `x`: the x-axes (default: every axis the runs swept, T first); `metrics`: any of time, memory, throughput,
    speedup; `labels`: run name → label, to overlay several runs. Writes `<metric>_vs_<axis>.{png,svg}`,
    summary.md, summary.csv and crossover.csv. Raises `analysis.AnalysisError` (or `results.ResultsError`) when
    the runs cannot answer the request.
    """
    metrics = _check_choices("metric", metrics, METRICS)
    formats = _check_choices("format", formats, FORMATS)
    infos, frame = analysis.load_runs(paths, runs=runs, labels=labels)
    frame = analysis.select(frame, mechanisms, impls)
    axes = _axes(frame, x)
    summary = analysis.summarize(frame, infos, axes)
    out = Path(out_dir) if out_dir is not None else default_out_dir(paths)
    out.mkdir(parents=True, exist_ok=True)
    by_axis = {axis: analysis.series_frame(frame, axis) for axis in axes}
    every = pd.concat(by_axis.values())
    style = Style.build(every["name"], every["impl"], [run.label for run in infos])
    files, skipped = [], []
    for axis, series in by_axis.items():
        for metric in metrics:
            figure = FIGURES[metric](series, style, infos)
            if figure is None:
                skipped.append(f"{metric} against {axis}: {SKIP_REASONS[metric]}")
                continue
            files.extend(save(figure, out / f"{metric}_vs_{FILE_AXIS[axis]}", formats))
    files.extend(summary.write(out, figures=[f for f in files if f.suffix == f".{formats[0]}"]))
    return PlotReport(out, files, summary, skipped)


def default_out_dir(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Path:
    """`<path>/plots` for one path; `plots` in the folder the paths share for several."""
    roots = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if len(roots) == 1:
        return roots[0] / "plots"
    return Path(os.path.commonpath([p.resolve() for p in roots])) / "plots"


def _check_choices(what: str, values: Sequence[str], choices: Sequence[str]) -> tuple[str, ...]:
    values = (values,) if isinstance(values, str) else tuple(dict.fromkeys(values))
    for value in values:
        if value not in choices:
            raise analysis.AnalysisError(f"{what} must be one of {list(choices)}, got {value!r}")
    if not values:
        raise analysis.AnalysisError(f"no {what} asked for; choose from {list(choices)}")
    return values


def _axes(frame: pd.DataFrame, x: str | Sequence[str] | None) -> list[str]:
    if x is None or (not isinstance(x, str) and not x):
        axes = analysis.swept_axes(frame)
        if not axes:
            raise analysis.AnalysisError(
                "the runs sweep no axis: every series holds one shape (need two or more values of T, D, d, B, H or G)"
            )
        return axes
    axes = [x] if isinstance(x, str) else list(dict.fromkeys(x))
    for axis in axes:
        analysis.check_swept(frame, axis)
    return axes


def save(figure: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    written = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        # No date in the SVG, so a figure redrawn from the same results is the same file.
        metadata = {"Date": None} if fmt == "svg" else None
        figure.savefig(path, dpi=150, metadata=metadata)
        written.append(path)
    return written


def time_figure(series: pd.DataFrame, style: Style, runs: Sequence[RunInfo]) -> Figure | None:
    """Median time against x, log-log, with the p20–p80 band and reference slopes; one panel per case."""
    return _scaling_figure(series, style, runs, "time", "time_ms", 1.0, "time (ms, median)")


def memory_figure(series: pd.DataFrame, style: Style, runs: Sequence[RunInfo]) -> Figure | None:
    """Peak memory against x, log-log, with reference slopes; one panel per case."""
    values = series.loc[measured(series, "peak_mem_bytes"), "peak_mem_bytes"]
    if values.empty:
        return None
    scale, unit = _memory_unit(float(values.max()))
    return _scaling_figure(series, style, runs, "peak memory", "peak_mem_bytes", scale, f"peak memory ({unit})")


def _scaling_figure(
    series: pd.DataFrame, style: Style, runs: Sequence[RunInfo], what: str, column: str, scale: float, ylabel: str
) -> Figure:
    x, per_sequence = series.attrs["x"], series.attrs["per_sequence"]
    if per_sequence:
        what, ylabel = f"{what} per sequence", ylabel.replace("(", "per sequence (÷ B, ", 1)
    panels = list(_panels(series))
    fig, axes = _figure(len(panels), 3, f"{what.capitalize()} against {AXIS_LABELS[x]}", series, runs)
    band = ("time_p20_ms", "time_p80_ms") if column == "time_ms" else None
    legend = _LegendNeeds()
    for ax, (case, fixed, rows) in zip(axes, panels, strict=False):
        _setup(ax, x)
        drawn = _draw_lines(ax, rows, style, column, scale, band, legend, per_sequence)
        _reference_slopes(ax, drawn, legend)
        slots = _draw_not_run(ax, rows, style, legend)
        _finish(ax, x, ylabel, _panel_title(case, fixed, rows, series), rows, slots)
    legend.band = band is not None and legend.lines
    _legend(fig, style, series, legend)
    return fig


def throughput_figure(series: pd.DataFrame, style: Style, runs: Sequence[RunInfo]) -> Figure | None:
    """TFLOP/s of matmul-bound series and GB/s of memory-bound ones against x, with each run's measured
    ceilings drawn as lines: a roofline view of how close each implementation gets."""
    x = series.attrs["x"]
    compute = (series["level"] == "layer") | (series["complexity"] != "linear")
    kinds = {"compute": series[compute], "memory": series[~compute]}
    kinds = {kind: rows for kind, rows in kinds.items() if measured(rows, BOUNDS[kind][0]).any()}
    if not kinds:
        return None
    panels = list(_panels(series))
    title = f"Throughput against {AXIS_LABELS[x]}, and the ceilings measured in the run"
    fig, axes = _figure(len(panels) * len(kinds), len(kinds), title, series, runs)
    legend = _LegendNeeds(ceilings=True)
    cells = [(panel, kind) for panel in panels for kind in kinds]
    for ax, ((case, fixed, _), kind) in zip(axes, cells, strict=False):
        column, unit, _, _ = BOUNDS[kind]
        rows = kinds[kind]
        rows = rows[(rows["case"] == case) & (rows["fixed"] == fixed)]
        _setup(ax, x)
        _draw_lines(ax, rows, style, column, 1.0, None, legend)
        _draw_ceilings(ax, kind, runs, set(series["run"]), style)
        slots = _draw_not_run(ax, rows, style, legend)
        _finish(ax, x, unit, _panel_title(f"{case}, {kind}-bound", fixed, rows, series), rows, slots)
    _legend(fig, style, series, legend)
    return fig


def speedup_figure(series: pd.DataFrame, style: Style, runs: Sequence[RunInfo]) -> Figure | None:
    """Each implementation's speed-up over its mechanism's reference (same run, case and shape) against x."""
    x = series.attrs["x"]
    panels = [(case, fixed, rows, curves) for case, fixed, rows in _panels(series) if (curves := _speedups(rows))]
    if not panels:
        return None
    title = f"Speed-up over the {REFERENCE_IMPL} implementation against {AXIS_LABELS[x]}"
    fig, axes = _figure(len(panels), 3, title, series, runs)
    legend = _LegendNeeds()
    for ax, (case, fixed, rows, curves) in zip(axes, panels, strict=False):
        _setup(ax, x)
        ax.axhline(1.0, color="0.35", lw=0.9, zorder=1)
        for first, xs, ratios in curves:
            ax.plot(xs, ratios, **style.look(first), lw=1.5, ms=4.5)
            legend.add(first)
        _speedup_ticks(ax)
        _finish(ax, x, f"speed-up over {REFERENCE_IMPL} (×)", _panel_title(case, fixed, rows, series), rows)
    _legend(fig, style, series, legend)
    return fig


FIGURES = {"time": time_figure, "memory": memory_figure, "throughput": throughput_figure, "speedup": speedup_figure}
SKIP_REASONS = {
    "time": "no timed case",
    "memory": "no row records peak memory",
    "throughput": "no row has TFLOP/s or GB/s",
    "speedup": f"no mechanism has its {REFERENCE_IMPL} and another implementation measured at the same shape",
}


@dataclass
class _LegendNeeds:
    """What one figure drew, so that its legend explains exactly that."""

    names: set[str] = field(default_factory=set)
    impls: set[str] = field(default_factory=set)
    runs: set[str] = field(default_factory=set)
    statuses: set[str] = field(default_factory=set)
    lines: bool = False
    band: bool = False
    slopes: bool = False
    numerics: bool = False
    ceilings: bool = False

    def add(self, row: Mapping[str, Any]) -> None:
        self.names.add(row["name"])
        self.impls.add(row["impl"])
        self.runs.add(row["run"])
        self.lines = True


def _panels(series: pd.DataFrame) -> Iterator[tuple[str, str, pd.DataFrame]]:
    groups = series.groupby(list(analysis.PANEL_KEY)).groups
    keys = sorted(groups, key=lambda k: (analysis.case_order(k[0]), analysis.natural_key(k[1])))
    for case, fixed in keys:
        yield case, fixed, series[(series["case"] == case) & (series["fixed"] == fixed)]


def _figure(
    n_panels: int, ncols: int, title: str, series: pd.DataFrame, runs: Sequence[RunInfo]
) -> tuple[Figure, list[Axes]]:
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


def _panel_title(case: str, fixed: str, rows: pd.DataFrame, series: pd.DataFrame) -> str:
    varying = analysis.varying_text(rows, series.attrs["varying_axes"])
    return f"{case}\n{fixed}" + (f", {varying}" if varying else "")


def _setup(ax: Axes, x: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.grid(True, which="major", color="0.9", lw=0.6)
    ax.set_axisbelow(True)


def _draw_lines(
    ax: Axes,
    rows: pd.DataFrame,
    style: Style,
    column: str,
    scale: float,
    band: tuple[str, str] | None,
    legend: _LegendNeeds,
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
            ax.plot(xs, ys, ls="none", marker=look["marker"], color=look["color"], ms=4.5, zorder=4)
            ring = {"mfc": "none", "mec": NUMERICS_RING, "mew": 1.6, "ms": 11}
            ax.plot(xs, ys, ls="none", marker="o", zorder=5, gid=_gid("numerics-failed", first), **ring)
            legend.add(first)
            legend.numerics = True
    return drawn


def _reference_slopes(ax: Axes, drawn: list[tuple[np.ndarray, np.ndarray]], legend: _LegendNeeds) -> None:
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


def _draw_not_run(ax: Axes, rows: pd.DataFrame, style: Style, legend: _LegendNeeds) -> int:
    """Cases with no measurement (OOM, unsupported, error, timeout, crash), marked at their x in a strip at the
    bottom of the panel, one row of marks per series: where each implementation hit its wall. Returns the
    number of rows of marks."""
    failed = rows[rows["status"].isin(NOT_RUN)]
    if failed.empty:
        return 0
    slots = list(failed.groupby(["run", "name", "impl"], sort=True))
    for k, ((_, _, _), rows_s) in enumerate(slots):
        first = rows_s.iloc[0]
        y = _rug_y(k % RUG_MAX_SLOTS)
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
                gid=_gid(status, first),
            )
            legend.statuses.add(status)
        legend.names.add(first["name"])
        legend.runs.add(first["run"])
    return min(len(slots), RUG_MAX_SLOTS)


def _rug_y(slot: int) -> float:
    return 0.045 + 0.07 * slot


def _gid(kind: str, row: Mapping[str, Any]) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{kind}-{row['run']}-{row['name']}-{row['impl']}").strip("-")


def _draw_ceilings(ax: Axes, kind: str, runs: Sequence[RunInfo], shown: set[str], style: Style) -> None:
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


def _speedups(rows: pd.DataFrame) -> list[tuple[pd.Series, np.ndarray, np.ndarray]]:
    curves = []
    for _, group in rows.groupby(["run", "name"], sort=True):
        ref = group[(group["impl"] == REFERENCE_IMPL) & measured(group, "time_ms")]
        if ref.empty:
            continue
        ref_time = ref.groupby("x")["time_ms"].median()
        others = group[group["impl"] != REFERENCE_IMPL]
        for _, rows_s in others.groupby("series", sort=True):
            time = rows_s[measured(rows_s, "time_ms")].groupby("x")["time_ms"].median()
            common = sorted(set(time.index) & set(ref_time.index))
            if common:
                ratios = ref_time[common].to_numpy() / time[common].to_numpy()
                curves.append((rows_s.iloc[0], np.asarray(common, dtype=float), ratios))
    return curves


def _speedup_ticks(ax: Axes) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def _finish(ax: Axes, x: str, ylabel: str, title: str, rows: pd.DataFrame, strip_slots: int = 0) -> None:
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
    strip = _rug_y(slots - 1) + 0.04
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


def _memory_unit(top: float) -> tuple[float, str]:
    for scale, unit in ((2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB")):
        if top >= scale:
            return scale, unit
    return 1.0, "bytes"


def _legend(fig: Figure, style: Style, series: pd.DataFrame, needs: _LegendNeeds) -> None:
    """One legend outside the panels, by part: colour = mechanism, marker = implementation, line = run, then
    the marks. Section headers are entries without a handle, set in bold."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles, headers = [], []

    def header(text: str) -> None:
        headers.append(text)
        handles.append(Line2D([], [], ls="none", label=text))

    # each mechanism with its declared complexity in T, what its slope should be read against
    complexity = series.groupby("name")["complexity"].first().map(COMPLEXITY_TAGS).dropna().to_dict()
    header("mechanism (colour)")
    handles += [
        Line2D([], [], color=style.colours[n], lw=2.5, label=f"{n}  {complexity[n]}" if n in complexity else n)
        for n in sorted(needs.names, key=analysis.natural_key)
    ]
    header("implementation (marker)")
    handles += [Line2D([], [], color="0.3", marker=style.markers[i], ls="none", label=i) for i in sorted(needs.impls)]
    runs = [run for run in style.lines if run in needs.runs]
    if len(style.lines) > 1 and runs:
        header("run (line style)")
        handles += [Line2D([], [], color="0.3", ls=style.lines[r], label=r) for r in runs]
    marks = []
    if needs.band:
        marks.append(Patch(color="0.5", alpha=0.25, lw=0, label="p20–p80 of samples"))
    if needs.slopes:
        marks.append(Line2D([], [], color="0.6", ls=":", label="slope 1 (∝ x)"))
        marks.append(Line2D([], [], color="0.6", ls="--", label="slope 2 (∝ x²)"))
    if needs.ceilings:
        marks.append(Line2D([], [], color="0.3", lw=1.1, label="measured ceiling"))
    if needs.numerics:
        ring = {"mfc": "none", "mec": NUMERICS_RING, "mew": 1.6, "ms": 9}
        marks.append(Line2D([], [], ls="none", marker="o", label="failed numerics (not fitted)", **ring))
    for status in NOT_RUN:
        if status in needs.statuses:
            mark = STATUS_MARKERS[status]
            label = STATUS_LABELS.get(status, status) + " (bottom strip)"
            marks.append(Line2D([], [], ls="none", marker=mark, color="0.3", ms=7, label=label))
    if marks:
        header("marks")
        handles += marks
    legend = fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, handlelength=2.2)
    for text in legend.get_texts():
        if text.get_text() in headers:
            text.set_fontweight("bold")
