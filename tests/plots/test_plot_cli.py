"""`attnbench plot` from the command line: on the synthetic seqlen run, its errors, and end to end on a real CPU
run of the seqlen suite (the `cpu_run` fixture)."""

from __future__ import annotations

from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from attnbench.analysis.rows import AnalysisError
from attnbench.analysis.series import AXES
from attnbench.cli.plot import METRICS as CLI_METRICS
from attnbench.cli.plot import X_AXES as CLI_AXES
from attnbench.cli.plot import plot
from attnbench.plots.figures import FIGURES, METRICS, plot_results


def _cli() -> click.Group:
    @click.group()
    def group() -> None:
        pass

    group.add_command(plot)
    return group


def test_cli_plot(seqlen_run: Path, tmp_path: Path):
    out = tmp_path / "figures"
    result = CliRunner().invoke(
        _cli(), ["plot", str(seqlen_run), "-o", str(out), "--metric", "time", "-m", "mha", "-m", "tssa",
                 "--label", "seqlen-gpu0=H100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "## Scaling exponents in T" in result.output and "| H100 |" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "crossover.csv", "summary.csv", "summary.md", "time_vs_seqlen.png", "time_vs_seqlen.svg"
    ]  # fmt: skip
    assert "aft" not in (out / "summary.csv").read_text()


def test_figures_of_one_run_go_beside_it(seqlen_run: Path):
    """Only the runner writes inside a run folder: by default the figures of one run go to plots/<run> beside it."""
    result = CliRunner().invoke(_cli(), ["plot", str(seqlen_run), "--metric", "time"])
    assert result.exit_code == 0, result.output
    assert (seqlen_run.parent / "plots" / seqlen_run.name / "time_vs_seqlen.png").is_file()
    assert sorted(p.name for p in seqlen_run.iterdir()) == ["meta.json", "rows.jsonl"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{empty}"], "no attnbench runs found"),
        (["{missing}"], "no such file or folder"),
        (["{run}", "--x", "B"], "the runs do not sweep B"),
        (["{run}", "-m", "gpt"], "no rows for mechanism 'gpt'"),
        (["{run}", "--label", "nope=x"], "--label nope=x: no such run"),
        (["{run}", "--label", "nolabel"], "expected RUN=LABEL"),
        (["{run}", "-o", "{run}/figures"], "lies inside the run folder"),
        (["{run}", "-o", "{run}"], "is a run folder"),
        (["{run}", "-o", "{empty}/a-file/figures"], "a-file"),
    ],
)
def test_cli_errors(seqlen_run: Path, tmp_path: Path, args: list[str], message: str):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a-file").write_text("")  # a folder cannot be made under it
    where = {"empty": tmp_path / "empty", "missing": tmp_path / "missing", "run": seqlen_run}
    result = CliRunner().invoke(_cli(), ["plot", *(a.format(**where) for a in args)])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_choices_match_the_library():
    assert CLI_AXES == AXES and CLI_METRICS == METRICS == tuple(FIGURES)


@pytest.mark.slow
def test_real_cpu_run_plotted_end_to_end(cpu_run: Path, tmp_path: Path):
    out = tmp_path / "plots"
    result = CliRunner().invoke(_cli(), ["plot", str(cpu_run.parent), "-o", str(out)])
    assert result.exit_code == 0, result.output
    for metric in ("time", "memory", "throughput", "speedup"):
        for fmt in ("png", "svg"):
            path = out / f"{metric}_vs_seqlen.{fmt}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert "## Scaling exponents in T" in result.output and "## Crossover with MHA" in result.output
    fits = pd.read_csv(out / "summary.csv").set_index(["name", "impl"])
    assert {("mha", "reference"), ("mha", "sdpa"), ("tssa", "reference")} <= set(fits.index)
    for record in fits.itertuples():
        # three lengths, all of them fitted; the interval brackets the estimate
        assert record.time_points == "128;256;512" and record.memory_points == "128;256;512"
        assert record.time_low <= record.time_exponent <= record.time_high
        assert record.time_verdict in ("agrees", "disagrees", "inconclusive")
    assert fits.loc[("mha", "reference"), "complexity"] == "quadratic"
    assert fits.loc[("tssa", "reference"), "complexity"] == "linear"
    # peak memory is deterministic: the reference softmax holds T×T scores per sequence, tssa nothing of the kind
    assert fits.loc[("mha", "reference"), "memory_exponent"] > 1.5
    assert 0.8 < fits.loc[("tssa", "reference"), "memory_exponent"] < 1.2
    crossing = pd.read_csv(out / "crossover.csv")
    assert set(crossing["name"]) == {"tssa"} and set(crossing["metric"]) == {"time", "memory"}
    assert set(crossing["kind"]) <= {"within", "below", "above"}
    summary = (out / "summary.md").read_text()
    assert "No case ran out of memory (largest T run: 512)" in summary


def test_real_cpu_run_other_choices(cpu_run: Path, tmp_path: Path):
    report = plot_results(cpu_run, tmp_path / "p", impls=["reference"], metrics=["time"])
    assert sorted(p.name for p in report.files if p.suffix == ".png") == ["time_vs_seqlen.png"]
    assert set(report.summary.fits["impl"]) == {"reference"}
    with pytest.raises(AnalysisError, match="the runs do not sweep d: every row has d=32"):
        plot_results(cpu_run, tmp_path / "q", x="d")
    # B = 4096 // T: one B per T, so B "varies", but only as T does
    with pytest.raises(AnalysisError, match="do not sweep B on its own: they set it from T"):
        plot_results(cpu_run, tmp_path / "q", x="B")
