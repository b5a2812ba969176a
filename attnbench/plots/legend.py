"""The legend of a figure: what its panels drew, by part, and nothing they did not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from attnbench.analysis.rows import NOT_RUN, natural_key
from attnbench.plots.style import COMPLEXITY_TAGS, NUMERICS_RING, STATUS_LABELS, STATUS_MARKERS, Style

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure

# Lines closer than this (relative, at every point) look like one line on a log axis: a 2% gap is under a point at
# the figures' size.
COINCIDE_WITHIN = 0.02


@dataclass
class LegendNeeds:
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
        """Note a series drawn as a line: its configuration, implementation and run."""
        self.names.add(row["name"])
        self.impls.add(row["impl"])
        self.runs.add(row["run"])
        self.lines = True


def add_legend(fig: Figure, style: Style, series: pd.DataFrame, needs: LegendNeeds) -> None:
    """One legend outside the panels, by part: mechanism (colour, marker and, with one run, line style),
    implementation (marker fill), run (line style, with several runs), then the marks. A mechanism whose lines
    coincide with another's in every panel is marked "≡ other", since its lines are hidden under the other's.
    Section headers are entries without a handle, set in bold."""
    from matplotlib.lines import Line2D

    handles: list[Artist] = []
    headers = []

    def section(title: str, entries: list[Artist]) -> None:
        headers.append(title)
        handles.extend([Line2D([], [], ls="none", label=title), *entries])

    looks = "colour, marker" if style.runs_take_line_style else "colour, marker, line"
    section(f"mechanism ({looks})", _mechanism_handles(style, series, needs, identical_series(fig, style)))
    impls = [
        Line2D([], [], color="0.3", marker="o", fillstyle=style.fills[i], ms=6, ls="none", label=i)
        for i in sorted(needs.impls, key=lambda impl: list(style.fills).index(impl))
    ]
    section("implementation (marker fill)", impls)
    runs = [run for run in style.lines if run in needs.runs]
    if style.runs_take_line_style and runs:
        section("run (line style)", [Line2D([], [], color="0.3", ls=style.lines[r], label=r) for r in runs])
    marks = _mark_handles(needs)
    if marks:
        section("marks", marks)
    legend = fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, handlelength=3.2)
    for text in legend.get_texts():
        if text.get_text() in headers:
            text.set_fontweight("bold")


def _mechanism_handles(
    style: Style, series: pd.DataFrame, needs: LegendNeeds, identical: Mapping[str, str]
) -> list[Artist]:
    """Each mechanism configuration drawn, with its complexity in T (what its slope should be read against)
    and, when its lines lie on another's, "≡ other"."""
    from matplotlib.lines import Line2D

    complexity = series.groupby("name")["complexity"].first().map(COMPLEXITY_TAGS).dropna().to_dict()
    handles = []
    for name in sorted(needs.names, key=natural_key):
        label = f"{name}  {complexity[name]}" if name in complexity else name
        if name in identical:
            label += f"  ≡ {identical[name]}"
        handles.append(Line2D([], [], **style.key(name), label=label))
    return handles


def identical_series(fig: Figure, style: Style, tolerance: float = COINCIDE_WITHIN) -> dict[str, str]:
    """{name: other} for each mechanism configuration whose drawn lines coincide with those of an earlier one
    (in natural order) in every panel where both are drawn: at the same x values, every y within `tolerance`
    (relative), for every implementation and run. Such lines hide each other; the legend says so."""
    drawn: dict[tuple[int, str, Any], dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for index, ax in enumerate(fig.axes):
        for line in ax.get_lines():
            if line.get_gid() or line.get_linestyle() in ("None", "none", ""):
                continue  # marks (strip, rings) and marker-only points are not series lines
            found = style.series_of(line.get_color(), line.get_marker(), line.get_fillstyle())
            if found is not None:
                name, impl = found
                xs, ys = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
                run = str(line.get_linestyle()) if style.runs_take_line_style else ""
                drawn.setdefault((index, impl, run), {})[name] = (xs, ys)
    verdicts: dict[tuple[str, str], bool] = {}
    for lines in drawn.values():
        names = sorted(lines, key=natural_key)
        for k, later in enumerate(names):
            for earlier in names[:k]:
                same = _coincide(*lines[earlier], *lines[later], tolerance)
                verdicts[(later, earlier)] = verdicts.get((later, earlier), True) and same
    identical: dict[str, str] = {}
    for (later, earlier), same in sorted(verdicts.items(), key=lambda item: natural_key(item[0][1])):
        if same and later not in identical:
            identical[later] = identical.get(earlier, earlier)
    return identical


def _coincide(xs_a: np.ndarray, ys_a: np.ndarray, xs_b: np.ndarray, ys_b: np.ndarray, tolerance: float) -> bool:
    """Whether two lines have the same x values and y values within `tolerance` of each other (relative)."""
    if len(xs_a) != len(xs_b) or not len(xs_a) or not np.array_equal(xs_a, xs_b):
        return False
    scale = np.maximum(np.abs(ys_a), np.abs(ys_b))
    return bool(np.all(np.abs(ys_a - ys_b) <= tolerance * scale))


def _mark_handles(needs: LegendNeeds) -> list[Artist]:
    """The marks drawn besides the series: sample band, reference slopes, ceilings, failed numerics, the
    not-run strip."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    marks: list[Artist] = []
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
            label = STATUS_LABELS.get(status, status) + " (bottom strip)"
            marks.append(Line2D([], [], ls="none", marker=STATUS_MARKERS[status], color="0.3", ms=7, label=label))
    return marks
