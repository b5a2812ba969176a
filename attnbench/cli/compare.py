"""`attnbench compare BASE HEAD` (the regression gate), `attnbench compare --ab REF_A REF_B SUITE` (two revisions
interleaved on one device, then gated) and `attnbench baseline save RUN_DIR` (store a run as the baseline)."""

from __future__ import annotations

import click

from attnbench.cli.run import split_values


@click.command()
@click.argument("paths", nargs=-1, metavar="BASE HEAD | --ab REF_A REF_B SUITE")
@click.option("--threshold", type=float, default=0.05, show_default=True, help="Relative slowdown that counts.")
@click.option("--floor-us", type=float, default=1.0, show_default=True, help="Absolute slowdown that counts (µs).")
@click.option("--alpha", type=float, default=0.01, show_default=True, help="False discovery rate over the cases.")
@click.option("--confidence", type=float, default=0.95, show_default=True, help="Of the interval of each change.")
@click.option(
    "--normalize",
    type=click.Choice(["auto", "median", "controls", "none"]),
    default="auto",
    show_default=True,
    help="Divide out the drift every case shares: by the median change (auto: with 20+ timed cases), "
    "by the control cases' median, or not at all.",
)
@click.option("--control", "controls", multiple=True, metavar="PATTERN", help="Control case (id or label pattern).")
@click.option(
    "--drift",
    type=float,
    default=0.0,
    show_default=True,
    help="Between-run drift of one case on this runner (relative sd, 0.01 = 1%): docs/METHODOLOGY.md.",
)
@click.option("--max-regressions", type=int, default=0, show_default=True, help="Regressed cases tolerated.")
@click.option("--ignore", multiple=True, metavar="PATTERN", help="Noisy case (id or label pattern); repeatable.")
@click.option("--ignore-file", type=click.Path(dir_okay=False), help="File of such patterns, one per line.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), help="Write a markdown report here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write a JSON report here.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Write the verdicts as one self-contained HTML page here (a CI artifact).",
)
@click.option("--all", "show_all", is_flag=True, help="List every case, not only those that changed.")
@click.option("--ab", is_flag=True, help="Run SUITE with REF_A's and REF_B's mechanisms interleaved, then compare.")
@click.option("--rounds", type=int, default=8, show_default=True, help="--ab: rounds per case and side.")
@click.option("--repo", default=".", show_default=True, help="--ab: the git repository REF_A and REF_B name.")
@click.option("-o", "--out", "out_dir", default="results", show_default=True, help="--ab: folder for the runs.")
@click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, help="--ab: device."
)
@click.option("--only", multiple=True, help="--ab: mechanisms to keep (as `attnbench run --only`).")
@click.option("--impl", "impls", multiple=True, help="--ab: implementations to keep.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="--ab: override a suite key.")
def compare(
    paths,
    markdown_path,
    json_path,
    html_path,
    show_all,
    ab,
    rounds,
    repo,
    out_dir,
    device,
    only,
    impls,
    overrides,
    ignore_file,
    **gate_options,
) -> None:
    """Gate HEAD against BASE: exit 1 when a case got slower beyond threshold and noise, or broke.

    BASE and HEAD are run folders or baseline files (BASE may also be a folder of baselines: the one stored
    for HEAD's suite and device is used). Cases are joined on their full key; a case regressed when its median
    is slower by more than --threshold and --floor-us and the difference is beyond the noise of the timing
    samples and of the runner's between-run drift (a one-sided z-test of the log median ratio against the
    samples' bootstrap error and the drift, Benjamini–Hochberg over the cases at false discovery rate --alpha;
    in A/B runs also a one-sided Wilcoxon signed-rank test over the paired rounds at --alpha). A drift shared by
    every case is divided out first (--normalize, --control).
    A case whose numerics passed in BASE and fail in HEAD, or that ran in BASE and fails in HEAD, always fails.

    With --ab, REF_A and REF_B are git revisions (or folders holding attnbench/): their mechanisms run case by
    case, interleaved, in one job on this device; then B is gated against A. docs/REGRESSION.md has the details.

    Exit code 0 clean, 1 regression, 2 bad input.
    """
    from attnbench.cli.errors import InputError, os_error_message
    from attnbench.cli.tables import console
    from attnbench.gate.report import gate, report
    from attnbench.results.files import ResultsError
    from attnbench.run.folders import RunError
    from attnbench.suite.load import SuiteError

    expected = ("REF_A REF_B SUITE", 3) if ab else ("BASE HEAD", 2)
    if len(paths) != expected[1]:
        raise click.UsageError(f"expected {expected[0]}, got {len(paths)} argument(s): {' '.join(paths)}")
    outputs = {"console": console(), "markdown": markdown_path, "json_path": json_path, "show_all": show_all}
    try:
        settings = _settings(gate_options, ignore_file, markdown_path, json_path, html_path)
        if ab:
            ab_options = {"repo": repo, "out_dir": out_dir, "rounds": rounds, "overrides": overrides}
            comparison = report(_run_ab(paths, settings, device, only, impls, **ab_options), **outputs)
        else:
            comparison = gate(*paths, settings, **outputs)
        _write_html(comparison, html_path)
    except (ResultsError, RunError, SuiteError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:  # a report that cannot be written: bad input (exit 2), never a gate failure (exit 1)
        raise InputError(os_error_message(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: the A/B runs are marked interrupted and kept", err=True)
        raise SystemExit(130) from None
    raise SystemExit(comparison.exit_code)


def _write_html(comparison, html_path) -> None:
    """`--html`: the verdicts as one self-contained page (as `attnbench report` draws runs)."""
    if html_path is not None:
        from attnbench.report.gate_page import compare_page

        click.echo(f"html: {compare_page(comparison, html_path)}")


def _settings(gate_options, ignore_file, *report_paths):
    """The gate's settings from the options and the ignore file; the report paths checked before anything runs."""
    from attnbench.gate.settings import GateSettings
    from attnbench.gate.sides import read_ignore_file

    ignored = read_ignore_file(ignore_file) if ignore_file else ()
    settings = GateSettings(**{**gate_options, "ignore": (*gate_options["ignore"], *ignored)})
    refuse_inside_runs(*report_paths)
    return settings


def refuse_inside_runs(*paths) -> None:
    """Refuse (`ResultsError`) a report path inside a run folder or over a run's files: a report must never
    change the results it reports on."""
    from attnbench.results.files import refuse_results_path

    for path in paths:
        if path is not None:
            refuse_results_path(path)


def _run_ab(paths, settings, device: str, only, impls, **options):
    """`--ab`: run the suite with both revisions' mechanisms interleaved on the chosen device, then compare."""
    from attnbench.run import environment
    from attnbench.run.ab import ab_compare

    return ab_compare(
        *paths,
        device=environment.pick_device(device),
        only=split_values(only),
        impls=split_values(impls),
        settings=settings,
        on_case=_progress,
        **options,
    )


def _progress(index, total, case, row) -> None:
    """One line on stderr as each A/B case starts."""
    if row is None:
        click.echo(f"[{index + 1}/{total}] {case.describe()}", err=True)


@click.group()
def baseline() -> None:
    """Stored baselines: one compact file per suite and device under results/baselines/."""


@baseline.command("save")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("-o", "--out", "out_dir", default="results/baselines", show_default=True, help="Baselines folder.")
@click.option("--max-samples", type=int, default=200, show_default=True, help="Timing samples kept per case.")
@click.option("--allow-incomplete", is_flag=True, help="Save an interrupted run too.")
def save(run_dir, out_dir, max_samples, allow_incomplete) -> None:
    """Store RUN_DIR as the baseline of its suite and device: OUT/<suite>-<device>.json.

    The file keeps the run's meta (device, versions, timer settings, commit) and per case its status, numerics
    verdict, median, p20/p80 and up to --max-samples timing samples (evenly spaced order statistics). It
    replaces the previous baseline of that suite and device; commit it to keep the history.
    """
    from attnbench.results.baseline import save_baseline
    from attnbench.results.files import ResultsError

    try:
        path = save_baseline(run_dir, out_dir, max_samples=max_samples, allow_incomplete=allow_incomplete)
    except ResultsError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"baseline: {path}")
