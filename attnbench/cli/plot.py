"""`attnbench plot [PATH ...]`: figures and a scaling summary of one run, or of every run below a folder."""

from __future__ import annotations

from pathlib import Path

import click

# The choices of `attnbench.analysis.series.AXES` and `attnbench.plots.figures.METRICS`, repeated here so that
# `--help` imports no pandas (a test checks that they agree).
X_AXES = ("T", "D", "d", "B", "H", "G")
METRICS = ("time", "memory", "throughput", "speedup")


def _labels(values: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for value in values:
        run, sep, label = value.partition("=")
        if not sep or not run or not label:
            raise click.BadParameter(f"{value!r}: expected RUN=LABEL", param_hint="--label")
        labels[run] = label
    return labels


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write figures and summaries, never inside a run folder "
    "[default: PATH/plots; for one run folder, plots/RUN beside it].",
)
@click.option(
    "--run",
    "runs",
    multiple=True,
    metavar="PATTERN",
    help="Keep only runs whose folder name matches this glob (repeatable).",
)
@click.option(
    "-m",
    "--mechanism",
    "mechanisms",
    multiple=True,
    metavar="NAME",
    help="Keep only this mechanism, or one of its variants as NAME:VARIANT (repeatable).",
)
@click.option("--impl", "impls", multiple=True, metavar="NAME", help="Keep only this implementation (repeatable).")
@click.option(
    "--x",
    "xs",
    multiple=True,
    type=click.Choice(X_AXES),
    help="x-axis (repeatable) [default: every axis the runs swept].",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    type=click.Choice(METRICS),
    help="Figures to draw (repeatable) [default: all].",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="RUN=LABEL",
    help="Name a run in figures and tables, to overlay runs of one suite (repeatable).",
)
def plot(
    paths: tuple[Path, ...],
    out_dir: Path | None,
    runs: tuple[str, ...],
    mechanisms: tuple[str, ...],
    impls: tuple[str, ...],
    xs: tuple[str, ...],
    metrics: tuple[str, ...],
    labels: tuple[str, ...],
) -> None:
    """Figures (PNG and SVG) and fitted scaling exponents of the runs at or below each PATH [default: results].

    \b
    Time, peak memory and throughput against T (and D, B, H when swept), the speed-up of every
    implementation over its mechanism's reference, fitted exponents with 95% intervals, the length
    from which each linear-time mechanism beats the quadratic baseline, and where each one ran out
    of memory. The summary is printed and written as summary.md, summary.csv and crossover.csv.
    """
    from attnbench.analysis.rows import AnalysisError
    from attnbench.cli.errors import InputError, os_error_message
    from attnbench.plots.figures import plot_results
    from attnbench.results.files import ResultsError

    try:
        report = plot_results(
            list(paths) or ["results"],
            out_dir,
            runs=runs,
            mechanisms=mechanisms,
            impls=impls,
            x=xs or None,
            metrics=metrics or METRICS,
            labels=_labels(labels),
        )
    except (AnalysisError, ResultsError) as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:  # a folder that cannot be written: bad input (exit 2)
        raise InputError(os_error_message(exc)) from None
    click.echo(report.text)
    for note in report.skipped:
        click.echo(f"not drawn: {note}")
    click.echo(f"wrote {len(report.files)} files to {report.out_dir}:")
    for path in report.files:
        click.echo(f"  {path}")
