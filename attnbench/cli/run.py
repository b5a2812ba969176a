"""`attnbench run SUITE`: measure a suite into a new run folder (or finish one with --resume)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("suite_path", metavar="SUITE", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", default="results", show_default=True, help="Folder for the new run folder.")
@click.option("--dry-run", is_flag=True, help="Print the expanded cases and exit; nothing is measured or written.")
@click.option("--only", multiple=True, help="Mechanisms to keep (NAME or NAME:VARIANT); repeatable or comma list.")
@click.option("--impl", "impls", multiple=True, help="Implementations to keep; repeatable or comma list.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override an axis or key: T=1024,2048.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--resume", "resume", type=click.Path(file_okay=False), help="Finish the missing cases of this run.")
@click.option(
    "--compare-to",
    "compare_to",
    type=click.Path(),
    metavar="BASELINE",
    help="Then gate the run against BASELINE (a baseline file, a folder of baselines or a run folder) with "
    "`attnbench compare`'s defaults; exit 1 on a regression.",
)
def run(suite_path, out_dir, dry_run, only, impls, overrides, device, resume, compare_to) -> None:
    """Run SUITE (a YAML file) and record time, peak memory and accuracy for every case.

    A new folder `OUT/<suite>-<device>-<time>/` receives meta.json (where and how the run was made) and
    rows.jsonl (one row per case, written as each case ends). Interrupting keeps every finished row;
    `--resume RUN_DIR` measures only the cases missing from it. Exit code 2 for a bad suite.
    `--compare-to BASELINE` then compares the run with BASELINE and exits as `attnbench compare` does.
    """
    from attnbench.cli.tables import console as make_console
    from attnbench.run import environment
    from attnbench.suite.load import SuiteError, load_suite

    console = make_console(stderr=True)
    try:
        resolved_device = environment.pick_device(device)
        suite = load_suite(
            suite_path, device=resolved_device, overrides=overrides, only=split_values(only), impls=split_values(impls)
        )
    except (SuiteError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    if compare_to is not None:
        from attnbench.gate.sides import check_base_path
        from attnbench.results.files import ResultsError

        try:
            check_base_path(compare_to)
        except ResultsError as exc:
            raise click.UsageError(f"--compare-to: {exc}") from None
    if dry_run:
        _print_cases(suite)
        return
    from attnbench.run.folders import RunError

    try:
        summary = _run_with_progress(suite, Path(out_dir), resume, console)
    except RunError as exc:
        raise click.UsageError(str(exc)) from None
    from attnbench.cli.tables import summary_tables

    for table in summary_tables(summary.rows):
        console.print(table)
    console.print(f"results: {summary.run_dir}")
    if summary.interrupted:
        console.print(
            f"[yellow]interrupted[/yellow]: finish with  attnbench run {suite_path} --resume {summary.run_dir}"
        )
        raise SystemExit(130)
    if compare_to is not None:
        _gate(compare_to, summary.run_dir)


def _gate(baseline, run_dir: Path) -> None:
    """Gate the finished run against BASELINE with `attnbench compare`'s defaults; exit as it would."""
    from attnbench.cli.tables import console
    from attnbench.gate.report import gate
    from attnbench.results.files import ResultsError

    try:
        comparison = gate(baseline, run_dir, console=console())
    except ResultsError as exc:
        raise click.UsageError(f"--compare-to: {exc}") from None
    if comparison.exit_code:
        raise SystemExit(comparison.exit_code)


def _run_with_progress(suite, out_dir: Path, resume, console):
    """`run_suite` under a progress bar that names the case being measured."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from attnbench.run.runner import run_suite

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"{suite.name} on {suite.device}", total=None)

        def on_case(index, total, case, row):
            if row is None:
                progress.update(task, total=total, description=case.describe()[:80])
            else:
                progress.advance(task)

        return run_suite(suite, out_dir, resume=resume, on_case=on_case)


def _print_cases(suite) -> None:
    """The expanded cases, one per line, as `--dry-run` prints them."""
    for case in suite.cases:
        note = f"  [unsupported: {case.unsupported}]" if case.unsupported else ""
        click.echo(case.describe() + note)
    click.echo(f"{len(suite.cases)} cases from {suite.path} on {suite.device}")


def split_values(values: tuple[str, ...]) -> tuple[str, ...]:
    """The values of a repeatable option, each of which may also be a comma-separated list."""
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())
