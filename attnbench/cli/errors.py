"""How the commands fail: one line naming what is wrong, and an exit code a script can act on.

Exit codes: 0 done; 1 a gate failure (a regression or a numerics break, from `compare` or `run --compare-to`);
2 bad input or an environment that does not allow the command (a bad suite, a file that is not a run's, a
folder that cannot be written, a full disk, a run that another process is writing); 130 interrupted.
"""

from __future__ import annotations

import click


class InputError(click.ClickException):
    """Bad input or an environment failure: `Error: <message>` on stderr and exit code 2 (1 is the gate's)."""

    exit_code = 2


def os_error_message(exc: OSError) -> str:
    """An `OSError` in one line: the file first, then why (`results/x: Permission denied`)."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"
