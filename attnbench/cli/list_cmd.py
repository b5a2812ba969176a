"""`attnbench list`: every mechanism, its implementations, and whether each runs here (and why not)."""

from __future__ import annotations

import click


@click.command("list")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
def list_command(device: str) -> None:
    """List every mechanism and implementation, and whether each is available on this machine."""
    from rich.table import Table

    from attnbench.cli.tables import console
    from attnbench.mechanisms import registry
    from attnbench.run import environment

    try:
        device = environment.pick_device(device)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    table = Table(title=f"attnbench mechanisms (device: {device})")
    for column in ("mechanism", "complexity", "causal", "parameters", "impl", "needs", "available here"):
        table.add_column(column)
    for mechanism in registry.mechanisms().values():
        params = ", ".join(f"{name}={spec.default}" for name, spec in mechanism.params.items()) or "-"
        causal = {(False, True): "yes", (False,): "no", (True,): "only"}.get(tuple(sorted(mechanism.causal)), "?")
        for index, impl in enumerate(mechanism.impls):
            reason = impl.unavailable_reason(device)
            table.add_row(
                mechanism.name if index == 0 else "",
                mechanism.complexity if index == 0 else "",
                causal if index == 0 else "",
                params if index == 0 else "",
                impl.name,
                ",".join(impl.needs) or "-",
                "[green]yes[/green]" if reason is None else f"[yellow]no[/yellow]: {reason}",
            )
        table.add_section()
    console().print(table)
