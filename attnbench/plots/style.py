"""How a series looks: its colour names its mechanism, its marker its implementation, its line style its run.

Colours are dealt, not declared: the distinct mechanisms of the data being plotted (the configuration name
without its parameters, so "m:variant" apart from "m") are sorted and take the colours of a qualitative palette
in turn, so that any set of mechanisms is told apart and the same data are always drawn alike. Configurations of
one mechanism (its parameters swept) share its colour in shades. When there are more mechanisms than colours,
each further round through the palette fills its markers differently (hollow, half filled), a second cue that
leaves the marker's shape to the implementation.
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
# How markers are filled on the first, second, ... round through the palette (matplotlib fill styles).
MARKER_FILLS = ("full", "none", "left", "bottom", "right", "top")
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


@dataclass(frozen=True)
class Style:
    """How each series looks, by configuration name (colour and marker fill), implementation (marker) and run
    (line style)."""

    colours: Mapping[str, str]
    fills: Mapping[str, str]
    markers: Mapping[str, str]
    lines: Mapping[str, str]

    @classmethod
    def build(cls, names: Iterable[str], impls: Iterable[str], runs: Sequence[str]) -> Style:
        """The style of every series among `names` (configuration names), `impls` and `runs`."""
        colours, fills = deal_colours(names)
        spare_markers = iter(SPARE_MARKERS * 4)
        markers = {impl: IMPL_MARKERS.get(impl) or next(spare_markers) for impl in sorted(set(impls))}
        lines = {run: RUN_LINES[i % len(RUN_LINES)] for i, run in enumerate(runs)}
        return cls(colours, fills, markers, lines)

    @property
    def second_cue(self) -> bool:
        """Whether some mechanism is told apart by its marker fill (there were more than the palette holds)."""
        return any(fill != MARKER_FILLS[0] for fill in self.fills.values())

    def look(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """Keyword arguments of `Axes.plot` for the series of `row` (a row of a series frame)."""
        return {
            "color": self.colours[row["name"]],
            "fillstyle": self.fills[row["name"]],
            "marker": self.markers[row["impl"]],
            "linestyle": self.lines[row["run"]],
        }

    def key(self, name: str) -> dict[str, Any]:
        """Keyword arguments of a legend handle that shows the mechanism configuration `name`."""
        key: dict[str, Any] = {"color": self.colours[name], "lw": 2.5}
        if self.second_cue:
            key |= {"marker": "o", "fillstyle": self.fills[name], "ms": 7}
        return key


def deal_colours(names: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(colour, marker fill) of every configuration name: the sorted distinct mechanisms take the palette's
    colours in turn, one marker fill per round through it; the configurations of one mechanism, its shades."""
    by_mechanism: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        by_mechanism.setdefault(mechanism_label(name), []).append(name)
    colours, fills = {}, {}
    for index, configs in enumerate(by_mechanism.values()):
        colour = PALETTE[index % len(PALETTE)]
        fill = MARKER_FILLS[index // len(PALETTE) % len(MARKER_FILLS)]
        for shade, name in enumerate(configs):
            colours[name], fills[name] = shade_of(colour, shade), fill
    return colours, fills


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
