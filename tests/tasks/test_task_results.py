"""Task rows through the whole path: the runner trains them in worker processes and writes rows like any other,
a resume adds nothing, and the summary and figures read them (best mechanism per cell, accuracy figures)."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from attnbench.analysis.rows import prepare
from attnbench.analysis.summary import md_table
from attnbench.analysis.task_summary import best_per_cell, split_task_rows, task_section, task_table
from attnbench.plots.figures import plot_results
from attnbench.plots.task_figures import task_figures
from attnbench.results.files import ROW_FIELDS, case_id, read_rows
from attnbench.run.runner import run_suite
from attnbench.suite.load import load_suite

SUITE = """
name: recall-e2e
mechanisms:
  - name: mha
  - name: xca
impls: [sdpa, reference]
task:
  name: mqar
  cells:
    - {seq_len: [16, 32], kv_pairs: [2, 4], vocab: 16, d_model: 8, layers: 1, steps: 6, batch: 8, lrs: [0.01, 0.001],
       train_size: 32, test_size: 8, eval_every: 3}
limits: {case_timeout_s: 120}
"""


def cell(kv: int, T: int = 64, D: int = 32, seed: int = 0) -> dict:
    return {"name": "mqar", "seq_len": T, "kv_pairs": kv, "vocab": 64, "d_model": D, "heads": 1, "seed": seed}


def task_frame(rows: list[tuple[str, dict, float | None, float, str]]) -> pd.DataFrame:
    """A prepared frame of task rows: (mechanism, cell, accuracy, ms per step, status)."""
    records = []
    for mechanism, task, accuracy, time_ms, status in rows:
        record = dict.fromkeys(ROW_FIELDS)
        record.update(
            mechanism=mechanism, variant="", impl="reference", mode="fwd_bwd", level="layer", dtype="fp32",
            causal=True, B=32, T=task["seq_len"], H=1, d=task["d_model"], params={}, status=status, task=task,
            accuracy=accuracy, time_ms=time_ms, tokens_per_s=1e4, param_count=1000, best_lr=0.01, run="r",
        )  # fmt: skip
        records.append(record)
    return prepare(pd.DataFrame(records))


def test_the_best_mechanism_per_cell_is_the_most_accurate_and_ties_go_to_the_faster():
    frame = task_frame(
        [
            ("a", cell(8), 0.999, 9.0, "ok"),
            ("b", cell(8), 0.997, 3.0, "ok"),  # within half a point of a: tied, and faster, so named first
            ("c", cell(8), 0.60, 1.0, "ok"),
            ("a", cell(16), 0.90, 9.0, "ok"),
            ("c", cell(16), 0.95, 1.0, "ok"),
            ("d", cell(16), None, 0.0, "unsupported"),
        ]
    )
    best = best_per_cell(task_table(frame))
    assert list(best["best"]) == [[("b", 0.997), ("a", 0.999)], [("c", 0.95)]]
    text = task_section(frame, md_table)
    assert "**b** 99.7% (tied: a 99.9%)" in text and "**c** 95.0%\n" in text and "| unsupported |" in text


def test_task_rows_stay_out_of_the_scaling_analysis():
    speed_row = {**dict.fromkeys(ROW_FIELDS), "mechanism": "a", "T": 64, "status": "ok", "run": "r"}
    frame = pd.concat([task_frame([("a", cell(8), 0.5, 1.0, "ok")]), prepare(pd.DataFrame([speed_row]))])
    speed, tasks = split_task_rows(frame)
    assert len(speed) == 1 and len(tasks) == 1 and speed["task"].isna().all()


def test_a_task_row_id_includes_its_cell_and_other_rows_keep_theirs():
    key = {name: 1 for name in ("mechanism", "params", "impl", "mode", "level", "dtype", "causal", "B", "T", "H", "d")}
    assert case_id({**key, "task": None}) == case_id(key)
    assert case_id({**key, "task": cell(8)}) != case_id({**key, "task": cell(16)})


@pytest.mark.slow
def test_a_task_suite_runs_through_the_runner_and_plots(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(SUITE))
    suite = load_suite(path, device="cpu")
    summary = run_suite(suite, tmp_path / "results")
    rows = read_rows(summary.run_dir)
    assert len(rows) == len(suite.cases) == 8
    trained = [row for row in rows if row["mechanism"] == "mha"]
    assert {row["status"] for row in trained} == {"ok"}
    for row in trained:
        assert set(row["accuracy_by_lr"]) == {"0.01", "0.001"} and 0 <= row["accuracy"] <= 1
        assert row["time_ms"] > 0 and row["tokens_per_s"] > 0 and row["param_count"] > 0
        assert row["peak_mem_bytes"] > 0 and row["task"]["kv_pairs"] in (2, 4)
    assert {row["status"] for row in rows if row["mechanism"] == "xca"} == {"unsupported"}
    again = run_suite(suite, tmp_path / "results", resume=summary.run_dir)
    assert len(read_rows(again.run_dir)) == 8
    report = plot_results(summary.run_dir, tmp_path / "plots", formats=("png",))
    names = {file.name for file in report.files}
    assert {"accuracy_vs_kv.png", "accuracy_vs_step_time.png", "summary.md"} <= names
    assert "## Task accuracy" in report.text and "Best per cell" in report.text


def test_the_task_figures_draw_one_line_per_mechanism_and_one_point_per_row():
    frame = task_frame(
        [
            ("a", cell(8, T=64), 0.99, 9.0, "ok"),
            ("a", cell(16, T=128), 0.97, 12.0, "ok"),
            ("c", cell(8, T=64), 0.30, 2.0, "ok"),
            ("c", cell(16, T=128), 0.10, 3.0, "ok"),
            ("d", cell(8, T=64), None, 0.0, "unsupported"),
        ]
    )
    figures = dict(task_figures(frame, ["r"]))
    assert set(figures) == {"accuracy_vs_kv", "accuracy_vs_step_time"}
    (kv_axes,) = [ax for ax in figures["accuracy_vs_kv"].axes if ax.get_visible()]
    lines = {line.get_label(): list(line.get_ydata()) for line in kv_axes.get_lines()}
    assert lines == {"a": [99.0, 97.0], "c": pytest.approx([30.0, 10.0])}
    assert [tick.get_text() for tick in kv_axes.get_xticklabels()] == ["8\nT=64", "16\nT=128"]
    panels = [ax for ax in figures["accuracy_vs_step_time"].axes if ax.get_visible()]
    assert len(panels) == 2 and sum(len(ax.get_lines()) for ax in panels) == 4
