"""How a series looks: its mechanism has its own colour, marker shape and line style, its implementation fills the
marker (full, hollow, half), and several runs overlaid take the line style in turn.

Looks are dealt, not declared: the distinct mechanisms of the data being plotted (the configuration name without
its parameters, so "m:variant" apart from "m") are sorted and take, in turn, the colours of a qualitative
palette, the marker shapes and the dash patterns. The three cycles have different lengths, so two mechanisms next
to each other in the order differ in all three, and any two differ in at least one: a mechanism is told apart in
greyscale, by a reader who cannot tell two colours apart, and where two lines cross. Configurations of one
mechanism (its parameters swept) share its look in shades of its colour. The same data are always drawn alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# matplotlib's tab10 without its red (kept for the ring that marks failed numerics), then three colours far from
# all of those, then tab10's grey: last, since greys also draw the reference slopes, ceilings and legend keys.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#393b79", "#1b9e77", "#e6ab02", "#7f7f7f",
)  # fmt: skip
NUMERICS_RING = "#d62728"  # no mechanism is drawn in this red
# Marker shapes dealt to mechanisms: all fillable (so that an implementation's fill shows), none of the shapes
# that mark cases that did not run (STATUS_MARKERS), and each readable at 4.5 points.
MECHANISM_MARKERS = ("o", "s", "^", "D", "v", "p", "h", "<", ">", "P", "8")
# Dash patterns dealt to mechanisms when one run is drawn (several runs take the line style instead).
MECHANISM_DASHES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))
# How implementations fill their markers, in sorted order with the reference implementation first.
MARKER_FILLS = ("full", "none", "left", "bottom", "right", "top")
FIRST_IMPL = "reference"
RUN_LINES = ("-", "--", ":", "-.")
STATUS_MARKERS = {"oom": "X", "unsupported": "|", "error": "$!$", "timeout": "$!$", "crash": "$!$"}
STATUS_SIZES = {"oom": 7, "unsupported": 10}
STATUS_LABELS = {"oom": "out of memory: the wall"}
COMPLEXITY_TAGS = {"linear": "O(T)", "quadratic": "O(T²)"}


@dataclass(frozen=True)
class Style:
    """How each series looks: by configuration name (colour, marker shape, dash pattern), implementation (marker
    fill) and run (line style, when several runs are drawn)."""

    colours: Mapping[str, str]
    markers: Mapping[str, str]
    dashes: Mapping[str, Any]
    fills: Mapping[str, str]
    lines: Mapping[str, str]

    @classmethod
    def build(cls, names: Iterable[str], impls: Iterable[str], runs: Sequence[str]) -> Style:
        """The style of every series among `names` (configuration names), `impls` and `runs`."""
        colours, markers, dashes = deal_looks(names)
        ordered = sorted(set(impls), key=lambda impl: (impl != FIRST_IMPL, impl))
        fills = {impl: MARKER_FILLS[i % len(MARKER_FILLS)] for i, impl in enumerate(ordered)}
        lines = {run: RUN_LINES[i % len(RUN_LINES)] for i, run in enumerate(runs)}
        return cls(colours, markers, dashes, fills, lines)

    @property
    def runs_take_line_style(self) -> bool:
        """Whether line styles tell runs apart (several runs) rather than mechanisms (one run)."""
        return len(self.lines) > 1

    def line_style(self, name: str, run: str) -> Any:
        """The line style of a series: its run's when several runs are drawn, else its mechanism's dashes."""
        return self.lines[run] if self.runs_take_line_style else self.dashes[name]

    def look(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments of `Axes.plot` for the series of `row` (a row of a series frame)."""
        return {
            "color": self.colours[row["name"]],
            "marker": self.markers[row["name"]],
            "fillstyle": self.fills[row["impl"]],
            "linestyle": self.line_style(row["name"], row["run"]),
        }

    def key(self, name: str) -> dict[str, Any]:
        """Keyword arguments of a legend handle that shows the mechanism configuration `name`: its colour, its
        marker (filled) and, with one run drawn, its dash pattern."""
        dashes = "-" if self.runs_take_line_style else self.dashes[name]
        return {"color": self.colours[name], "marker": self.markers[name], "ls": dashes, "lw": 1.8, "ms": 6}

    def series_of(self, color: str, marker: str, fillstyle: str) -> tuple[str, str] | None:
        """The (configuration name, implementation) drawn with this colour, marker and fill, or None (a guide
        line, a ceiling, a mark of the strip)."""
        from matplotlib.colors import to_hex

        names = [n for n in self.colours if to_hex(self.colours[n]) == to_hex(color) and self.markers[n] == marker]
        impls = [impl for impl, fill in self.fills.items() if fill == fillstyle]
        return (names[0], impls[0]) if len(names) == 1 and len(impls) == 1 else None


def deal_looks(names: Iterable[str]) -> tuple[dict[str, str], dict[str, str], dict[str, Any]]:
    """(colour, marker, dashes) of every configuration name: the sorted distinct mechanisms take the palette's
    colours, the marker shapes and the dash patterns in turn; the configurations of one mechanism, its shades."""
    by_mechanism: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        by_mechanism.setdefault(mechanism_label(name), []).append(name)
    colours, markers, dashes = {}, {}, {}
    for index, configs in enumerate(by_mechanism.values()):
        colour = PALETTE[index % len(PALETTE)]
        for shade, name in enumerate(configs):
            colours[name] = shade_of(colour, shade)
            markers[name] = MECHANISM_MARKERS[index % len(MECHANISM_MARKERS)]
            dashes[name] = MECHANISM_DASHES[index % len(MECHANISM_DASHES)]
    return colours, markers, dashes


def mechanism_label(name: str) -> str:
    """The mechanism (and variant) of a configuration name: "m:variant[k=2]" → "m:variant"."""
    return name.split("[")[0]


def shade_of(colour: str, k: int) -> str:
    """The k-th shade of a colour: the colour itself, then alternately darker and lighter."""
    if k == 0:
        return colour
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)
    amount = min(0.7, 0.3 * math.ceil(k / 2))
    target = 0.0 if k % 2 else 255.0
    mixed = rgb + (target - rgb) * amount
    return "#" + "".join(f"{round(float(v)):02x}" for v in mixed)
