"""`attnbench claims RUN`: published claims beside a run's measurements, with a verdict for each."""

from __future__ import annotations

from pathlib import Path

import click

from attnbench.cli.errors import InputError


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--claims",
    "claims_file",
    type=click.Path(dir_okay=False),
    help="A claims file (YAML). Default: suites/claims/<the run's suite>.yaml.",
)
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False), help="Also write the table here.")
def claims(run_dir: str, claims_file: str | None, markdown_file: str | None) -> None:
    """Check the claims of a run's suite (or of --claims FILE) against one run, or every run below a folder.

    \b
    Each claim is a paper's ratio of A to B (time or peak memory) at one setting; the table gives the paper's
    number, ours with its interval (a bootstrap of the timing samples; one exact measurement for memory), the
    setting and a verdict: reproduced, not reproduced, or not measured here. A bad claims file or a folder
    without runs is one line and exit code 2.
    """
    from attnbench.analysis.claims import check_runs, markdown
    from attnbench.analysis.rows import AnalysisError
    from attnbench.suite.load import SUITES_DIR

    try:
        outcomes = check_runs(
            run_dir, Path(claims_file) if claims_file else None, claims_dir=_claims_dir(Path("suites"), SUITES_DIR)
        )
    except AnalysisError as exc:
        raise InputError(str(exc)) from None
    _print(outcomes)
    if markdown_file:
        Path(markdown_file).write_text(markdown(outcomes), encoding="utf-8")
        click.echo(f"written: {markdown_file}")


def _claims_dir(*suite_dirs: Path) -> Path:
    """`claims/` under the first suites folder that has one (the working directory's, then attnbench's own)."""
    for folder in suite_dirs:
        if (folder / "claims").is_dir():
            return folder / "claims"
    return suite_dirs[-1] / "claims"


def _print(outcomes) -> None:
    """The outcomes as a terminal table, then each claim's setting once."""
    from rich.table import Table

    from attnbench.analysis.claims import ours_text, paper_range, setting_text
    from attnbench.cli.tables import console

    colour = {"reproduced": "green", "not reproduced": "red", "not measured here": "yellow"}
    table = Table(title="papers' claims beside this run")
    for column in ("claim", "paper says", "paper's ratio", "ours", "setting", "run", "verdict"):
        table.add_column(column, overflow="fold")
    for item in outcomes:
        verdict = f"[{colour[item.verdict]}]{item.verdict}[/]"
        cells = [item.claim.name, item.claim.says, paper_range(item.claim), ours_text(item)]
        table.add_row(*cells, setting_text(item.claim), f"{item.run} ({item.device})", verdict)
    out = console()
    out.print(table)
    for item in outcomes:
        out.print(f"[bold]{item.claim.name}[/] ({item.run}): {item.note}")
    for claim in {item.claim.name: item.claim for item in outcomes}.values():
        out.print(f"[bold]{claim.name}[/]: {claim.paper}. {claim.setting}")
