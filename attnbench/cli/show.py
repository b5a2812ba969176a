"""`attnbench show RUN_DIR`: a run's table; `attnbench show RUN_DIR --repro CASE`: the command that re-runs one of
its cases, checked to select exactly that case before it is printed."""

from __future__ import annotations

import click

from attnbench.cli.errors import InputError


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--all-columns", is_flag=True, help="Show the mechanism parameters and error columns too.")
@click.option(
    "--repro",
    "case",
    metavar="CASE",
    help="Print the command that re-runs this case (its case_id, or a unique prefix of it) and nothing else.",
)
def show(run_dir: str, all_columns: bool, case: str | None) -> None:
    """Print the table of one run (or every run below a folder). A file that is not a run's is named, with its
    line and key, and exits with code 2. Nothing is written.

    With --repro CASE, print only the command that re-runs that one case into a new run folder: the run's suite
    file and options, narrowed with --only, --impl and --set to the case, after checking that the suite as it
    is now still expands to exactly that case (exit 2 when it does not, saying why).
    """
    from attnbench.cli.tables import console, describe_run, rows_table
    from attnbench.results.files import META_FILE, ResultsError, find_runs, read_meta, read_rows

    try:
        runs = find_runs(run_dir)
        if not runs:
            raise ResultsError(f"{run_dir}: no attnbench runs found (no {META_FILE} below it)")
        read = [(path, read_meta(path), read_rows(path)) for path in runs]
    except ResultsError as exc:
        raise InputError(str(exc)) from None
    if case is not None:
        click.echo(_repro(read, case))
        return
    out = console()
    for path, meta, rows in read:
        out.print(describe_run(path, meta))
        out.print(rows_table(rows, all_columns=all_columns, width=out.width))


def _repro(read, wanted: str) -> str:
    """The checked command that re-runs the case `wanted` (a case_id or a unique prefix) of the runs `read`."""
    from attnbench.report.repro import ReproError, repro_arguments, repro_command

    found = [(meta, row) for _, meta, rows in read for row in rows if str(row.get("case_id", "")).startswith(wanted)]
    ids = sorted({row["case_id"] for _, row in found})
    if not ids:
        raise InputError(f"--repro {wanted}: no case with this id in {', '.join(str(p) for p, _, _ in read)}")
    if len(ids) > 1:
        raise InputError(f"--repro {wanted}: the prefix matches {len(ids)} cases ({', '.join(ids[:5])}); give more")
    meta, row = found[-1]
    try:
        arguments = repro_arguments(meta, row)
    except ReproError as exc:
        raise InputError(f"--repro {wanted}: {exc}") from None
    _check_selects_one(arguments, row, (meta.get("suite") or {}).get("resolved") or {})
    return repro_command(meta, row)


def _check_selects_one(arguments: dict, row: dict, resolved: dict) -> None:
    """Expand the suite with the command's options, as `attnbench run` would, and refuse unless that gives
    exactly the row's case with the run's timing and limits (`resolved`: the run's suite as it resolved it;
    the suite file may have moved or changed, or sweep a parameter no option pins)."""
    from attnbench.report.repro import SETTINGS_SECTIONS
    from attnbench.suite.load import SuiteError, load_suite

    where = f"--repro {row['case_id']}"
    try:
        suite = load_suite(
            arguments["suite"],
            device=arguments["device"],
            overrides=arguments["overrides"],
            only=arguments["only"],
            impls=arguments["impls"],
        )
    except (SuiteError, ValueError, OSError) as exc:
        raise InputError(f"{where}: the run's suite cannot select this case any more: {exc}") from None
    changed = [key for key in SETTINGS_SECTIONS if suite.resolved.get(key) != resolved.get(key)]
    if changed:
        raise InputError(
            f"{where}: with these options {arguments['suite']} would measure with other {' and '.join(changed)} "
            "settings than the run did (the suite changed since the run)"
        )
    ids = [case.case_id for case in suite.cases]
    if ids != [row["case_id"]]:
        found = "not among them" if row["case_id"] not in ids else "among others"
        raise InputError(
            f"{where}: {arguments['suite']} as it is now expands to {len(ids)} case(s) with these options, this "
            f"case {found} (the suite changed since the run, or it sweeps something these options do not pin)"
        )
