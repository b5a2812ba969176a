"""Who wins, on rows with fresh random values: the fastest, leanest and most accurate contender of each case and
length, its lead over the next one, and who may not compete (failed numerics, cases that did not run)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from attnbench.analysis.rows import prepare
from attnbench.report.winners import TIE, Win, best_of, contenders, metrics_present, winners_table


def _rows(rng: np.random.Generator, lengths=(96, 384, 1536)) -> list[dict]:
    rows = []
    for T in lengths:
        for mechanism, impl in (("alpha", "reference"), ("alpha", "fast"), ("beta", "reference"), ("gamma", "x")):
            rows.append({
                "case_id": f"{mechanism}-{impl}-{T}", "mechanism": mechanism, "variant": "", "impl": impl,
                "mode": "fwd", "level": "core", "dtype": "fp32", "causal": False, "B": 3, "T": T, "H": 5, "d": 24,
                "params": {}, "status": "ok", "numerics_ok": True, "run": "r",
                "time_ms": float(rng.uniform(0.1, 9.0)), "peak_mem_bytes": float(rng.integers(1, 900) * 4096),
                "rel_err": float(rng.uniform(1e-8, 1e-3)),
            })  # fmt: skip
    return rows


def _expected(frame: pd.DataFrame, column: str) -> tuple[str, float]:
    ordered = frame.sort_values(column)
    best, second = ordered.iloc[0], ordered.iloc[1]
    return f"{best['mechanism']} {best['impl']}", second[column] / best[column]


def test_each_length_names_the_true_winners_with_their_lead(seed):
    rng = np.random.default_rng(seed)
    frame = prepare(pd.DataFrame(_rows(rng)))
    titles, entries = winners_table(frame)
    assert titles == ["fastest", "leanest", "most accurate"]
    assert [entry["T"] for entry in entries] == ["96", "384", "1536"]
    for entry in entries:
        group = frame[frame["T"] == float(entry["T"])]
        for title, column in (("fastest", "time_ms"), ("leanest", "peak_mem_bytes"), ("most accurate", "rel_err")):
            name, ratio = _expected(group, column)
            win = entry["wins"][title]
            assert win.contender == name and win.ratio == pytest.approx(ratio)


def test_a_wrong_answer_never_wins_on_time_or_memory_and_a_case_that_did_not_run_never_wins(seed):
    rng = np.random.default_rng(seed)
    rows = _rows(rng, lengths=(200,))
    rows[0] |= {"time_ms": 1e-6, "peak_mem_bytes": 1.0, "numerics_ok": False}
    rows[1] |= {"status": "oom", "time_ms": 1e-7, "peak_mem_bytes": 0.5, "rel_err": 1e-12}
    frame = prepare(pd.DataFrame(rows)).assign()
    frame = frame.assign(contender=contenders(frame))
    for title, column in (("fastest", "time_ms"), ("leanest", "peak_mem_bytes")):
        metric = next(m for m in metrics_present(frame) if m.title == title)
        win = best_of(frame, metric)
        assert win.contender not in ("alpha reference", "alpha fast")
        eligible = frame.iloc[2:]
        assert win.contender == _expected(eligible, column)[0]
    accurate = best_of(frame, next(m for m in metrics_present(frame) if m.title == "most accurate"))
    assert accurate.contender != "alpha fast"  # did not run: its error is not a measurement


def test_a_lead_within_one_percent_is_a_tie_and_a_lone_contender_says_so():
    assert Win("a x", "1 ms", TIE * 0.999, "b y").lead == "tied with b y"
    assert Win("a x", "1 ms", 2.5, "b y").lead == "2.5× ahead of b y"
    assert Win("a x", "1 ms", None, "").lead == "only contender"
    assert Win("a x", "0 ms", math.inf, "b y").lead == "inf× ahead of b y"


def test_fields_some_rows_add_join_the_table_and_absent_ones_do_not(seed):
    rng = np.random.default_rng(seed)
    rows = _rows(rng, lengths=(128,))
    frame = prepare(pd.DataFrame(rows))
    assert "smallest cache" not in winners_table(frame)[0]
    for row in rows:
        row["cache_bytes"] = float(rng.integers(1, 1000) * 1024)
    titles, entries = winners_table(prepare(pd.DataFrame(rows)))
    assert "smallest cache" in titles
    best = min(rows, key=lambda r: r["cache_bytes"])
    assert entries[0]["wins"]["smallest cache"].contender == f"{best['mechanism']} {best['impl']}"


def test_decode_steps_of_different_new_token_counts_are_not_compared_with_each_other(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for q_len in (1, 3):
        for row in _rows(rng, lengths=(640,)):
            rows.append({**row, "mode": "decode", "q_len": q_len, "case_id": f"{row['case_id']}-{q_len}"})
    _, entries = winners_table(prepare(pd.DataFrame(rows)))
    assert [entry["shape"] for entry in entries] == ["B=3 H=5 d=24 q_len=1", "B=3 H=5 d=24 q_len=3"]
    for entry, q_len in zip(entries, (1, 3), strict=True):
        group = pd.DataFrame([r for r in rows if r["q_len"] == q_len])
        assert entry["wins"]["fastest"].contender == _expected(group, "time_ms")[0]
