"""The page's case table: one line per row of every run, each cell with its text and a sort key, the values the
filters offer, the failures listed first with their reasons, and each case's reproduce command.

Columns are those every row has, then any numeric field some rows add (a decode row's cache size or step time, a
task row's accuracy), so that rows of kinds this module does not know still show what they measured.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from attnbench.report.repro import ReproError, mechanism_label, only_label, repro_command
from attnbench.results.files import ROW_FIELDS, STATUSES

# What the page lists as failures. Out of memory is where a mechanism hits its wall, which the scaling summary
# reports with the wall's length; it is not a broken case.
FAILED_STATUSES = ("numerics_fail", "error", "crash", "timeout")
KEY_COLUMNS = ("mechanism", "impl", "level", "mode", "dtype", "causal", "B", "T", "H", "d", "status")
# (column, header, scale, format) of the measurements every row may have.
MEASURES = (
    ("time_ms", "time ms", 1.0, "{:.4g}"),
    ("peak_mem_bytes", "peak MiB", 2.0**20, "{:.4g}"),
    ("tflops", "TFLOP/s", 1.0, "{:.3g}"),
    ("gbps", "GB/s", 1.0, "{:.3g}"),
    ("rel_err", "rel err", 1.0, "{:.2g}"),
)
FILTERS = ("mechanism", "impl", "mode", "status")
# Numeric fields of every row that the table leaves to rows.jsonl (sample details, raw counts, bookkeeping). Any
# other numeric field some row has (a decode row's cache size, a task row's accuracy) gets a column of its own.
DETAIL_FIELDS = {
    "schema_version", "G", "D", "time_p20_ms", "time_p80_ms", "first_call_ms", "reps", "calls_per_sample",
    "energy_j", "peak_reserved_bytes", "flops", "bytes", "frac_matmul_peak", "frac_copy_bw", "max_abs_err",
    "numerics_T", "tolerance", "numerics_score", "flops_impl", "impl_matmul_tflops", "wall_s", "device_index",
}  # fmt: skip


@dataclass
class Cell:
    """One table cell: what it shows and what it sorts by (numbers numerically, blanks last)."""

    text: str
    sort: str | float | None = None


@dataclass
class CaseTable:
    """Headers, rows (cells, filter values, reproduce command, reason) and the values each filter offers."""

    headers: list[str]
    numeric: list[bool]
    rows: list[dict[str, Any]] = field(default_factory=list)
    filters: dict[str, list[str]] = field(default_factory=dict)


def extra_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The numeric fields some rows have a value for, besides the case's key, the standard measurements and the
    details (`DETAIL_FIELDS`): the schema's fields in its order, then any other in the order first seen."""
    shown = {*KEY_COLUMNS, *(m[0] for m in MEASURES), *DETAIL_FIELDS}
    found: set[str] = set()
    for row in rows:
        found.update(k for k, v in row.items() if isinstance(v, numbers.Real) and not isinstance(v, bool))
    ordered = [*ROW_FIELDS, *sorted(found - set(ROW_FIELDS))]
    return [key for key in ordered if key in found and key not in shown]


def case_table(runs: Sequence[tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]]) -> CaseTable:
    """The table of every row of `runs` ((label, meta, rows) each): failures first, then in run order."""
    every = [row for _, _, rows in runs for row in rows]
    extras = extra_columns(every)
    several = len(runs) > 1
    headers = [*(["run"] if several else []), *KEY_COLUMNS, *(m[1] for m in MEASURES), *extras]
    numeric = [h in ("B", "T", "H", "d") or h in {m[1] for m in MEASURES} or h in extras for h in headers]
    table = CaseTable(headers, numeric)
    lines = []
    for label, meta, rows in runs:
        for row in rows:
            cells = [*([Cell(label)] if several else []), *_key_cells(row), *_measure_cells(row, extras)]
            lines.append({
                "cells": cells,
                "filters": {"mechanism": mechanism_label(row), "impl": row["impl"], "mode": row["mode"],
                            "status": row["status"]},
                "status": row["status"],
                "failed": is_failure(row),
                "reason": row.get("reason") or "",
                "case_id": row.get("case_id", ""),
                "label": describe(row),
                "repro": _repro(meta, row),
            })  # fmt: skip
    table.rows = sorted(lines, key=lambda line: not line["failed"])
    for name in FILTERS:
        values = {line["filters"][name] for line in lines}
        order = list(STATUSES) if name == "status" else sorted(values)
        table.filters[name] = [v for v in order if v in values]
    return table


def is_failure(row: Mapping[str, Any]) -> bool:
    """A case that failed: a failing status, or a numerics check that did not pass."""
    return row["status"] in FAILED_STATUSES or row.get("numerics_ok") is False


def describe(row: Mapping[str, Any]) -> str:
    """A case in one line: "m:variant[k=2] impl fwd core fp32 causal B=2 T=32 H=4 d=16"."""
    causal = " causal" if row.get("causal") else ""
    shape = " ".join(f"{axis}={row.get(axis)}" for axis in ("B", "T", "H", "d"))
    return f"{only_label(row)} {row['impl']} {row['mode']} {row['level']} {row['dtype']}{causal} {shape}"


def _key_cells(row: Mapping[str, Any]) -> list[Cell]:
    """The cells naming the case, and its status."""
    cells = []
    for column in KEY_COLUMNS:
        value = mechanism_label(row) if column == "mechanism" else row.get(column)
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            cells.append(Cell(str(value), float(value)))
        else:
            cells.append(Cell("" if value is None else str(value)))
    return cells


def _measure_cells(row: Mapping[str, Any], extras: Sequence[str]) -> list[Cell]:
    """The measured values: time, memory, rates, error, then the extra numeric fields."""
    cells = [_number_cell(row.get(column), scale, fmt) for column, _, scale, fmt in MEASURES]
    return cells + [_number_cell(row.get(column), 1.0, "{:.4g}") for column in extras]


def _number_cell(value: Any, scale: float, fmt: str) -> Cell:
    """A number's cell (empty, sorting last, when absent or not finite)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value):
        return Cell("")
    return Cell(fmt.format(value / scale), float(value))


def _repro(meta: Mapping[str, Any], row: Mapping[str, Any]) -> str:
    """The row's reproduce command, or why there is none."""
    try:
        return repro_command(meta, row)
    except ReproError as exc:
        return f"# cannot reproduce: {exc}"
