"""`attnbench report RESULTS... -o report.html`: one self-contained HTML page of one run or several."""

from __future__ import annotations

from pathlib import Path

import click

from attnbench.cli.plot import _labels


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_path",
    default="report.html",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The page to write (never inside a run folder).",
)
@click.option("--run", "runs", multiple=True, metavar="PATTERN", help="Keep only runs whose folder matches (glob).")
@click.option("--label", "labels", multiple=True, metavar="RUN=LABEL", help="Name a run on the page (repeatable).")
def report(paths: tuple[Path, ...], out_path: Path, runs: tuple[str, ...], labels: tuple[str, ...]) -> None:
    """Write one HTML page of the runs at or below each PATH [default: results].

    \b
    The page needs no network and no other file (figures as inline SVG, styles and script inline):
    failures first, each run's device, versions, commit, timer and ceilings, who is fastest, leanest
    and most accurate at each T, the scaling summary, every figure, and every row in a table that sorts
    by any column, filters by mechanism, implementation, mode and status, and gives the command that
    re-runs each case (as `attnbench show RUN --repro CASE` prints it).
    """
    from attnbench.analysis.rows import AnalysisError
    from attnbench.cli.errors import InputError, os_error_message
    from attnbench.report.page import build_report
    from attnbench.results.files import ResultsError

    try:
        written = build_report(list(paths) or ["results"], out_path, runs=runs, labels=_labels(labels))
    except (AnalysisError, ResultsError) as exc:
        raise InputError(str(exc)) from None
    except OSError as exc:  # a page that cannot be written: bad input (exit 2)
        raise InputError(os_error_message(exc)) from None
    click.echo(f"report: {written}  (open it in a browser; it needs no other file)")
