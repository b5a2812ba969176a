"""The figures of `attnbench plot` on the synthetic seqlen run: what each one marks, the files `plot_results`
writes, overlaid runs, and no matplotlib until something is drawn."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from synthetic_runs import loaded, seqlen_rows, write_run

from attnbench.analysis.runs import load_runs
from attnbench.analysis.series import series_frame
from attnbench.analysis.summary import summarize
from attnbench.plots.figures import plot_results, time_figure
from attnbench.plots.style import Style


def test_oom_and_numerics_marks_in_the_figure(seqlen_run: Path):
    runs, _, series = loaded(seqlen_run)
    style = Style.build(series["name"], series["impl"], [r.label for r in runs])
    figure = time_figure(series, style, runs)
    lines = {line.get_gid(): line for ax in figure.axes for line in ax.get_lines() if line.get_gid()}
    oom = lines["oom-seqlen-gpu0-mha-reference"]
    assert list(oom.get_xdata()) == [4096, 8192]
    assert oom.get_color() == style.colours["mha"]
    assert list(lines["unsupported-seqlen-gpu0-aft-simple-reference"].get_xdata()) == [4096, 8192]
    assert list(lines["numerics-failed-seqlen-gpu0-tssa-reference"].get_xdata()) == [8192]


def test_plot_results_writes_every_figure_and_summary(seqlen_run: Path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)
    report = plot_results(seqlen_run.parent)
    assert report.out_dir == seqlen_run.parent / "plots"
    names = {p.name for p in report.files}
    for metric in ("time", "memory", "throughput", "speedup"):
        assert {f"{metric}_vs_seqlen.png", f"{metric}_vs_seqlen.svg"} <= names
    assert {"summary.md", "summary.csv", "crossover.csv"} <= names
    for path in report.files:
        assert path.stat().st_size > 0, path
    assert (seqlen_run.parent / "plots" / "time_vs_seqlen.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (seqlen_run.parent / "plots" / "time_vs_seqlen.svg").read_text()
    assert 'id="oom-seqlen-gpu0-mha-reference"' in svg
    markdown = (report.out_dir / "summary.md").read_text()
    assert "## Scaling exponents in T" in markdown and "T* ≈" in markdown and "| 2048 | 4096 |" in markdown
    assert "failed the numerics check" in markdown


def test_overlaid_runs_keep_one_colour_per_mechanism(tmp_path: Path):
    root = tmp_path / "results"
    write_run(root / "a" / "seqlen", seqlen_rows(seed=2), device="GPU A")
    write_run(root / "b" / "seqlen", seqlen_rows(seed=3, slowdown=1.5), device="GPU B")
    runs, frame = load_runs(root, labels={"a/seqlen": "gpu-a", "b/seqlen": "gpu-b"})
    assert [r.label for r in runs] == ["gpu-a", "gpu-b"]
    series = series_frame(frame, "T")
    style = Style.build(series["name"], series["impl"], ["gpu-a", "gpu-b"])
    figure = time_figure(series, style, runs)
    drawn = [line for ax in figure.axes for line in ax.get_lines() if line.get_color() == style.colours["tssa"]]
    assert {line.get_linestyle() for line in drawn if line.get_marker() == style.markers["tssa"]} >= {"-", "--"}
    fits = summarize(frame, runs, ["T"]).fits
    assert set(fits["run"]) == {"gpu-a", "gpu-b"}


def test_analysis_and_plots_import_no_matplotlib():
    modules = (
        ", ".join(f"attnbench.analysis.{m}" for m in ("rows", "runs", "series", "fits", "crossover", "summary"))
        + ", "
        + ", ".join(f"attnbench.plots.{m}" for m in ("style", "draw", "legend", "figures"))
    )
    code = f"import sys, {modules}, attnbench.cli.plot; print('matplotlib' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
