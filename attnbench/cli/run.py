"""`attnbench run SUITE`: measure a suite into a new run folder (or finish one with --resume)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click

from attnbench.cli.errors import InputError


@click.command()
@click.argument("suite_path", metavar="SUITE", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out_dir", default="results", show_default=True, help="Folder for the new run folder.")
@click.option("--dry-run", is_flag=True, help="Print the expanded cases and exit; nothing is measured or written.")
@click.option(
    "--only",
    multiple=True,
    help="Mechanisms to keep: NAME or NAME:VARIANT, either optionally followed by [PARAM=VALUE,...] to keep only "
    "the cases with those parameter values (quote it for the shell); repeatable or comma list.",
)
@click.option("--impl", "impls", multiple=True, help="Implementations to keep; repeatable or comma list.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override an axis or key: T=1024,2048.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--devices",
    metavar="all|0,1,3|cpu:N",
    help="One worker per device, cases sharded across them (longest first): every GPU (all), these GPU indexes, "
    "or N CPU worker slots (cpu:N, whose timings share the CPU). Default: one worker.",
)
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="ray: one worker actor per GPU of a Ray cluster (pip install 'attnbench[ray]'); rows come back here.",
)
@click.option("--address", metavar="ADDRESS", help="With --executor ray: the cluster to join (auto: the local one).")
@click.option("--resume", "resume", type=click.Path(file_okay=False), help="Finish the missing cases of this run.")
@click.option(
    "--force",
    is_flag=True,
    help="With --resume: go on even though the suite or its settings changed since the run started (recorded in "
    "its meta.json).",
)
@click.option(
    "--compare-to",
    "compare_to",
    type=click.Path(),
    metavar="BASELINE",
    help="Then gate the run against BASELINE (a baseline file, a folder of baselines or a run folder) with "
    "`attnbench compare`'s defaults; exit 1 on a regression.",
)
def run(
    suite_path, out_dir, dry_run, only, impls, overrides, device, devices, executor, address, resume, force, compare_to
) -> None:
    """Run SUITE (a YAML file) and record time, peak memory and accuracy for every case.

    A new folder `OUT/<suite>-<device>-<time>/` receives meta.json (where and how the run was made) and
    rows.jsonl (one row per case, written as each case ends). Interrupting keeps every finished row;
    `--resume RUN_DIR` measures only the cases missing from it, with the suite and options the run was started
    with (a changed suite is refused unless --force). Exit code 2 for a bad suite, a run that cannot be read or
    written, or a run another process is writing; 130 when interrupted.
    `--compare-to BASELINE` then compares the run with BASELINE and exits as `attnbench compare` does.
    """
    console, suite = _load(suite_path, device, overrides, only, impls)
    if compare_to is not None:
        _check_baseline(compare_to)
    if dry_run:
        _print_cases(suite)
        return
    if force and resume is None:
        raise click.UsageError("--force goes with --resume RUN_DIR (it lets a resume use changed settings)")
    selection = {"device": device, "only": split_values(only), "impls": split_values(impls), "overrides": overrides}
    selection.update(devices=devices, executor=executor, address=address)  # where it runs: not in the fingerprint
    hint = resume_hint(suite_path, selection)
    from attnbench.measure.contention import busy_before_start
    from attnbench.run.runner import stop_signals

    busy = busy_before_start()
    if busy:
        console.print(f"[yellow]busy[/yellow]: {busy}", soft_wrap=True)

    with stop_signals():  # after a first Ctrl-C, more of them must not swallow the command that finishes the run
        summary = _run(suite, Path(out_dir), resume, force, selection, hint, console)
        _print_summary(summary, console)
        if summary.interrupted:
            console.print(f"[yellow]interrupted[/yellow]: finish with  {hint(summary.run_dir)}", soft_wrap=True)
            raise SystemExit(130)
    if compare_to is not None:
        _gate(compare_to, summary.run_dir)


def _load(suite_path, device: str, overrides, only, impls):
    """The stderr console and the suite, expanded for the device; a bad suite or a plug-in that failed to load is
    a usage error (exit 2). The file is checked before torch is imported (to see the device and load the
    mechanisms), so a malformed suite is refused at once."""
    from attnbench.cli.tables import console as make_console
    from attnbench.suite.load import SuiteError, check_suite, load_suite

    try:
        checked = check_suite(suite_path, device=None if device == "auto" else device, overrides=overrides)
        from attnbench.mechanisms import registry
        from attnbench.run import environment

        registry.check_plugins()  # a run must not silently lack a mechanism whose plug-in failed to import
        resolved = environment.pick_device(device)
        suite = load_suite(
            checked, device=resolved, overrides=overrides, only=split_values(only), impls=split_values(impls)
        )
    except (SuiteError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    return make_console(stderr=True), suite


def _run(suite, out_dir: Path, resume, force: bool, selection: dict, hint, console):
    """`run_suite` under a progress bar; its failures as one message and exit code 2 (with the resume command
    when the run stopped part-way)."""
    from attnbench.results.files import ResultsError
    from attnbench.run.folders import RunError, RunStopped

    try:
        return _run_with_progress(suite, out_dir, resume, force, selection, console)
    except RunStopped as exc:
        raise InputError(f"{exc}:\n  {hint(exc.run_dir)}") from None
    except (RunError, ResultsError) as exc:
        raise InputError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted before the run started; nothing was measured", err=True)
        raise SystemExit(130) from None


def _print_summary(summary, console) -> None:
    """Cases per status, the slowest cases, the failures, and where the run is."""
    from attnbench.cli.tables import summary_tables
    from attnbench.measure.contention import noisy_summary

    for table in summary_tables(summary.rows, width=console.width):
        console.print(table)
    noisy = noisy_summary(summary.rows)
    if noisy:
        console.print(f"[yellow]noisy[/yellow]: {noisy}", soft_wrap=True)
    console.print(f"results: {summary.run_dir}", soft_wrap=True)
    if not summary.interrupted:
        run_dir = shlex.quote(str(summary.run_dir))
        console.print("next:", soft_wrap=True)
        for command, what in (
            (f"attnbench show {run_dir}", "every case in a table"),
            (f"attnbench plot {run_dir}", "figures and scaling fits"),
            (f"attnbench report {run_dir} -o report.html", "all of it on one HTML page"),
        ):
            console.print(f"  {command}   # {what}", soft_wrap=True, markup=False, highlight=False)


def resume_hint(suite_path: str, selection: dict):
    """A function of a run folder giving the command that finishes it: this command's suite and options, which
    the run's fingerprint needs to match."""
    options = [] if selection["device"] == "auto" else ["--device", selection["device"]]
    for flag, values in (("--only", selection["only"]), ("--impl", selection["impls"])):
        options += [flag, ",".join(values)] if values else []
    for text in selection["overrides"]:
        options += ["--set", text]
    for flag in ("devices", "executor", "address"):
        options += [f"--{flag}", selection[flag]] if selection.get(flag) not in (None, "local") else []

    def hint(run_dir) -> str:
        return shlex.join(["attnbench", "run", str(suite_path), *options, "--resume", str(run_dir)])

    return hint


