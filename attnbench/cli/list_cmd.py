"""`attnbench list`: every mechanism, its implementations, and whether each runs here (and why not).

Out-of-tree mechanisms list with the built-in ones. A plug-in module that fails to load is one line on stderr
naming it and the error (never a traceback), the mechanisms that did load still list, and the exit code is 2, so a
script or CI job notices the missing mechanism.
"""

from __future__ import annotations

import click

# Each mechanism's causal forms, as the table shows them.
CAUSAL_FORMS = {(False, True): "yes", (False,): "no", (True,): "only"}


@click.command("list")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def list_command(device: str) -> None:
    """List every mechanism and implementation, and whether it is available on this machine.

    Exit code 2 when an out-of-tree mechanism module failed to load (one line each on stderr).
    """
    from attnbench.cli.tables import console
    from attnbench.mechanisms import registry
    from attnbench.run import environment

    try:
        device = environment.pick_device(device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    console().print(_mechanism_table(registry.mechanisms().values(), device))
    errors = registry.load_errors()
    for error in errors:
        click.echo(f"Error: {error}", err=True)
    if errors:
        raise SystemExit(2)


def _mechanism_table(mechanisms, device: str):
    """One row per implementation, grouped by mechanism, with why an implementation cannot run on `device`."""
    from rich.table import Table

    table = Table(title=f"attnbench mechanisms (device: {device})")
    for column in ("mechanism", "complexity", "causal", "parameters", "impl", "needs", "available here"):
        table.add_column(column)
    for mechanism in mechanisms:
        params = ", ".join(f"{name}={spec.default}" for name, spec in mechanism.params.items()) or "-"
        causal = CAUSAL_FORMS.get(tuple(sorted(mechanism.causal)), "?")
        for index, impl in enumerate(mechanism.impls):
            reason = impl.unavailable_reason(device)
            first = index == 0  # the mechanism's own columns are filled on its first row only
            table.add_row(
                mechanism.name if first else "",
                mechanism.complexity if first else "",
                causal if first else "",
                params if first else "",
                impl.name,
                ",".join(impl.needs) or "-",
                "[green]yes[/green]" if reason is None else f"[yellow]no[/yellow]: {reason}",
            )
        table.add_section()
    return table
