"""The figures of the page: those `attnbench plot` draws (time, peak memory, throughput, speed-up against every
swept axis), each as an inline SVG element, with nothing that points outside the page."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from attnbench.analysis.runs import RunInfo
from attnbench.analysis.series import AXIS_LABELS, series_frame
from attnbench.plots.figures import FIGURES, METRICS, SKIP_REASONS
from attnbench.plots.style import Style

# The XML declaration and DOCTYPE (which names a DTD by URL) of a standalone SVG file: not wanted inline.
SVG_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)
# matplotlib's RDF metadata block (creator, format) names vocabularies by URL: dropped, the page says what drew it.
SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.DOTALL)


@dataclass(frozen=True)
class InlineFigure:
    """One figure: its title, the anchor it is linked by, and its SVG markup."""

    title: str
    anchor: str
    svg: str


def inline_figures(frame: pd.DataFrame, runs: Sequence[RunInfo], axes: Sequence[str]) -> tuple[list, list[str]]:
    """(figures, notes): every figure of `frame` against each axis in `axes`, and why any was not drawn."""
    by_axis = {axis: series_frame(frame, axis) for axis in axes}
    if not by_axis:
        return [], ["the runs sweep no axis (every series holds one shape): no figure to draw"]
    every = pd.concat(by_axis.values())
    style = Style.build(every["name"], every["impl"], [run.label for run in runs])
    figures, notes = [], []
    for axis, series in by_axis.items():
        for metric in METRICS:
            figure = FIGURES[metric](series, style, runs)
            title = f"{metric} against {AXIS_LABELS[axis]}"
            if figure is None:
                notes.append(f"{title}: {SKIP_REASONS[metric]}")
                continue
            figures.append(InlineFigure(title, f"figure-{metric}-{axis}", svg_markup(figure)))
    return figures, notes


def svg_markup(figure) -> str:
    """`figure` as an `<svg>` element to place in HTML: no XML prologue, no date, scaled by CSS."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    # Text as text, not glyph outlines: the page's find and a reader's copy work on labels and legends, and the
    # markup is a third of the size.
    with rc_context({"svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return SVG_METADATA.sub("", SVG_PROLOGUE.sub("", buffer.getvalue(), count=1), count=1)
