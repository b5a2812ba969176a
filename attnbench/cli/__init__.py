"""The `attnbench` command: a thin click layer over library functions.

Each command parses its options and calls one library function; heavy imports (torch, pandas, matplotlib) happen
inside the commands. User errors (a bad suite, a missing folder, a file that is not a run's) and environment
failures (permissions, a full disk) become a one-line message and exit code 2; exit code 1 is kept for the
regression gate (`attnbench.cli.errors`).
"""

from __future__ import annotations

import signal
import sys

import click

from attnbench import __version__
from attnbench.cli.errors import InputError, os_error_message
from attnbench.results.files import ResultsError


class Commands(click.Group):
    """The command group, with one last guard: an unreadable results file or a failed read or write that a
    command did not report itself still ends in one line and exit code 2, and Ctrl-C in exit code 130 (click
    would say `Aborted!` with exit code 1, the gate's code), never a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ResultsError as exc:
            raise InputError(str(exc)) from None
        except BrokenPipeError:
            raise  # output piped into a command that stopped reading: nothing to report
        except OSError as exc:
            raise InputError(os_error_message(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attnbench")
def cli() -> None:
    """Benchmark attention mechanisms: time, peak memory and accuracy across shapes.

    \b
    attnbench run suites/seqlen.yaml     measure a suite into results/
    attnbench plot results/              figures and fitted scaling exponents
    attnbench report results/            one HTML page: winners, scaling, figures, every case
    attnbench compare BASE HEAD          gate a change against a baseline
    attnbench claims RUN_DIR             papers' claims beside a run's numbers
    attnbench list                       mechanisms and implementations available here
    """


def _register() -> None:
    from attnbench.cli.claims import claims
    from attnbench.cli.compare import baseline, compare
    from attnbench.cli.list_cmd import list_command
    from attnbench.cli.plot import plot
    from attnbench.cli.report import report
    from attnbench.cli.run import run
    from attnbench.cli.show import show

    cli.add_command(run)
    cli.add_command(list_command)
    cli.add_command(show)
    cli.add_command(plot)
    cli.add_command(report)
    cli.add_command(compare)
    cli.add_command(baseline)
    cli.add_command(claims)


_register()


def main() -> None:
    """The `attnbench` program. Once a command ended on Ctrl-C (exit code 130), further Ctrl-C while the
    interpreter shuts down are ignored: the run is marked and its resume command printed, nothing is left to stop."""
    try:
        cli(prog_name="attnbench")
    except SystemExit as exc:
        if exc.code == 130:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise


if __name__ == "__main__":
    sys.exit(main())
