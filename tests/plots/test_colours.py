"""Colours are dealt to the mechanisms of the data being plotted, never declared per mechanism: any set of
mechanisms is told apart, the same data are always drawn alike, and past the palette a second cue (marker fill)
keeps every mechanism distinct."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.colors import to_hex

from attnbench.analysis.runs import load_runs
from attnbench.analysis.series import series_frame
from attnbench.plots.figures import time_figure
from attnbench.plots.style import MARKER_FILLS, NUMERICS_RING, PALETTE, Style, mechanism_label


@pytest.mark.slow
def test_every_mechanism_of_a_real_run_gets_its_own_colour(cpu_run: Path):
    runs, frame = load_runs(cpu_run)
    series = series_frame(frame, "T")
    style = Style.build(series["name"], series["impl"], [run.label for run in runs])
    mechanisms = sorted(set(series["name"]))
    assert len(mechanisms) >= 2
    assert len({style.colours[name] for name in mechanisms}) == len(mechanisms)
    # the figure draws each mechanism's lines (marked, and without an id, unlike strip marks and rings) in its
    # colour, and nothing else in colour
    figure = time_figure(series, style, runs)
    lines = [
        line for ax in figure.axes for line in ax.get_lines() if not line.get_gid() and line.get_marker() != "None"
    ]
    assert {to_hex(line.get_color()) for line in lines} == {style.colours[name] for name in mechanisms}


def test_colours_are_dealt_in_sorted_order_whatever_the_order_of_the_rows():
    names = ["zeta", "alpha:wide", "alpha", "mid[k=2]", "mid[k=4]"]
    forward = Style.build(names, ["reference"], ["run"])
    backward = Style.build(list(reversed(names)) * 2, ["reference"], ["run"])
    assert forward == backward
    # sorted mechanisms: alpha, alpha:wide, mid, zeta; the configurations of one mechanism share its colour in shades
    assert [forward.colours[name] for name in ("alpha", "alpha:wide", "mid[k=2]", "zeta")] == list(PALETTE[:4])
    assert forward.colours["mid[k=4]"] not in PALETTE and mechanism_label("mid[k=4]") == "mid"
    assert len(set(forward.colours.values())) == len(names)
    assert not forward.second_cue and set(forward.fills.values()) == {"full"}


@pytest.mark.parametrize("count", [len(PALETTE) + 1, 3 * len(PALETTE) + 2])
def test_more_mechanisms_than_colours_get_a_second_cue(count: int):
    names = [f"mechanism{k:02d}" for k in range(count)]
    style = Style.build(names, ["reference"], ["run"])
    cues = {(style.colours[name], style.fills[name]) for name in names}
    assert len(cues) == count  # every mechanism told apart by colour and marker fill together
    assert NUMERICS_RING not in style.colours.values()
    assert style.second_cue and set(style.fills.values()) <= set(MARKER_FILLS)
    look = style.look({"name": names[-1], "impl": "reference", "run": "run"})
    assert look["fillstyle"] == style.fills[names[-1]] != "full"
    assert style.key(names[0])["fillstyle"] == "full"