def _check_baseline(compare_to) -> None:
    """Refuse a --compare-to baseline that cannot be read, before anything is measured."""
    from attnbench.gate.sides import check_base_path
    from attnbench.results.files import ResultsError

    try:
        check_base_path(compare_to)
    except ResultsError as exc:
        raise click.UsageError(f"--compare-to: {exc}") from None


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


def _run_with_progress(suite, out_dir: Path, resume, force: bool, selection: dict, console):
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
    progress = Progress(*columns, console=console, transient=False)
    task = progress.add_task(f"{suite.name} on {suite.device}", total=None)

    def on_case(index, total, case, row):
        if row is None:
            progress.start()  # shown from the first case on: a refused run prints its one line alone
            progress.update(task, total=total, description=case.describe()[:80])
        else:
            progress.advance(task)

    try:
        where = {name: selection.get(name) for name in ("devices", "address")}
        executor = selection.get("executor") or "local"
        return run_suite(
            suite, out_dir, resume=resume, force=force, selection=selection, on_case=on_case, **where, executor=executor
        )
    finally:
        progress.stop()


def _print_cases(suite) -> None:
    """The expanded cases, one per line, as `--dry-run` prints them."""
    for case in suite.cases:
        note = f"  [unsupported: {case.unsupported}]" if case.unsupported else ""
        click.echo(case.describe() + note)
    click.echo(f"{len(suite.cases)} cases from {suite.path} on {suite.device}")


# A comma separates values of a repeatable option, except inside a bracket: "a,tpa[R_k=1,R_v=1]" is two values.
VALUE_SEPARATOR = re.compile(r",(?![^\[]*\])")


def split_values(values: tuple[str, ...]) -> tuple[str, ...]:
    """The values of a repeatable option, each of which may also be a comma-separated list (commas inside a
    `[PARAM=VALUE,...]` bracket of `--only` do not split)."""
    return tuple(part.strip() for value in values for part in VALUE_SEPARATOR.split(value) if part.strip())
