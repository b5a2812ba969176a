"""The gate's verdicts as an HTML page (`attnbench compare BASE HEAD --html out.html`), for a CI artifact: the
headline, the warnings, both sides, the rule, and every compared case in the report's sortable, filterable table,
failing verdicts first. The numbers are the gate's own (`attnbench.gate.report`), never recomputed here."""

from __future__ import annotations

import os
from pathlib import Path

from attnbench.gate.report import COLUMNS, NUMERIC_COLUMNS, case_cells
from attnbench.gate.settings import FAILING_VERDICTS
from attnbench.gate.verdicts import Comparison
from attnbench.report.cases import CaseTable, Cell
from attnbench.report.render import render
from attnbench.results.files import refuse_results_path

VERDICT_FILTERS = ("verdict", "mechanism", "impl", "mode")


def verdict_table(comparison: Comparison) -> CaseTable:
    """Every compared case, then those on one side only: the gate's cells, numbers sortable as numbers."""
    table = CaseTable(list(COLUMNS), [column in NUMERIC_COLUMNS for column in COLUMNS])
    listed = [*comparison.cases, *comparison.only_base, *comparison.only_head]
    for case in listed:
        row = case.head or case.base or {}
        cells = [Cell(text, _number(text) if column in NUMERIC_COLUMNS else None) for column, text in
                 zip(COLUMNS, case_cells(case), strict=True)]  # fmt: skip
        table.rows.append({
            "cells": cells,
            "filters": {"verdict": case.verdict, "mechanism": str(row.get("mechanism", "")),
                        "impl": str(row.get("impl", "")), "mode": str(row.get("mode", ""))},
            "status": case.verdict,
            "failed": case.verdict in FAILING_VERDICTS,
            "reason": case.note,
            "case_id": case.case_id,
            "label": case.label,
            "repro": "",
        })  # fmt: skip
    table.rows.sort(key=lambda line: not line["failed"])
    for name in VERDICT_FILTERS:
        table.filters[name] = sorted({line["filters"][name] for line in table.rows})
    return table


def _number(text: str) -> float | None:
    """The number a gate cell starts with ("+7.3%" → 7.3, "12/12" → 12), or None."""
    head = text.split("/")[0].split(" ")[0].rstrip("%")
    try:
        return float(head)
    except ValueError:
        return None


def compare_page(comparison: Comparison, out: str | os.PathLike) -> Path:
    """Write the gate's page of `comparison` to `out` (never inside a run folder) and return its path."""
    out = Path(out)
    refuse_results_path(out)
    context = {
        "title": "attnbench gate: " + comparison.headline(),
        "passed": not comparison.failures,
        "headline": comparison.headline(),
        "warnings": comparison.warnings,
        "sides": [("BASE", comparison.base.describe()), ("HEAD", comparison.head.describe())],
        "rule": comparison.settings.describe(),
        "noise": comparison.noise.describe() if comparison.noise is not None else "",
        "counts": sorted(comparison.counts.items()),
        "cases": verdict_table(comparison),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render("compare.html.j2", **context), encoding="utf-8")
    return out
