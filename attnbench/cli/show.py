"""`attnbench show RUN_DIR`: a run's table."""

from __future__ import annotations

import click


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--all-columns", is_flag=True, help="Show the mechanism parameters and error columns too.")
def show(run_dir: str, all_columns: bool) -> None:
    """Print the table of one run (or every run below a folder)."""
    from attnbench.cli.tables import console, describe_run, rows_table
    from attnbench.results.files import META_FILE, ResultsError, find_runs, read_meta, read_rows

    try:
        runs = find_runs(run_dir)
    except ResultsError as exc:
        raise click.UsageError(str(exc)) from None
    if not runs:
        raise click.UsageError(f"{run_dir}: no attnbench runs found (no {META_FILE} below it)")
    out = console()
    for path in runs:
        try:
            meta = read_meta(path)
        except ResultsError as exc:
            raise click.UsageError(str(exc)) from None
        out.print(describe_run(path, meta))
        out.print(rows_table(read_rows(path), all_columns=all_columns))
