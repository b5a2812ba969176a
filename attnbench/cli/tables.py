"""Terminal tables of results: a run's rows, and the summary printed at the end of a sweep; and the console they
are printed on, which fits every table to the terminal's width (the gate's too): columns are dropped, named in
the caption, before a number is cut, and text wraps."""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Column, Table
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
    """A console that fits every table it prints to its width (`FittingConsole`), and keeps tables readable when
    output is piped (rich would assume 80 columns): 180 columns then, unless COLUMNS says how wide it is."""
    probe = FittingConsole(stderr=stderr)
    if probe.is_terminal or os.environ.get("COLUMNS", "").strip().isdigit():
        return probe
    return FittingConsole(stderr=stderr, width=180)


class FittingConsole(Console):
    """A rich console that passes every table it prints through `fit_table` first."""

    def print(self, *objects: Any, **options: Any) -> None:
        fitted = [fit_table(item, self.width) if isinstance(item, Table) else item for item in objects]
        super().print(*fitted, **options)


# Columns dropped first when a table is too wide for the terminal, by header: the rates, the parts of a case every
# row of a sweep usually shares, then the gate's q-values, sample counts and intervals. The case's name, T, status,
# time, memory, error, verdict and change are never dropped.
DROP_ORDER = ("gbps", "tflops", "causal", "level", "dtype", "H", "d", "B", "mode", "q", "n", "interval")
MIN_TEXT_WIDTH = 10  # a wrapping text column still gets this many characters
# A cell with no letter but an exponent's e is a number, an interval or a count ("1.2e-07", "[+3.1%, +9.8%]",
# "12/12"): never wrapped or cut.
NUMBER_LIKE = re.compile(r"^[^A-Za-df-z]*$")


def fit_table(table: Table, width: int) -> Table:
    """`table` made to fit `width` characters: columns of numbers never wrap, text folds, and columns are dropped
    in `DROP_ORDER` (named in the caption) while the table would still be too wide."""
    for column in table.columns:
        cells = [str(cell) for cell in column.cells]
        if column.justify == "right" or all(NUMBER_LIKE.match(cell) for cell in cells):
            column.no_wrap = True
        else:
            column.overflow, column.min_width = "fold", min(MIN_TEXT_WIDTH, _longest(column))
    dropped = []
    for header in DROP_ORDER:
        if _needed_width(table) <= width:
            break
        found = [column for column in table.columns if str(column.header) == header]
        if found:
            table.columns.remove(found[0])
            dropped.append(header)
    if dropped:
        note = f"left out to fit {width} columns: {', '.join(dropped)}"
        table.caption = f"{table.caption}; {note}" if table.caption else note
    return table


def _longest(column: Column) -> int:
    """The widest cell of a column, its header included."""
    return max([len(str(column.header)), *(len(str(cell)) for cell in column.cells)])


def _needed_width(table: Table) -> int:
    """The narrowest a table can be printed without cutting a number: numbers at full width, text at
    `MIN_TEXT_WIDTH`, three characters of border and padding per column."""
    widths = [_longest(c) if c.no_wrap else min(_longest(c), MIN_TEXT_WIDTH) for c in table.columns]
    return sum(w + 3 for w in widths) + 1


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


# Columns of the rows table.
KEY_COLUMNS = ("mechanism", "impl", "level", "mode", "dtype", "causal", "B", "T", "H", "d", "status")
NUMBER_COLUMNS = ("time_ms", "peak_MiB", "tflops", "gbps", "rel_err")


def rows_table(
    rows: list[dict[str, Any]], *, all_columns: bool = False, title: str | None = None, width: int | None = None
) -> Table:
    """One line per row: the case, its status, time, peak memory, rates and error (parameters and reason too
    with `all_columns`), fitted to `width` columns when given (`fit_table`)."""
    table = Table(title=title)
    extras = extra_columns(rows)
    columns = [*KEY_COLUMNS, *extras, *NUMBER_COLUMNS, *(("params", "reason") if all_columns else ())]
    for column in columns:
        numeric = column in NUMBER_COLUMNS or column in ("B", "T", "H", "d") or column in extras
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        cells = _row_cells(row, all_columns)
        at = len(KEY_COLUMNS)
        table.add_row(*cells[:at], *[EXTRA_COLUMNS[c](row) for c in extras], *cells[at:])
    return table if width is None else fit_table(table, width)


# Columns shown only when some row has them: a decode step's new tokens and cache, a task cell and its accuracy.
# Without them two decode rows that differ in q_len, or two task cells at one T, would print as identical lines.
EXTRA_COLUMNS = {
    "q_len": lambda row: _cell(row.get("q_len")),
    "cache_KiB": lambda row: _number(None if row.get("cache_bytes") is None else row["cache_bytes"] / 2**10, "{:.1f}"),
    "kv_pairs": lambda row: _cell((row.get("task") or {}).get("kv_pairs")),
    "accuracy": lambda row: _number(row.get("accuracy"), "{:.3f}"),
}


def extra_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The `EXTRA_COLUMNS` that the rows fill: decode columns when a row is a decode step, task columns when a
    row is a task case."""
    decode = any(row.get("mode") == "decode" for row in rows)
    task = any(row.get("task") for row in rows)
    return [*(("q_len", "cache_KiB") if decode else ()), *(("kv_pairs", "accuracy") if task else ())]


def _row_cells(row: dict[str, Any], all_columns: bool) -> list[Any]:
    """A row's cells, in the order of `KEY_COLUMNS`, `NUMBER_COLUMNS`, then params and reason."""
    label = row["mechanism"] + (f":{row['variant']}" if row.get("variant") else "")
    cells: list[Any] = [label, *[_cell(row.get(c)) for c in KEY_COLUMNS[1:-1]]]
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
    return cells


def summary_tables(rows: list[dict[str, Any]], slowest: int = 5, width: int | None = None) -> list[Table]:
    """Cases per status, the slowest cases, and every failure with its reason, fitted to `width` columns."""
    counts = Counter(row["status"] for row in rows)
    status_table = Table(title="cases per status")
    status_table.add_column("status")
    status_table.add_column("cases", justify="right")
    for status in STATUSES:
        if counts.get(status):
            status_table.add_row(Text(status, style=STATUS_STYLE[status]), str(counts[status]))
    timed = sorted((r for r in rows if r.get("time_ms") is not None), key=lambda r: -r["time_ms"])[:slowest]
    slow_table = rows_table(timed, title=f"slowest {len(timed)} cases", width=width)
    failures = [r for r in rows if r["status"] not in ("ok", "unsupported")]
    tables = [status_table, slow_table]
    if failures:
        fail_table = Table(title="failures")
        for column in ("case", "status", "reason"):
            fail_table.add_column(column, overflow="fold", no_wrap=column == "status")
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
