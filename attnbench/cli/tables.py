"""Terminal tables of results: a run's rows, and the summary printed at the end of a sweep."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from attnbench.results.files import STATUSES

STATUS_STYLE = {
    "ok": "green",
    "numerics_fail": "bold red",
    "oom": "magenta",
    "unsupported": "dim",
    "error": "red",
    "timeout": "yellow",
    "crash": "bold red",
}


def console(stderr: bool = False) -> Console:
    """A console that keeps tables readable when output is piped (rich would assume 80 columns)."""
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=180)


def describe_run(run_dir: Path, meta: dict[str, Any]) -> Text:
    """A run's header: folder, status, suite, device, versions, commit and measured ceilings."""
    device, versions, git = (meta.get(key) or {} for key in ("device", "versions", "git"))
    commit = (git.get("commit") or "unknown")[:10] + (" (dirty)" if git.get("dirty") else "")
    ceilings = meta.get("ceilings") or {}
    lines = [
        f"{run_dir}  [{meta.get('status')}]",
        f"suite {meta['suite'].get('name')} on {device.get('name')}; torch {versions.get('torch')}, "
        f"triton {versions.get('triton')}, attnbench {versions.get('attnbench')} @ {commit}",
    ]
    if ceilings:
        lines.append(
            f"measured ceilings: copy {ceilings.get('copy_gbps', 0):.1f} GB/s, "
            f"matmul {ceilings.get('matmul_tflops', 0):.2f} TFLOP/s ({ceilings.get('matmul_dtype')})"
        )
    return Text("\n".join(lines))


def rows_table(rows: list[dict[str, Any]], *, all_columns: bool = False, title: str | None = None) -> Table:
    """One line per row: the case, its status, time, peak memory, rates and error (parameters and reason too
    with `all_columns`)."""
    table = Table(title=title)
    columns = ["mechanism", "impl", "level", "mode", "dtype", "causal", "B", "T", "H", "d", "status"]
    numbers = ["time_ms", "peak_MiB", "tflops", "gbps", "rel_err"]
    for column in [*columns, *numbers]:
        table.add_column(column, justify="right" if column in numbers or column in "BTHd" else "left")
    if all_columns:
        table.add_column("params")
        table.add_column("reason")
    for row in rows:
        label = row["mechanism"] + (f":{row['variant']}" if row.get("variant") else "")
        cells = [label, *[_cell(row.get(c)) for c in columns[1:-1]]]
        cells.append(Text(row["status"], style=STATUS_STYLE.get(row["status"], "")))
        peak = row.get("peak_mem_bytes")
        cells += [
            _number(row.get("time_ms"), "{:.3f}"),
            _number(None if peak is None else peak / 2**20, "{:.1f}"),
            _number(row.get("tflops"), "{:.3g}"),
            _number(row.get("gbps"), "{:.3g}"),
            _number(row.get("rel_err"), "{:.1e}"),
        ]
        if all_columns:
            cells += [_cell(row.get("params")), _cell(row.get("reason"))]
        table.add_row(*cells)
    return table


def summary_tables(rows: list[dict[str, Any]], slowest: int = 5) -> list[Table]:
    """Cases per status, the slowest cases, and every failure with its reason."""
    counts = Counter(row["status"] for row in rows)
    status_table = Table(title="cases per status")
    status_table.add_column("status")
    status_table.add_column("cases", justify="right")
    for status in STATUSES:
        if counts.get(status):
            status_table.add_row(Text(status, style=STATUS_STYLE[status]), str(counts[status]))
    timed = sorted((r for r in rows if r.get("time_ms") is not None), key=lambda r: -r["time_ms"])[:slowest]
    slow_table = rows_table(timed, title=f"slowest {len(timed)} cases")
    failures = [r for r in rows if r["status"] not in ("ok", "unsupported")]
    tables = [status_table, slow_table]
    if failures:
        fail_table = Table(title="failures")
        for column in ("case", "status", "reason"):
            fail_table.add_column(column)
        for row in failures:
            fail_table.add_row(
                _case_label(row), Text(row["status"], style=STATUS_STYLE[row["status"]]), row.get("reason") or ""
            )
        tables.append(fail_table)
    return tables


def _case_label(row: dict[str, Any]) -> str:
    """A failed case named in one line for the failures table."""
    own = ",".join(f"{k}={v}" for k, v in (row.get("params") or {}).items())
    causal = " causal" if row.get("causal") else ""
    return (
        f"{row['mechanism']}[{own}] {row['impl']} {row['level']} {row['mode']} {row['dtype']}{causal} "
        f"B={row['B']} T={row['T']} H={row['H']} d={row['d']}"
    )


def _cell(value: Any) -> str:
    """A value as a table cell (empty for None)."""
    return "" if value is None else str(value)


def _number(value: Any, fmt: str) -> str:
    """A number formatted with `fmt` (empty for None)."""
    return "" if value is None else fmt.format(value)
