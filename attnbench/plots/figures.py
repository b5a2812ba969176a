"""The figures of results against a swept axis (time, peak memory, throughput, speed-up) and `plot_results`,
which draws them with the scaling summary for one run or every run below a folder.

Drawn with matplotlib's object interface (`matplotlib.figure.Figure`, never pyplot): no display is needed, no
backend is selected and no global matplotlib state changes, and matplotlib is imported only when drawing.
Within one call colours name mechanisms, markers implementations and line styles runs, in every figure (see
`style`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from attnbench.analysis.rows import AnalysisError, measured, select
from attnbench.analysis.runs import RunInfo, load_runs
from attnbench.analysis.series import AXIS_LABELS, check_swept, series_frame, swept_axes
from attnbench.analysis.summary import Summary, summarize
from attnbench.analysis.task_summary import split_task_rows
from attnbench.plots.decode_figures import decode_figures
from attnbench.plots.draw import (
    BOUNDS,
    draw_ceilings,
    draw_lines,
    draw_not_run,
    draw_reference_slopes,
    finish_panel,
    iter_panels,
    memory_unit,
    new_figure,
    panel_title,
    setup_axes,
)
from attnbench.plots.legend import LegendNeeds, add_legend
from attnbench.plots.style import Style
from attnbench.plots.task_figures import task_figures
from attnbench.results.files import refuse_results_path, run_folder_of

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

METRICS = ("time", "memory", "throughput", "speedup")
FORMATS = ("png", "svg")
FILE_AXIS = {"T": "seqlen", "D": "width", "d": "headdim", "B": "batch", "H": "heads", "G": "kvheads"}
REFERENCE_IMPL = "reference"  # what speed-ups are measured against


@dataclass
class PlotReport:
    """What `plot_results` wrote: the figures and summary files, the summary itself, and figures not drawn."""

    out_dir: Path
    files: list[Path]
    summary: Summary
    skipped: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The summary as Markdown, what `attnbench plot` prints."""
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
    `runs`: glob patterns of run names to keep; `mechanisms` ("name", or "name:variant" for one variant) and
    `impls`: what to keep; `x`: the x-axes (default: every axis the runs swept, T first); `metrics`: any of
    time, memory, throughput, speedup; `labels`: run name → label, to overlay several runs. Writes
    `<metric>_vs_<axis>.{png,svg}`, summary.md, summary.csv and crossover.csv. Raises `AnalysisError` (or
    `results.files.ResultsError`) when the runs cannot answer the request.
    """
    metrics = _check_choices("metric", metrics, METRICS)
    formats = _check_choices("format", formats, FORMATS)
    infos, frame = load_runs(paths, runs=runs, labels=labels)
    frame = select(frame, mechanisms, impls)
    speed, tasks = split_task_rows(frame)  # task rows have their own figures and summary section
    axes = _axes(speed, x) if not speed.empty or tasks.empty else []
    summary = summarize(frame, infos, axes)
    out = Path(out_dir) if out_dir is not None else default_out_dir(paths)
    refuse_results_path(out)  # figures never go inside a run folder, which only the runner writes
    out.mkdir(parents=True, exist_ok=True)
    by_axis = {axis: series_frame(speed, axis) for axis in axes}
    every = pd.concat(by_axis.values()) if by_axis else pd.DataFrame({"name": [], "impl": []})
    style = Style.build(every["name"], every["impl"], [run.label for run in infos])
    files, skipped = [], []
    for axis, series in by_axis.items():
        for metric in metrics:
            figure = FIGURES[metric](series, style, infos)
            if figure is None:
                skipped.append(f"{metric} against {axis}: {SKIP_REASONS[metric]}")
                continue
            files.extend(save(figure, out / f"{metric}_vs_{FILE_AXIS[axis]}", formats))
    for stem, figure in decode_figures(by_axis.get("T"), style, infos, metrics):  # decode rows: T is the cache
        files.extend(save(figure, out / stem, formats))
    for stem, figure in task_figures(tasks, [run.label for run in infos]):
        files.extend(save(figure, out / stem, formats))
    files.extend(summary.write(out, figures=[f for f in files if f.suffix == f".{formats[0]}"]))
    return PlotReport(out, files, summary, skipped)


def default_out_dir(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> Path:
    """`<path>/plots` for one folder of runs; `<parent>/plots/<run>` beside a single run folder (only the runner
    writes inside a run); `plots` in the folder the paths share for several."""
    roots = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    if len(roots) == 1:
        run = run_folder_of(roots[0])
        return roots[0] / "plots" if run is None else run.parent / "plots" / run.name
    shared = Path(os.path.commonpath([p.resolve() for p in roots]))
    run = run_folder_of(shared)
    return shared / "plots" if run is None else run.parent / "plots" / run.name


def _check_choices(what: str, values: Sequence[str], choices: Sequence[str]) -> tuple[str, ...]:
    """`values` without repeats, each one of `choices` (a single string counts as one value)."""
    values = (values,) if isinstance(values, str) else tuple(dict.fromkeys(values))
    for value in values:
        if value not in choices:
            raise AnalysisError(f"{what} must be one of {list(choices)}, got {value!r}")
    if not values:
        raise AnalysisError(f"no {what} asked for; choose from {list(choices)}")
    return values


def _axes(frame: pd.DataFrame, x: str | Sequence[str] | None) -> list[str]:
    """The x-axes asked for, each checked to be swept; every swept axis when none is asked for."""
    if x is None or (not isinstance(x, str) and not x):
        axes = swept_axes(frame)
        if not axes:
            raise AnalysisError(
                "the runs sweep no axis: every series holds one shape (need two or more values of T, D, d, B, H or G)"
            )
        return axes
    axes = [x] if isinstance(x, str) else list(dict.fromkeys(x))
    for axis in axes:
        check_swept(frame, axis)
    return axes


def save(figure: Figure, stem: Path, formats: Sequence[str]) -> list[Path]:
    """Write `figure` as `stem.<format>` in each format; returns the files written."""
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
    scale, unit = memory_unit(float(values.max()))
    return _scaling_figure(series, style, runs, "peak memory", "peak_mem_bytes", scale, f"peak memory ({unit})")


def _scaling_figure(
    series: pd.DataFrame, style: Style, runs: Sequence[RunInfo], what: str, column: str, scale: float, ylabel: str
) -> Figure:
    """One log-log panel per case and shape of `column` ÷ `scale` against x: lines, slopes, not-run strip."""
    x, per_sequence = series.attrs["x"], series.attrs["per_sequence"]
    if per_sequence:
        what, ylabel = f"{what} per sequence", ylabel.replace("(", "per sequence (÷ B, ", 1)
    panels = list(iter_panels(series))
    fig, axes = new_figure(len(panels), 3, f"{what.capitalize()} against {AXIS_LABELS[x]}", series, runs)
    band = ("time_p20_ms", "time_p80_ms") if column == "time_ms" else None
    legend = LegendNeeds()
    for ax, (case, fixed, rows) in zip(axes, panels, strict=False):
        setup_axes(ax)
        drawn = draw_lines(ax, rows, style, column, scale, band, legend, per_sequence)
        draw_reference_slopes(ax, drawn, legend)
        slots = draw_not_run(ax, rows, style, legend)
        finish_panel(ax, x, ylabel, panel_title(case, fixed, rows, series), rows, slots)
    legend.band = band is not None and legend.lines
    add_legend(fig, style, series, legend)
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
    panels = list(iter_panels(series))
    title = f"Throughput against {AXIS_LABELS[x]}, and the ceilings measured in the run"
    fig, axes = new_figure(len(panels) * len(kinds), len(kinds), title, series, runs)
    legend = LegendNeeds(ceilings=True)
    cells = [(panel, kind) for panel in panels for kind in kinds]
    for ax, ((case, fixed, _), kind) in zip(axes, cells, strict=False):
        column, unit, _, _ = BOUNDS[kind]
        rows = kinds[kind]
        rows = rows[(rows["case"] == case) & (rows["fixed"] == fixed)]
        setup_axes(ax)
        draw_lines(ax, rows, style, column, 1.0, None, legend)
        draw_ceilings(ax, kind, runs, set(series["run"]), style)
        slots = draw_not_run(ax, rows, style, legend)
        finish_panel(ax, x, unit, panel_title(f"{case}, {kind}-bound", fixed, rows, series), rows, slots)
    add_legend(fig, style, series, legend)
    return fig


def speedup_figure(series: pd.DataFrame, style: Style, runs: Sequence[RunInfo]) -> Figure | None:
    """Each implementation's speed-up over its mechanism's reference (same run, case and shape) against x."""
    x = series.attrs["x"]
    panels = [(case, fixed, rows, curves) for case, fixed, rows in iter_panels(series) if (curves := _speedups(rows))]
    if not panels:
        return None
    title = f"Speed-up over the {REFERENCE_IMPL} implementation against {AXIS_LABELS[x]}"
    fig, axes = new_figure(len(panels), 3, title, series, runs)
    legend = LegendNeeds()
    for ax, (case, fixed, rows, curves) in zip(axes, panels, strict=False):
        setup_axes(ax)
        ax.axhline(1.0, color="0.35", lw=0.9, zorder=1)
        for first, xs, ratios in curves:
            ax.plot(xs, ratios, **style.look(first), lw=1.5, ms=4.5)
            legend.add(first)
        _speedup_ticks(ax)
        finish_panel(ax, x, f"speed-up over {REFERENCE_IMPL} (×)", panel_title(case, fixed, rows, series), rows)
    add_legend(fig, style, series, legend)
    return fig


FIGURES = {"time": time_figure, "memory": memory_figure, "throughput": throughput_figure, "speedup": speedup_figure}
SKIP_REASONS = {
    "time": "no timed case",
    "memory": "no row records peak memory",
    "throughput": "no row has TFLOP/s or GB/s",
    "speedup": f"no mechanism has its {REFERENCE_IMPL} and another implementation measured at the same shape",
}


def _speedups(rows: pd.DataFrame) -> list[tuple[pd.Series, np.ndarray, np.ndarray]]:
    """(first row, x, speed-up) of every non-reference series of a panel whose mechanism has its reference
    implementation measured at the same x, in the same run."""
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
    """Speed-up ticks at 1, 2 and 5 of each decade, labelled "2×"."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.yaxis.set_minor_formatter(NullFormatter())
