"""The legend of a figure: what its panels drew, by part, and nothing they did not."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from attnbench.analysis.rows import NOT_RUN, natural_key
from attnbench.plots.style import COMPLEXITY_TAGS, NUMERICS_RING, STATUS_LABELS, STATUS_MARKERS, Style

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.figure import Figure


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
    """One legend outside the panels, by part: colour = mechanism, marker = implementation, line = run, then
    the marks. Section headers are entries without a handle, set in bold."""
    from matplotlib.lines import Line2D

    handles: list[Artist] = []
    headers = []

    def section(title: str, entries: list[Artist]) -> None:
        headers.append(title)
        handles.extend([Line2D([], [], ls="none", label=title), *entries])

    mechanisms = "mechanism (colour, marker fill)" if style.second_cue else "mechanism (colour)"
    section(mechanisms, _mechanism_handles(style, series, needs))
    impls = [Line2D([], [], color="0.3", marker=style.markers[i], ls="none", label=i) for i in sorted(needs.impls)]
    section("implementation (marker)", impls)
    runs = [run for run in style.lines if run in needs.runs]
    if len(style.lines) > 1 and runs:
        section("run (line style)", [Line2D([], [], color="0.3", ls=style.lines[r], label=r) for r in runs])
    marks = _mark_handles(needs)
    if marks:
        section("marks", marks)
    legend = fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, handlelength=2.2)
    for text in legend.get_texts():
        if text.get_text() in headers:
            text.set_fontweight("bold")


def _mechanism_handles(style: Style, series: pd.DataFrame, needs: LegendNeeds) -> list[Artist]:
    """Each mechanism configuration drawn, with its complexity in T: what its slope should be read against."""
    from matplotlib.lines import Line2D

    complexity = series.groupby("name")["complexity"].first().map(COMPLEXITY_TAGS).dropna().to_dict()
    return [
        Line2D([], [], **style.key(name), label=f"{name}  {complexity[name]}" if name in complexity else name)
        for name in sorted(needs.names, key=natural_key)
    ]


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
