"""The gate's reports: a terminal table (rich), a markdown summary for a pull request or CI job, a JSON file
with every number; and `gate`, which compares two paths and reports, as `attnbench compare BASE HEAD` does."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnbench.gate.settings import DEFAULT_SETTINGS, FAILING_VERDICTS, GateSettings
from attnbench.gate.stats import Change
from attnbench.gate.verdicts import CaseResult, Comparison, compare_paths

if TYPE_CHECKING:
    from rich.console import Console

COLUMNS = ("verdict", "case", "base ms", "head ms", "change", "interval", "q", "n", "note")
NUMERIC_COLUMNS = ("base ms", "head ms", "change", "q", "n")
VERDICT_STYLE = {
    "numerics_broke": "bold red",
    "broke": "bold red",
    "regressed": "bold red",
    "improved": "green",
    "noisy": "yellow",
    "fixed": "green",
    "failing": "magenta",
    "ignored": "dim",
    "same": "",
    "unsupported": "dim",
}


def _ms(value: float | None) -> str:
    """A median in milliseconds, four significant digits."""
    return "" if value is None else f"{value:.4g}"


def _percent(ratio: float | None) -> str:
    """A ratio as a signed change: 1.073 -> `+7.3%`."""
    return "" if ratio is None else f"{(ratio - 1) * 100:+.1f}%"


def _interval(change: Change | None) -> str:
    """The interval of the ratio as changes (the samples' bootstrap error and the between-run drift), where it
    was computed."""
    if change is None or change.low is None:
        return ""
    return f"[{_percent(change.low)}, {_percent(change.high)}]"


def _p_value(change: Change | None) -> str:
    """The q-value (p adjusted for the number of cases) of the direction the case moved, and the round-level
    p-value in paired A/B runs."""
    if change is None or change.q_slower is None:
        return ""
    text = f"{change.q_slower if change.ratio > 1 else change.q_faster:.1g}"
    if change.p_rounds_slower is not None:
        text += f" (rounds {min(change.p_rounds_slower, change.p_rounds_faster):.2g})"
    return text


def case_cells(case: CaseResult) -> list[str]:
    """One case's cells, in the order of `COLUMNS` (a status where the case has no timing change)."""
    change = case.change
    return [
        case.verdict.replace("_", " "),
        case.label,
        _ms(change.base_ms) if change else (case.base or {}).get("status", ""),
        _ms(change.head_ms) if change else (case.head or {}).get("status", ""),
        _percent(change.ratio) if change else "",
        _interval(change),
        _p_value(change),
        f"{change.n_base}/{change.n_head}" if change else "",
        "; ".join(filter(None, [case.note, _raw(change)])),
    ]


def _raw(change: Change | None) -> str:
    """The change before the shared drift was divided out, where it was (the medians shown are raw)."""
    if change is None or abs(change.raw_ratio - change.ratio) < 1e-12:
        return ""
    return f"raw {_percent(change.raw_ratio)}"


def print_report(comparison: Comparison, console: Console, *, show_all: bool = False) -> None:
    """The terminal report: both sides, warnings, every case that is not `same` (all with `show_all`)."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console.print(Text(f"BASE  {comparison.base.describe()}"))
    console.print(Text(f"HEAD  {comparison.head.describe()}"))
    console.print(Text(f"gate  {comparison.settings.describe()}", style="dim"))
    if comparison.noise is not None:
        console.print(Text(f"noise {comparison.noise.describe()}", style="dim"))
    if comparison.warnings:
        body = "\n".join(f"- {line}" for line in comparison.warnings)
        console.print(Panel(Text(body), title="WARNING: the two sides differ", border_style="bold yellow"))
    shown = comparison.cases if show_all else [c for c in comparison.cases if c.verdict not in ("same", "unsupported")]
    if shown:
        table = Table(title=None if show_all else "cases that are not the same")
        for column in COLUMNS:
            table.add_column(column, justify="right" if column in NUMERIC_COLUMNS else "left")
        for case in shown:
            cells = case_cells(case)
            table.add_row(Text(cells[0], style=VERDICT_STYLE[case.verdict]), *map(Text, cells[1:]))
        console.print(table)
    for what, listed in (("only in BASE", comparison.only_base), ("only in HEAD", comparison.only_head)):
        if listed:
            console.print(f"{len(listed)} case(s) {what}:")
            for case in listed:
                console.print(f"  {case.label}  ({case.note})", markup=False)
    style = "bold red" if comparison.failures else "bold green"
    console.print(Text(comparison.headline(), style=style))


def to_markdown(comparison: Comparison, *, title: str = "attnbench regression gate") -> str:
    """A PR comment or CI job summary: the verdict, warnings, failures and changes, every case folded away."""
    mark = "❌" if comparison.failures else "✅"
    lines = [f"## {mark} {title}: {comparison.headline()}", ""]
    if comparison.warnings:
        lines += ["> [!WARNING]", *[f"> - {_md(line)}" for line in comparison.warnings], ""]
    changed = [case for case in comparison.cases if case.verdict not in ("same", "unsupported", "ignored")]
    if changed:
        lines += [*_md_table(changed), ""]
    else:
        lines += ["No case changed beyond the threshold.", ""]
    lines += ["<details><summary>All compared cases</summary>", "", *_md_table(comparison.cases), "", "</details>", ""]
    for what, listed in (("only in BASE", comparison.only_base), ("only in HEAD", comparison.only_head)):
        if listed:
            lines += [f"<details><summary>{len(listed)} case(s) {what}</summary>", ""]
            lines += [f"- `{case.label}` ({case.note})" for case in listed] + ["", "</details>", ""]
    lines += [
        f"- **BASE** {_md(comparison.base.describe())}",
        f"- **HEAD** {_md(comparison.head.describe())}",
        f"- **gate** {_md(comparison.settings.describe())}",
        *([f"- **noise** {_md(comparison.noise.describe())}"] if comparison.noise is not None else []),
        "",
    ]
    return "\n".join(lines)


def _md_table(cases: Sequence[CaseResult]) -> list[str]:
    """A markdown table of cases, failing verdicts in bold."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for case in cases:
        cells = case_cells(case)
        cells[0] = f"**{cells[0]}**" if case.verdict in FAILING_VERDICTS else cells[0]
        cells[1] = f"`{cells[1]}`"
        lines.append("| " + " | ".join(_md(cell) for cell in cells) + " |")
    return lines


def _md(text: str) -> str:
    """Text safe inside one markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_reports(
    comparison: Comparison, *, markdown: str | os.PathLike | None = None, json_path: str | os.PathLike | None = None
) -> None:
    """Write the markdown and the JSON report where asked (their folders are created)."""
    for path, text in ((markdown, to_markdown), (json_path, _json_text)):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text(comparison))


def _json_text(comparison: Comparison) -> str:
    """The JSON report (`Comparison.to_dict`), indented."""
    return json.dumps(comparison.to_dict(), indent=2, default=str) + "\n"


def report(
    comparison: Comparison,
    *,
    console: Console | None = None,
    markdown: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    show_all: bool = False,
) -> Comparison:
    """Print the terminal report to `console` (if given) and write the markdown and JSON reports."""
    if console is not None:
        print_report(comparison, console, show_all=show_all)
    write_reports(comparison, markdown=markdown, json_path=json_path)
    return comparison


def gate(
    base: str | os.PathLike,
    head: str | os.PathLike,
    settings: GateSettings = DEFAULT_SETTINGS,
    **outputs: Any,
) -> Comparison:
    """`compare_paths`, then `report(comparison, **outputs)`: what `attnbench compare BASE HEAD` does."""
    return report(compare_paths(base, head, settings), **outputs)
