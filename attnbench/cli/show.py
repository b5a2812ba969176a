"""`attnbench show RUN_DIR`: a run's table."""

from __future__ import annotations

import click

from attnbench.cli.errors import InputError


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--all-columns", is_flag=True, help="Show the mechanism parameters and error columns too.")
def show(run_dir: str, all_columns: bool) -> None:
    """Print the table of one run (or every run below a folder). A file that is not a run's is named, with its
    line and key, and exits with code 2. Nothing is written."""
    from attnbench.cli.tables import console, describe_run, rows_table
    from attnbench.results.files import META_FILE, ResultsError, find_runs, read_meta, read_rows

    try:
        runs = find_runs(run_dir)
        if not runs:
            raise ResultsError(f"{run_dir}: no attnbench runs found (no {META_FILE} below it)")
        read = [(path, read_meta(path), read_rows(path)) for path in runs]
    except ResultsError as exc:
        raise InputError(str(exc)) from None
    out = console()
    for path, meta, rows in read:
        out.print(describe_run(path, meta))
        out.print(rows_table(rows, all_columns=all_columns))
