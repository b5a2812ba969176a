"""`build_report`: one self-contained HTML page of one or several runs, rendered from the package's Jinja2
templates, with every figure, style and script inline (the page needs no network and no other file).

The page holds, in order: the failures with their reasons, each run's metadata and status counts, who wins at
each T, the scaling summary of `attnbench.analysis`, every figure of `attnbench.plots`, and a table of every row
that sorts by any column, filters by mechanism, implementation, mode and status, and gives each case's
reproduce command.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from attnbench.analysis.runs import RunInfo, load_runs
from attnbench.analysis.series import swept_axes
from attnbench.analysis.summary import summarize
from attnbench.report.cases import case_table, describe, is_failure
from attnbench.report.figures import inline_figures
from attnbench.report.render import markdown_html, render
from attnbench.report.winners import winners_table
from attnbench.results.files import STATUSES, read_meta, read_rows, refuse_results_path


def build_report(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    runs: Sequence[str] = (),
    labels: Mapping[str, str] | None = None,
) -> Path:
    """Write the report page of the runs at or below `paths` to `out` and return its path.

    `runs` keeps runs whose folder name matches a glob; `labels` renames runs (as `attnbench plot --label`).
    Raises `results.files.ResultsError` for a missing or unreadable run or an `out` inside a run folder, and
    `analysis.rows.AnalysisError` when nothing is left to report.
    """
    out = Path(out)
    refuse_results_path(out)  # the page never goes inside a run folder, which only the runner writes
    infos, frame = load_runs(paths, runs=runs, labels=labels)
    raw = [(info.label, read_meta(info.path), read_rows(info.path)) for info in infos]
    axes = swept_axes(frame)
    summary = summarize(frame, infos, axes) if axes else None
    figures, figure_notes = inline_figures(frame, infos, axes)
    metric_titles, winners = winners_table(frame)
    context = {
        "title": "attnbench report: " + ", ".join(info.label for info in infos),
        "runs": [run_metadata(info, meta, rows) for info, (_, meta, rows) in zip(infos, raw, strict=True)],
        "failures": failures(raw),
        "metric_titles": metric_titles,
        "winners": winners,
        "several_runs": len(infos) > 1,
        "summary_html": markdown_html(summary.markdown) if summary is not None else "",
        "figures": figures,
        "figure_notes": figure_notes,
        "cases": case_table(raw),
        "total_rows": sum(len(rows) for _, _, rows in raw),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render("report.html.j2", **context), encoding="utf-8")
    return out


def run_metadata(info: RunInfo, meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What the page says about one run: where and how it ran, and its cases per status."""
    device, versions, git = (meta.get(key) or {} for key in ("device", "versions", "git"))
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    counts = Counter(row["status"] for row in rows)
    ceilings = meta.get("ceilings") or {}
    facts = {
        "folder": str(info.path),
        "suite": f"{info.suite} ({(meta.get('suite') or {}).get('path', '?')})",
        "status": meta.get("status") or "?",
        "device": device.get("name") or info.device,
        "driver": " / ".join(str(device[k]) for k in ("driver", "cuda") if device.get(k)) or "none",
        "versions": ", ".join(f"{name} {version}" for name, version in versions.items()),
        "commit": commit,
        "timer": ", ".join(f"{k} {v}" for k, v in (meta.get("timer") or {}).items()),
        "ceilings": ceiling_text(ceilings) or "not measured",
        "started / finished": f"{meta.get('started_at') or '?'} / {meta.get('finished_at') or '?'}",
        "command": meta.get("command") or "",
    }
    noisy = sum(1 for row in rows if row.get("noisy"))
    if noisy:
        timed = sum(1 for row in rows if row.get("time_ms") is not None)
        facts["noisy timings"] = f"{noisy} of {timed} timed rows ran on a busy machine (the rows' noisy field says why)"
    return {
        "label": info.label,
        "facts": facts,
        "counts": [(status, counts[status]) for status in STATUSES if counts.get(status)],
        "rows": len(rows),
    }


def ceiling_text(ceilings: Mapping[str, Any]) -> str:
    """The measured ceilings in words: "copy 12.3 GB/s, matmul 0.38 TFLOP/s (fp32)"."""
    parts = []
    if ceilings.get("copy_gbps"):
        parts.append(f"copy {ceilings['copy_gbps']:.4g} GB/s")
    if ceilings.get("matmul_tflops"):
        parts.append(f"matmul {ceilings['matmul_tflops']:.3g} TFLOP/s ({ceilings.get('matmul_dtype', '?')})")
    return ", ".join(parts)


def failures(raw: Sequence[tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]]) -> list[dict[str, str]]:
    """Every failed case (a failing status or failed numerics) with its run, status and reason."""
    found = []
    for label, _, rows in raw:
        for row in rows:
            if is_failure(row):
                reason = row.get("reason") or ("numerics check failed" if row.get("numerics_ok") is False else "")
                found.append({"run": label, "case": describe(row), "status": row["status"], "reason": reason})
    return found
