"""The figures of task rows: held-out accuracy against the number of key-value pairs (and with it T), one line per
mechanism; and accuracy against the time of one training step, the trade-off a researcher reads first (up and
to the left is better). One panel per model shape (width, heads, layers, vocabulary) or per cell.

Colours and markers follow `attnbench.plots.style` as in the other figures (colours name mechanisms, fills
implementations). Drawn with matplotlib's object interface; matplotlib is imported only when drawing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from attnbench.analysis.rows import config_name
from attnbench.analysis.task_summary import NAME_COLUMNS, cell_label, split_task_rows
from attnbench.plots.style import Style

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# Figure file stem -> what it draws.
TASK_FIGURES = {"accuracy_vs_kv": "accuracy against kv pairs", "accuracy_vs_step_time": "accuracy against step time"}
SHAPE_KEYS = (("d_model", "D"), ("heads", "H"), ("layers", "layers"), ("vocab", "vocab"))


def task_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The task rows of a prepared frame that have an accuracy, with `name`, `kv`, `seq_len`, `shape` (the
    panel of the kv figure) and `cell` (the panel of the trade-off figure)."""
    rows = split_task_rows(frame)[1]
    rows = rows[(rows["status"] == "ok") & pd.to_numeric(rows["accuracy"], errors="coerce").notna()].copy()
    if rows.empty:
        return rows
    rows["name"] = [config_name(*names) for names in zip(*(rows[c] for c in NAME_COLUMNS), strict=True)]
    rows["accuracy"] = pd.to_numeric(rows["accuracy"]) * 100
    rows["kv"] = [task["kv_pairs"] for task in rows["task"]]
    rows["seq_len"] = [task["seq_len"] for task in rows["task"]]
    rows["shape"] = [" ".join(f"{short}={task.get(key)}" for key, short in SHAPE_KEYS) for task in rows["task"]]
    rows["cell"] = [cell_label(task) for task in rows["task"]]
    return rows


def _new_figure(panels: int, title: str) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    columns = min(3, panels)
    rows = -(-panels // columns)
    figure = Figure(figsize=(5.2 * columns + 2.2, 4.0 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for unused in axes[panels:]:
        unused.set_visible(False)
    figure.suptitle(title)
    return figure, axes[:panels]


def _tick_label(value: float, _position: int) -> str:
    """A plain number (20, 30, 50) at the ticks that lead with 1, 2, 3 or 5; no label at the others."""
    if value <= 0:
        return ""
    lead = value / 10 ** math.floor(math.log10(value))
    return f"{value:g}" if round(lead, 6) in (1, 2, 3, 5) else ""


def _plain_ticks(ax: Axes) -> None:
    """Log-axis tick labels as plain numbers, not powers of ten, sparse enough to read."""
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(_tick_label))
    ax.xaxis.set_minor_formatter(FuncFormatter(_tick_label))


def _legend(figure: Figure, axes: list[Axes]) -> None:
    handles, labels = {}, []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in handles:
                handles[label] = handle
                labels.append(label)
    figure.legend([handles[label] for label in labels], labels, loc="outside right upper", fontsize=8)


def accuracy_kv_figure(points: pd.DataFrame, style: Style) -> Figure:
    """Held-out accuracy (%) against kv pairs, one line per mechanism (and implementation, run), per shape."""
    panels = list(points.groupby("shape", sort=True))
    figure, axes = _new_figure(len(panels), "MQAR accuracy against key-value pairs")
    for ax, (shape, rows) in zip(axes, panels, strict=True):
        for (name, impl, run), series in rows.groupby(["name", "impl", "run"], sort=True):
            values = series.groupby("kv").agg(accuracy=("accuracy", "median"), seq_len=("seq_len", "max"))
            look = style.look({"name": name, "impl": impl, "run": run})
            label = name if points["run"].nunique() == 1 else f"{name} ({run})"
            ax.plot(values.index, values["accuracy"], **look, lw=1.5, ms=5, label=label)
        kvs = sorted(rows["kv"].unique())
        lengths = rows.groupby("kv")["seq_len"].max()
        ax.set_xscale("log", base=2)
        ax.set_xticks(kvs, [f"{kv}\nT={lengths[kv]}" for kv in kvs])
        ax.minorticks_off()
        _accuracy_axes(ax, "key-value pairs (sequence length)", shape)
    _legend(figure, axes)
    return figure


def _accuracy_axes(ax, xlabel: str, title: str) -> None:
    """An accuracy panel's y range (0-100 % with a margin), grid, labels and title."""
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title(title, fontsize=9)


def accuracy_time_figure(points: pd.DataFrame, style: Style) -> Figure:
    """Held-out accuracy (%) against the median time of one training step (log), one point per row, per cell."""
    panels = list(points.groupby("cell", sort=True))
    figure, axes = _new_figure(len(panels), "MQAR accuracy against training step time")
    for ax, (cell, rows) in zip(axes, panels, strict=True):
        for _, row in rows.iterrows():
            look = style.look(row)
            look.pop("linestyle", None)
            label = row["name"] if points["run"].nunique() == 1 else f"{row['name']} ({row['run']})"
            ax.plot([row["time_ms"]], [row["accuracy"]], ls="none", **look, ms=7, label=label)
        ax.set_xscale("log")
        _plain_ticks(ax)
        _accuracy_axes(ax, "time per training step (ms, median)", cell)
    _legend(figure, axes)
    return figure


def task_figures(frame: pd.DataFrame, run_labels: Sequence[str]) -> list[tuple[str, Figure]]:
    """(file stem, figure) for the task rows of a prepared frame; none when it has no trained row."""
    points = task_points(frame)
    if points.empty:
        return []
    style = Style.build(points["name"], points["impl"], list(run_labels))
    return [
        ("accuracy_vs_kv", accuracy_kv_figure(points, style)),
        ("accuracy_vs_step_time", accuracy_time_figure(points, style)),
    ]
