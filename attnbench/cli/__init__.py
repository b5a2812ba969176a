"""The `attnbench` command: a thin click layer over library functions.

Each command parses its options and calls one library function; heavy imports (torch, pandas, matplotlib) happen
inside the commands. User errors (a bad suite, a missing folder) become a one-line message and exit code 2.
"""

from __future__ import annotations

import sys

import click

from attnbench import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attnbench")
def cli() -> None:
    """Benchmark attention mechanisms: time, peak memory and accuracy across shapes.

    \b
    attnbench run suites/seqlen.yaml     measure a suite into results/
    attnbench plot results/              figures and fitted scaling exponents
    attnbench compare BASE HEAD          gate a change against a baseline
    attnbench list                       mechanisms and implementations available here
    """


def _register() -> None:
    from attnbench.cli.compare import baseline, compare
    from attnbench.cli.list_cmd import list_command
    from attnbench.cli.plot import plot
    from attnbench.cli.run import run
    from attnbench.cli.show import show

    cli.add_command(run)
    cli.add_command(list_command)
    cli.add_command(show)
    cli.add_command(plot)
    cli.add_command(compare)
    cli.add_command(baseline)


_register()


def main() -> None:
    cli(prog_name="attnbench")


if __name__ == "__main__":
    sys.exit(main())
