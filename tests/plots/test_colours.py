"""Looks are dealt to the mechanisms of the data being plotted, never declared per mechanism: each mechanism has its
own colour, marker shape and line style, any set of mechanisms is told apart (past the palette too), the same data
are always drawn alike, implementations fill the marker, and lines that coincide are marked so in the legend."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from matplotlib.colors import to_hex

from attnbench.analysis.runs import load_runs
from attnbench.analysis.series import series_frame
from attnbench.plots.figures import time_figure
from attnbench.plots.style import (
    MARKER_FILLS,
    MECHANISM_DASHES,
    MECHANISM_MARKERS,
    NUMERICS_RING,
    PALETTE,
    Style,
    mechanism_label,
)


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
    assert [forward.markers[name] for name in ("alpha", "alpha:wide", "mid[k=2]", "zeta")] == list(
        MECHANISM_MARKERS[:4]
    )
    assert forward.markers["mid[k=4]"] == forward.markers["mid[k=2]"]  # one mechanism: one marker, shades of colour
    assert [forward.dashes[name] for name in ("alpha", "alpha:wide", "mid[k=2]", "zeta")] == list(MECHANISM_DASHES[:4])


@pytest.mark.parametrize("count", [len(PALETTE) + 1, 3 * len(PALETTE) + 2])
def test_every_mechanism_differs_from_its_neighbours_in_colour_marker_and_line(count: int):
    names = [f"mechanism{k:02d}" for k in range(count)]
    style = Style.build(names, ["reference", "fast"], ["run"])
    cues = {(style.colours[name], style.markers[name], str(style.dashes[name])) for name in names}
    assert len(cues) == count  # any two mechanisms differ in at least one of the three
    for before, after in itertools.pairwise(names):
        assert style.colours[before] != style.colours[after] and style.markers[before] != style.markers[after]
        assert style.dashes[before] != style.dashes[after]
    assert NUMERICS_RING not in style.colours.values()
    look = style.look({"name": names[-1], "impl": "fast", "run": "run"})
    assert look["linestyle"] == style.dashes[names[-1]] and look["marker"] == style.markers[names[-1]]
    assert look["fillstyle"] == MARKER_FILLS[1] and style.fills["reference"] == MARKER_FILLS[0]


def test_several_runs_take_the_line_style_and_mechanisms_keep_colour_and_marker():
    style = Style.build(["alpha", "beta"], ["reference"], ["gpu-a", "gpu-b"])
    looks = [style.look({"name": "alpha", "impl": "reference", "run": run}) for run in ("gpu-a", "gpu-b")]
    assert looks[0]["linestyle"] != looks[1]["linestyle"] and looks[0]["color"] == looks[1]["color"]
    assert style.key("alpha")["ls"] == "-"


def _legend_texts(figure) -> list[str]:
    return [text.get_text() for legend in figure.legends for text in legend.get_texts()]


def test_a_series_drawn_on_top_of_another_is_marked_identical_in_the_legend(seqlen_run: Path, seed: int):
    import json

    import numpy as np

    rows = [json.loads(line) for line in (seqlen_run / "rows.jsonl").read_text().splitlines()]
    source = sorted({row["mechanism"] for row in rows if not row.get("variant")})[0]
    jitter = np.random.default_rng(seed).uniform(0.995, 1.005, size=len(rows))  # within the 2% a line hides
    extra = []
    for row, factor in zip(rows, jitter, strict=True):
        if row["mechanism"] == source:
            for name, scale in (("zz_copy", factor), ("zz_slower", 1.5 * factor)):
                times = {k: row[k] * scale for k in ("time_ms", "time_p20_ms", "time_p80_ms") if row.get(k)}
                extra.append({**row, **times, "mechanism": name, "case_id": f"{name}-{row['case_id']}"})
    with (seqlen_run / "rows.jsonl").open("a") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in extra)
    runs, frame = load_runs(seqlen_run)
    series = series_frame(frame, "T")
    style = Style.build(series["name"], series["impl"], [run.label for run in runs])
    texts = _legend_texts(time_figure(series, style, runs))
    copy = next(text for text in texts if text.startswith("zz_copy"))
    slower = next(text for text in texts if text.startswith("zz_slower"))
    assert copy.endswith(f"≡ {source}") and "≡" not in slower
    assert sum("≡" in text for text in texts) == 1
