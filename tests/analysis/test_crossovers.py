"""Crossover lengths against the quadratic baseline, on the synthetic seqlen run (see `synthetic_runs`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from synthetic_runs import SDPA_C, TSSA_C, loaded

from attnbench.analysis.crossover import crossovers, find_crossover
from attnbench.mechanisms import CROSSOVER_BASELINE


def test_crossover_with_the_baseline(seqlen_run: Path):
    assert CROSSOVER_BASELINE == "mha"  # the synthetic run's quadratic mechanism
    _, _, series = loaded(seqlen_run)
    table = crossovers(series).set_index(["name", "metric"])
    time = table.loc["tssa", "time"]
    # the launch cost moves the true crossing a little below 2000: solve 0.02 + c T² = 2e-3 T
    exact = (TSSA_C + math.sqrt(TSSA_C**2 - 4 * SDPA_C * 0.02)) / (2 * SDPA_C)
    assert time.kind == "within" and time.T_star == pytest.approx(exact, rel=0.08)
    assert time.impls == "fast vs mha sdpa at T=2048"
    # memory: tssa's 2048·T bytes against mha's best of 8·T² (reference) and 4096·T (sdpa): equal at T=256
    assert table.loc["tssa", "memory"].T_star == pytest.approx(256)
    assert table.loc["aft:simple", "time"].kind == "above"


def test_find_crossover_edges():
    assert find_crossover([1, 2, 4], [0.5, 0.4, 0.3]).kind == "below"
    assert find_crossover([1, 2, 4], [3.0, 2.0, 1.5]).text.startswith("above the swept range")
    assert find_crossover([], []).kind == "none"
    # noise around 1 at short lengths: the crossing reported is the last one, after which it stays ahead
    found = find_crossover([1, 2, 4, 8], [0.9, 1.1, 2.0, 0.5])
    assert found.kind == "within" and 4 < found.x < 8
    assert find_crossover([100, 400], [2.0, 0.5]).x == pytest.approx(200)
